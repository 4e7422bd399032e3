"""Active learning on PhraseBank 50Agree: which texts to label next (issue 17 item 4).

Start from 100 labelled sentences, add 100 per round up to 800; after each round train the model
the fine-tune flow trains on CPU (the frozen recipe: SmolLM2-135M, PROMPT, layers -1/-9/-16
pooled mean+last, bf16; a logistic head by :func:`models.frozen.fit_head`, C on the ``tune`` half
of validation) and score macro-F1 on a fixed held-out test split. Strategies pick the next 100
from the unlabelled pool with the product's own functions (:mod:`models.active`, which the
monitor's relabel queue uses):

* ``random``: 100 at random;
* ``margin``: the smallest top-2 margin of the GPT head (:func:`margin_uncertainty`);
* ``entropy``: the highest normalised entropy of the GPT head;
* ``disagreement``: the largest total variation between the GPT head and the TF-IDF baseline
  (:class:`models.baseline.TfidfLogReg`, refitted on the same labels each round);
* ``committee``: the highest entropy of the GPT head and the baseline averaged
  (:func:`committee_entropy`): **the chosen strategy, what the relabel queue ranks by**;
* ``entropy_balanced`` (round-robin over predicted classes), ``entropy_diverse`` /
  ``margin_diverse`` (one per k-means cluster of the 300 least sure): variants tried on the way;

the others with near-duplicates collapsed (:func:`select_batch`, Jaccard 0.8) as the queue does. Seeds 0/1/2
change the 100 starting labels (the same for every strategy within a seed) and random's draws;
the split (seed 0 of ``bench/quality_data.split``: 80/10/10 stratified) is fixed. The features of
the whole pool are computed once (cached under ``var/bench/``) and each round only refits heads.

Target: the chosen strategy reaches random's 800-label macro-F1 (mean over seeds) with at most
400 labels.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script (python bench/x.py): the repository on the path
    sys.path.insert(0, str(ROOT))

from models import active  # noqa: E402

STRATEGIES = ("random", "margin", "entropy", "disagreement", "committee", "entropy_balanced", "entropy_diverse",
              "margin_diverse")
CHOSEN = "committee"  # the relabel queue's ranking (models/active.build_queue)
DEFAULT_OUT = ROOT / "bench" / "results" / "active_learning.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("NEWSPULSE_DATA_DIR", ROOT.parent / "shared" / "data")))
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--max-length", type=int, default=128, help="text tokens (the fine-tune default)")
    ap.add_argument("--start", type=int, default=100)
    ap.add_argument("--step", type=int, default=100)
    ap.add_argument("--end", type=int, default=800)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--quick", action="store_true", help="600 sentences, 2 rounds of 50, seed 0: a smoke run")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--report-only", type=Path, help="reprint the table of a results JSON")
    return ap.parse_args(argv)


def load_split(data_dir: Path, quick: bool):
    """PhraseBank 50Agree in the product's layout, split (seed 0) and cut into train/tune/select/test."""
    from bench.quality_data import Benchmark, _frame, product_parts, split, subsample
    from sources import datasets as ds

    f = ds.read_phrasebank(data_dir / "financial_phrasebank" / "Sentences_50Agree.txt")
    f = f[f.error.isna()]
    bench = Benchmark("phrasebank_50agree", "sentiment", _frame(f.body.tolist(), f.label.tolist(), "sentiment"), 0.1)
    if quick:
        bench = subsample(bench, 600)
    df = split(bench, 0)
    return df, product_parts(df)


