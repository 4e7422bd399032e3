"""Quality benchmark: GPT heads (pretrained here on the shared corpora) vs TF-IDF + LR.

Fixed stratified splits, several seeds (mean and spread), one table:

- Financial PhraseBank 50Agree and AllAgree (sentiment), stratified 80/10/10 per seed;
- AG News (topic), 70/10/20 of its test file (train/validation/test), stratified;
- Reuters-21578 ModApte, docs whose first topic is one of the 10 most frequent (topic):
  ModApte train/test, validation carved from train.

The backbone is pretrained once per run on the shared corpora (Reuters, BBC, CNBC, Guardian,
gold news, MIND titles) minus every text in a benchmark test split, then fine-tuned per dataset
and seed; the baseline is trained on the same split in the same run. Writes
``bench/results/quality.json``.

    python bench/quality.py --data-dir ../shared/data --seeds 0 1 2 --pretrain-minutes 10
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from sources import datasets as ds  # noqa: E402
from warehouse.training_data import assign_splits  # noqa: E402

console = Console(width=160)


def _id(text: str) -> str:
    return hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest()[:32]


def _frame(texts: list[str], labels: list[str], head: str, given: list[str | None] | None = None) -> pd.DataFrame:
    df = pd.DataFrame({"text": texts, head: labels})
    df["article_id"] = df.text.map(_id)
    df["given_split"] = given if given is not None else None
    df["dataset"] = "bench"
    df = df.drop_duplicates("article_id").reset_index(drop=True)  # one text, one split
    other = "topic" if head == "sentiment" else "sentiment"
    df[other] = None
    return df


def load_benchmarks(data_dir: Path) -> dict[str, tuple[str, pd.DataFrame, float]]:
    """name -> (head, examples without split, test fraction)."""
    out = {}
    for name, file in (("phrasebank_50agree", "Sentences_50Agree.txt"), ("phrasebank_allagree", "Sentences_AllAgree.txt")):
        f = ds.read_phrasebank(data_dir / "financial_phrasebank" / file)
        f = f[f.error.isna()]
        out[name] = ("sentiment", _frame(f.body.tolist(), f.label.tolist(), "sentiment"), 0.1)
    ag = ds.read_ag_news(data_dir / "ag_news" / "test.csv")
    out["ag_news"] = ("topic", _frame((ag.title.fillna("") + " " + ag.body.fillna("")).tolist(), ag.label.tolist(), "topic"), 0.2)
    rt = pd.concat([ds.read_reuters(p) for p in sorted((data_dir / "reuters21578").glob("reut2-*.sgm"))])
    rt = rt[rt.split.isin(["train", "test"]) & rt.label.notna()].copy()
    rt["first"] = rt.label.str.split("|").str[0]
    top = rt[rt.split == "train"]["first"].value_counts().head(10).index
    rt = rt[rt["first"].isin(top)]
    text = (rt.title.fillna("") + " " + rt.body.fillna("")).str.strip()
    out["reuters_top10"] = ("topic", _frame(text.tolist(), rt["first"].tolist(), "topic", rt.split.tolist()), 0.0)
    return out


def split(df: pd.DataFrame, seed: int, test_frac: float) -> pd.DataFrame:
    """The benchmark's fixed split for a seed (hash-ordered, stratified per label)."""
    df = df.copy()
    df["split"] = assign_splits(df, seed, 0.1, test_frac if test_frac else 0.1)
    return df


def pretraining_corpus(data_dir: Path, exclude: set[str]) -> list[str]:
    """Texts of the shared corpora, minus any text that sits in a benchmark test split."""
    texts: list[str] = []
    for p in sorted((data_dir / "reuters21578").glob("reut2-*.sgm")):
        f = ds.read_reuters(p)
        texts += (f.title.fillna("") + " " + f.body.fillna("")).str.strip().tolist()
    for folder in sorted((data_dir / "bbc_news" / "bbc").glob("*/")):
        f = ds.read_bbc(folder)
        texts += (f.title.fillna("") + " " + f.body.fillna("")).tolist()
    for reader, path in ((ds.read_cnbc, "financial_news_headlines/cnbc_headlines.csv"),
                         (ds.read_guardian, "financial_news_headlines/guardian_headlines.csv"),
                         (ds.read_gold_news, "gold_commodity_news/gold-dataset-sinha-khandait.csv")):
        f = reader(data_dir / path)
        texts += (f.title.fillna("") + " " + f.body.fillna("")).str.strip().tolist()
    texts += ds.read_mind_titles_folder(data_dir / "mind_small_titles").title.dropna().tolist()
    return [t for t in texts if t and _id(t) not in exclude]