def features(texts: list[str], args: argparse.Namespace) -> tuple[np.ndarray, dict]:
    """Frozen-recipe features of ``texts`` (cached by backbone, length and text hash)."""
    import torch

    from bench.quality_contenders import load_frozen_model
    from models.catalogue import resolve
    from models.frozen import extract_features
    from models.multihead import PROMPT
    from models.precision import cpu_precision

    torch.set_num_threads(max(1, args.threads))
    precision = cpu_precision(ROOT / "var" / "machine" / "precision.json").precision
    base_dir = resolve(args.backbone, store=ROOT / "var" / "backbones").ref
    key = hashlib.sha256(json.dumps([str(base_dir), args.max_length, precision, PROMPT,
                                     hashlib.sha256("\n".join(texts).encode()).hexdigest()]).encode()).hexdigest()[:16]
    cache = ROOT / "var" / "bench" / f"active_learning_features_{key}.npy"
    info = {"backbone": str(base_dir), "max_length": args.max_length, "precision": precision, "cache": str(cache),
            "texts": len(texts)}
    if cache.is_file():
        x = np.load(cache, allow_pickle=False)
        if x.shape[0] == len(texts):
            return x, {**info, "cached": True, "seconds": 0.0}
    model, tok = load_frozen_model(base_dir, PROMPT)
    t0 = time.perf_counter()
    parts, tokens = [], 0
    for start in range(0, len(texts), 512):
        f, n = extract_features(model, tok, texts[start:start + 512], max_length=args.max_length, precision=precision)
        parts.append(f)
        tokens += n
        print(f"  features {min(start + 512, len(texts))}/{len(texts)} ({time.perf_counter() - t0:.0f} s)", flush=True)
    x = np.concatenate(parts).astype(np.float32)
    seconds = time.perf_counter() - t0
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, x, allow_pickle=False)
    return x, {**info, "cached": False, "seconds": round(seconds, 1), "tokens": tokens,
               "tokens_per_s": round(tokens / max(seconds, 1e-9)), "pool_layers": list(model.heads.pool_layers)}


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


_PCA: dict[int, np.ndarray] = {}


def _pca(x: np.ndarray, dims: int = 64) -> np.ndarray:
    """Standardised features projected on their first ``dims`` principal components (for k-means)."""
    if id(x) not in _PCA:
        from sklearn.decomposition import PCA

        z = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
        _PCA[id(x)] = PCA(n_components=min(dims, *z.shape), random_state=0).fit_transform(z)
    return _PCA[id(x)]


def run_strategy(strategy: str, seed: int, x: np.ndarray, y: np.ndarray, texts: np.ndarray, pool: np.ndarray,
                 tune: np.ndarray, test: np.ndarray, start: np.ndarray, sizes: list[int]) -> list[dict]:
    """One learning curve: macro-F1 on test after each round of ``strategy``."""
    from sklearn.metrics import accuracy_score, f1_score

    from models.baseline import TfidfLogReg
    from models.frozen import fit_head
    from models.multihead import SENTIMENT_LABELS

    rng = np.random.default_rng(1000 + seed)
    z = _pca(x)
    labelled = list(start)
    curve = []
    for size in sizes:
        t0 = time.perf_counter()
        lab = np.array(labelled)
        w, b, info = fit_head(x[lab], y[lab], x[tune], y[tune], len(SENTIMENT_LABELS), seed)
        pred = (x[test] @ w.T + b).argmax(axis=1)
        row = {"labels": len(lab), "macro_f1": float(f1_score(y[test], pred, average="macro", labels=[0, 1, 2])),
               "accuracy": float(accuracy_score(y[test], pred)), "C": info["C"],
               "class_counts": np.bincount(y[lab], minlength=3).tolist()}
        nxt = sizes[sizes.index(size) + 1] - size if size != sizes[-1] else 0
        if nxt:
            taken = set(labelled)
            unl = np.array([i for i in pool if i not in taken])
            if strategy == "random":
                picks = list(rng.choice(unl, size=nxt, replace=False))
            else:
                p_gpt = _softmax(x[unl] @ w.T + b)
                if strategy == "committee":  # entropy of the GPT head and the TF-IDF baseline averaged
                    labels = list(SENTIMENT_LABELS)
                    base = TfidfLogReg(labels=labels, seed=seed).fit(
                        texts[lab].tolist(), [labels[v] for v in y[lab]],
                        texts[tune].tolist(), [labels[v] for v in y[tune]])
                    score = active.committee_entropy(p_gpt, base.predict_proba(texts[unl].tolist()))
                elif strategy in ("margin", "margin_diverse"):
                    score = active.margin_uncertainty(p_gpt)
                elif strategy in ("entropy", "entropy_diverse", "entropy_balanced"):
                    score = active.entropy_uncertainty(p_gpt)
                else:
                    labels = list(SENTIMENT_LABELS)
                    base = TfidfLogReg(labels=labels, seed=seed).fit(
                        texts[lab].tolist(), [labels[v] for v in y[lab]],
                        texts[tune].tolist(), [labels[v] for v in y[tune]])
                    score = active.disagreement(p_gpt, base.predict_proba(texts[unl].tolist()))
                if strategy == "entropy_balanced":  # round-robin over the predicted classes
                    picks = [unl[i] for i in active.balanced_top(score, p_gpt.argmax(axis=1), nxt)]
                elif strategy.endswith("_diverse"):  # one per k-means cluster of the 3k least sure (PCA-64 features)
                    picks = [unl[i] for i in active.diverse_top(score, z[unl], nxt, seed=seed)]
                else:
                    picks = [unl[i] for i, _ in active.select_batch(score, nxt, texts=texts[unl].tolist())]
            labelled.extend(int(i) for i in picks)
        row["seconds"] = round(time.perf_counter() - t0, 2)
        curve.append(row)
    return curve


def labels_to_reach(curve_mean: dict[int, float], target: float) -> int | None:
    """Fewest labels whose mean macro-F1 is at least ``target`` (None: never within the rounds)."""
    for n in sorted(curve_mean):
        if curve_mean[n] >= target - 1e-12:
            return n
    return None


def summarise(results: dict) -> dict:
    """Mean/sd per strategy and size, labels each strategy needs to reach random's last-round F1."""
    curves = results["curves"]
    sizes = results["sizes"]
    summary: dict = {"mean": {}, "sd": {}}
    for strat, by_seed in curves.items():
        m = {n: float(np.mean([c[i]["macro_f1"] for c in by_seed.values()])) for i, n in enumerate(sizes)}
        s = {n: float(np.std([c[i]["macro_f1"] for c in by_seed.values()])) for i, n in enumerate(sizes)}
        summary["mean"][strat], summary["sd"][strat] = m, s
    if "random" in summary["mean"]:
        target = summary["mean"]["random"][sizes[-1]]
        summary["target_macro_f1"] = target
        summary["labels_to_reach"] = {st: labels_to_reach(m, target) for st, m in summary["mean"].items()}
        budget = sizes[-1] // 2
        summary["target_met"] = {st: (n is not None and n <= budget) for st, n in summary["labels_to_reach"].items()
                                 if st != "random"}
        summary["label_budget"] = budget
    return summary