def main() -> None:
    """Pretrain once, then fine-tune and evaluate every benchmark and seed; print the table."""
    from models.backbone import build_backbone
    from models.experiment import run_experiment
    from models.pretrain import PretrainConfig, pretrain
    from models.tokenizer import train_tokenizer
    from models.train import TrainConfig

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("NEWSPULSE_DATA_DIR", "../shared/data")))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--benchmarks", nargs="+", default=None)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--pretrain-minutes", type=float, default=10.0, help="time cap for pretraining")
    ap.add_argument("--pretrain-steps", type=int, default=10**7, help="step cap for pretraining")
    ap.add_argument("--finetune-minutes", type=float, default=3.0)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--base", default=None, help="reuse a pretrained checkpoint dir (skip pretraining)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="np-quality-"))
    benches = load_benchmarks(args.data_dir)
    if args.benchmarks:
        benches = {k: v for k, v in benches.items() if k in args.benchmarks}

    pre = None
    if args.base:
        base = args.base
        console.print(f"reusing pretrained backbone {base}")
    else:
        exclude = {aid for _, (_, df, tf) in benches.items() for seed in args.seeds
                   for aid in split(df, seed, tf).query("split == 'test'").article_id}
        corpus = pretraining_corpus(args.data_dir, exclude)
        console.print(f"pretraining corpus: {len(corpus):,} texts (test texts excluded: {len(exclude):,})")
        rng = np.random.default_rng(0)
        order = rng.permutation(len(corpus))
        corpus = [corpus[i] for i in order]
        n_val = max(50, len(corpus) // 100)
        tok = train_tokenizer(corpus[n_val:], work / "pretrain" / "tokenizer", vocab_size=args.vocab_size)
        lm = build_backbone(args.preset, tok)
        t0 = time.perf_counter()
        pre = pretrain(lm, tok, corpus[n_val:], corpus[:n_val],
                       PretrainConfig(max_steps=args.pretrain_steps, time_budget_s=args.pretrain_minutes * 60, eval_every=200),
                       work / "pretrain" / "checkpoint")
        console.print(f"pretrained {pre.steps} steps in {time.perf_counter() - t0:.0f} s: val ppl {pre.val_perplexity:.1f}, "
                      f"{pre.tokens_per_s:.0f} tok/s, {pre.tokens_seen:,} tokens")
        base = str(work / "pretrain" / "checkpoint" / "model")

    rows = []
    for name, (head, df, test_frac) in benches.items():
        for seed in args.seeds:
            data = split(df, seed, test_frac)
            path = work / name / f"seed{seed}" / "examples.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            data.to_parquet(path, index=False)
            t = time.perf_counter()
            info = run_experiment(path, path.parent, base=base, progress=False,
                                  config=TrainConfig(epochs=args.epochs, seed=seed, time_budget_s=args.finetune_minutes * 60))
            seconds = time.perf_counter() - t
            test = info["metrics"][head]["test"]
            for model in ("gpt", "baseline", "ensemble"):
                rows.append({"benchmark": name, "seed": seed, "model": model, "accuracy": test[model]["accuracy"],
                             "macro_f1": test[model]["macro_f1"], "ece": test[model]["ece"],
                             "train_s": info["training"]["time_s"] if model == "gpt" else None, "wall_s": seconds,
                             "n_test": test[model]["n"]})
            console.print(f"{name} seed {seed}: " + ", ".join(
                f"{m} F1 {test[m]['macro_f1']:.3f}" for m in ("gpt", "baseline", "ensemble")))

    res = pd.DataFrame(rows)
    table = Table(title=f"Test scores, mean ± sd over seeds {args.seeds} ({args.preset} preset, "
                        f"{args.pretrain_minutes:g} min pretraining, 2 CPU cores)")
    for col in ("benchmark", "model", "accuracy", "macro-F1", "ECE", "fine-tune s", "n test"):
        table.add_column(col, justify="right" if col not in ("benchmark", "model") else "left")
    for (bench, model), g in res.groupby(["benchmark", "model"], sort=False):
        table.add_row(bench, model, f"{g.accuracy.mean():.3f} ± {g.accuracy.std(ddof=0):.3f}",
                      f"{g.macro_f1.mean():.3f} ± {g.macro_f1.std(ddof=0):.3f}", f"{g.ece.mean():.3f}",
                      f"{g.train_s.mean():.0f}" if g.train_s.notna().any() else "", f"{int(g.n_test.mean())}")
    console.print(table)
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    (out / "quality.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                  "pretrain": {k: v for k, v in pre.__dict__.items() if k != "history"} if pre else args.base,
                                                  "rows": rows}, indent=2, default=str))


if __name__ == "__main__":
    main()