def print_table(results: dict) -> None:
    """The learning curves, mean ± sd over seeds, and the verdict."""
    sizes, summ = results["sizes"], results["summary"]
    strategies = list(summ["mean"])
    for part in ("mean", "sd"):  # JSON turned the sizes into string keys
        summ[part] = {s: {int(n): v for n, v in by.items()} for s, by in summ[part].items()}
    head = f"{'labels':>6} | " + " | ".join(f"{s:>15}" for s in strategies)
    print(head)
    print("-" * len(head))
    for n in sizes:
        print(f"{n:>6} | " + " | ".join(f"{summ['mean'][s][n]:>8.3f} ± {summ['sd'][s][n]:.3f}" for s in strategies))
    if "full_pool" in results:
        fp = results["full_pool"]
        print(f"all {fp['labels']} pool labels: macro-F1 {fp['macro_f1_mean']:.3f} ± {fp['macro_f1_sd']:.3f}")
    if "target_macro_f1" in summ:
        print(f"random at {sizes[-1]} labels: {summ['target_macro_f1']:.3f}; labels each strategy needs to reach it "
              f"(target <= {summ['label_budget']}):")
        for s, n in summ["labels_to_reach"].items():
            verdict = "" if s == "random" else ("  met" if summ["target_met"][s] else "  not met")
            chosen = "  <- chosen (the relabel queue's ranking)" if s == CHOSEN else ""
            print(f"  {s:>16}: {n if n is not None else f'> {sizes[-1]}'}{verdict}{chosen}")
        if CHOSEN in summ["mean"]:
            half = summ["label_budget"]
            per_seed = results["curves"][CHOSEN]
            rnd = results["curves"]["random"]
            idx = sizes.index(half) if half in sizes else None
            if idx is not None:
                wins = sum(per_seed[sd][idx]["macro_f1"] >= rnd[sd][-1]["macro_f1"] for sd in per_seed)
                print(f"{CHOSEN} at {half} labels: {summ['mean'][CHOSEN][half]:.3f} vs random at {sizes[-1]}: "
                      f"{summ['target_macro_f1']:.3f}; per seed at least as good in {wins} of {len(per_seed)}")


def main(argv: list[str] | None = None) -> None:
    """Run every strategy and seed, print the table, write the JSON."""
    args = parse_args(argv)
    if args.report_only:
        print_table(json.loads(args.report_only.read_text()))
        return
    if args.quick:
        args.start, args.step, args.end, args.seeds = 50, 50, 150, [0]
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=max(1, args.threads))
    t_start = time.perf_counter()
    df, parts = load_split(args.data_dir, args.quick)
    from models.multihead import SENTIMENT_LABELS
    from models.train import encode_labels

    texts = df.text.to_numpy()
    y = encode_labels(df.sentiment, list(SENTIMENT_LABELS))
    print(f"PhraseBank 50Agree: pool {len(parts.train)}, tune {len(parts.tune)}, test {len(parts.test)}", flush=True)
    x, feat_info = features(texts.tolist(), args)
    print(f"features: {x.shape} ({feat_info.get('seconds')} s, cached={feat_info['cached']})", flush=True)
    sizes = list(range(args.start, args.end + 1, args.step))
    results: dict = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "features": feat_info,
                     "machine": {"platform": platform.platform(), "threads": args.threads,
                                 "load_avg_1min": round(os.getloadavg()[0], 2)},
                     "split": {"pool": int(len(parts.train)), "tune": int(len(parts.tune)), "test": int(len(parts.test)),
                               "split_seed": 0},
                     "sizes": sizes, "seeds": args.seeds, "curves": {s: {} for s in args.strategies}}
    for seed in args.seeds:
        start = np.random.default_rng(seed).choice(parts.train, size=args.start, replace=False)
        for strat in args.strategies:
            t0 = time.perf_counter()
            curve = run_strategy(strat, seed, x, y, texts, parts.train, parts.tune, parts.test, start, sizes)
            results["curves"][strat][str(seed)] = curve
            print(f"seed {seed} {strat:>13}: " + " ".join(f"{r['macro_f1']:.3f}" for r in curve)
                  + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    from models.frozen import fit_head
    from sklearn.metrics import f1_score

    full = []
    for seed in args.seeds:
        w, b, _ = fit_head(x[parts.train], y[parts.train], x[parts.tune], y[parts.tune], 3, seed)
        full.append(float(f1_score(y[parts.test], (x[parts.test] @ w.T + b).argmax(axis=1), average="macro")))
    results["full_pool"] = {"labels": int(len(parts.train)), "macro_f1_mean": float(np.mean(full)),
                            "macro_f1_sd": float(np.std(full))}
    results["summary"] = summarise(results)
    results["wall_minutes"] = round((time.perf_counter() - t_start) / 60, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=str))
    print_table(results)
    print(f"wrote {args.out} ({results['wall_minutes']} min)")


if __name__ == "__main__":
    main()
