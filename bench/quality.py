"""Quality benchmark: TF-IDF vs our own GPT vs a pretrained backbone (frozen and LoRA) vs what is served.

One run, several seeds (default 0, 1, 2), four benchmarks side by side (``bench/quality_data.py``):
Financial PhraseBank 50Agree and AllAgree (sentiment, 80/10/10 stratified per seed), AG News
(topic, 70/10/20 of the shared test file) and Reuters-21578 ModApte top-10 (topic, ModApte test is
the test split, validation carved from ModApte train). Validation is cut into the product's
``tune`` and ``select`` halves (``models.experiment.selection_halves``). Contenders, all product code:

1. **TF-IDF + LR** (``models.baseline.TfidfLogReg``): word + char n-grams, C and class weighting on tune.
2. **own preset GPT** (``small``, 4 x 256, from scratch): a byte-level BPE and the LM pretrained
   once, for a few minutes, on the shared corpora minus every benchmark test text (all seeds), then
   ``run_experiment(recipe="full", prompt="")`` per split with a time budget.
3. **SmolLM2 frozen** (the CPU default recipe): SmolLM2-135M reads ``PROMPT``-wrapped texts, the
   mean-pooled hidden states of layers -1/-9/-16 are the features (``models.frozen.extract_features``,
   bf16 autocast where the machine's probe says so), computed ONCE per benchmark and reused by every
   seed (a text's features do not depend on the split); per seed a logistic head
   (``models.frozen.fit_head``, C on tune).
4. **SmolLM2 LoRA**: ``run_experiment(recipe="lora", lm_weight=0, max_length=48)``, PROMPT, bf16 per
   the probe, epochs capped by a time budget. Costly on 2 cores: PhraseBank first seed, then
   other seeds / benchmarks while the run's deadline allows (below).
5. **served**: what the product serves, decided on the select half (ensemble weight by
   ``fit_ensemble_weight``, then gpt / ensemble / baseline with ``MIN_GPT_WEIGHT``), for the frozen
   GPT + TF-IDF (the CPU default) and, where LoRA ran, for ``run_experiment``'s own decision.

Order and budget: TF-IDF and the frozen backbone (+ served) run for every benchmark and seed; then
the ``run_experiment`` contenders, each in its own process, under one deadline (``--budget-minutes``,
70): LoRA on PhraseBank 50Agree and AllAgree (first seed), pretraining + the preset (first seed,
every benchmark), then ``EXTRAS`` (more seeds, LoRA on the topic benchmarks). A run starts only if
its training budget plus its overhead (estimated from what this run measured) fits before the
deadline, and LoRA's budget shrinks to what is left; anything else is "not run (CPU budget)".
Before each heavy phase the bench picks 1 or 2 CPU threads by a 2-second probe (``qc.pick_threads``):
when other jobs share the 2 cores, 2 OpenMP threads run ~7x slower than 1.

Reported per benchmark and contender: test macro-F1 and accuracy, mean ± sd over the seeds run, CPU
minutes (wall clock of that contender in this run, all its seeds, on this machine) and, for the
sentiment benchmarks, accuracy on the real-text golden set (``models/golden_set.py``, 180
headlines, never used for training or selection). Targets from issue 14 are checked in the table.
Writes ``bench/results/quality.json`` (every seed, timings, precision, feature tokens/s).

    python bench/quality.py --data-dir ../shared/data          # the full run (<= ~72 min on 2 cores)
    python bench/quality.py --quick                            # 200 rows per benchmark, seed 0, ~7 min
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script (python bench/x.py): the repository on the path
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench import quality_contenders as qc  # noqa: E402
from bench.quality_data import BENCHMARKS, load_benchmarks, pretraining_corpus, product_parts, read_reuters, \
    split, subsample  # noqa: E402

console = Console(width=160)
CONTENDERS = {  # key -> table label, in table order
    "tfidf": "TF-IDF + LR",
    "preset": "own preset GPT",
    "frozen": "SmolLM2 frozen",
    "lora": "SmolLM2 LoRA",
    "served_frozen": "served (frozen)",
    "served_lora": "served (LoRA)",
}
SHORT = {"phrasebank_50agree": "PB 50Agree", "phrasebank_allagree": "PB AllAgree", "ag_news": "AG News",
         "reuters_top10": "Reuters-10"}
# Optional work after the required part, in this order, each run only if its estimated cost (the
# same contender's measured first-seed time on that benchmark, else its budget + overhead) still fits.
EXTRAS = [("lora", "phrasebank_50agree", (1, 2)), ("lora", "phrasebank_allagree", (1, 2)),
          *[("preset", b, (1, 2)) for b in BENCHMARKS],
          ("lora", "ag_news", (0,)), ("lora", "reuters_top10", (0,))]


class Run:
    """The state of one benchmark run: splits, results, timings, what was not run, the clock."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = time.perf_counter()
        self.rows: list[dict] = []  # one per benchmark x contender x seed
        self.not_run: list[dict] = []
        self.info: dict = {}

    def elapsed_min(self) -> float:
        """Minutes since the run started."""
        return (time.perf_counter() - self.t0) / 60

    def add(self, bench: str, contender: str, seed: int, score: qc.Score) -> None:
        """Record one score and print a one-line progress note."""
        self.rows.append({"benchmark": bench, "contender": contender, "seed": seed, "macro_f1": score.macro_f1,
                          "accuracy": score.accuracy, "seconds": round(score.seconds, 1),
                          "golden_accuracy": score.golden["accuracy"] if score.golden else None,
                          "golden_macro_f1": score.golden["macro_f1"] if score.golden else None,
                          "served": score.served, "extra": score.extra})
        gold = f", golden acc {score.golden['accuracy']:.3f}" if score.golden else ""
        srv = f" [{score.served}]" if score.served else ""
        console.print(f"[{self.elapsed_min():5.1f} min] {bench} {contender} seed {seed}: macro-F1 "
                      f"{score.macro_f1:.3f}, acc {score.accuracy:.3f}{gold}{srv}, {score.seconds:.0f} s", markup=False)
        self.save()

    def skip(self, bench: str, contender: str, seeds, reason: str) -> None:
        """Record work that was not run (and why)."""
        self.not_run.append({"benchmark": bench, "contender": contender, "seeds": list(seeds), "reason": reason})
        console.print(f"[{self.elapsed_min():5.1f} min] {bench} {contender} seeds {list(seeds)}: {reason}", markup=False)

    def seconds(self, bench: str, contender: str, seed: int) -> float | None:
        """Measured seconds of one contender run, if it ran."""
        hit = [r["seconds"] for r in self.rows if (r["benchmark"], r["contender"], r["seed"]) == (bench, contender, seed)]
        return hit[0] if hit else None

    def save(self) -> None:
        """Write ``bench/results/quality.json`` (called after every result, so a crash keeps what ran)."""
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        doc = {**self.info, "wall_minutes": round(self.elapsed_min(), 2), "rows": self.rows, "not_run": self.not_run}
        out.write_text(json.dumps(doc, indent=2, default=_json_default), encoding="utf-8")


def _json_default(v):
    """JSON for numpy scalars and arrays."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("NEWSPULSE_DATA_DIR", "../shared/data")))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS), choices=BENCHMARKS)
    ap.add_argument("--backbone", default="smollm2-135m", help="catalogue name (or model dir) of the pretrained LM")
    ap.add_argument("--max-length", type=int, default=128, help="text tokens for the frozen features (product default)")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--pretrain-minutes", type=float, default=3.0)
    ap.add_argument("--pretrain-steps", type=int, default=300)
    ap.add_argument("--preset-minutes", type=float, default=0.75, help="fine-tuning time budget per split")
    ap.add_argument("--preset-epochs", type=int, default=3)
    ap.add_argument("--lora-minutes", type=float, default=8.0, help="training time budget per LoRA run")
    ap.add_argument("--lora-epochs", type=int, default=2)
    ap.add_argument("--lora-max-length", type=int, default=48)
    ap.add_argument("--budget-minutes", type=float, default=70.0,
                    help="deadline: a LoRA / preset run starts only if it is expected to end within this")
    ap.add_argument("--no-extras", action="store_true", help="only the required work")
    ap.add_argument("--check-frozen", action="store_true",
                    help="also run run_experiment(recipe='frozen') on the first benchmark, seed 0, and compare (on in --quick)")
    ap.add_argument("--quick", action="store_true", help="smoke test: ~200 rows per benchmark, seed 0, tiny budgets")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temp dir)")
    ap.add_argument("--report-only", type=Path, default=None, metavar="JSON",
                    help="print the table of a finished run from its quality.json and exit")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quality.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds = args.seeds[:1]
        args.pretrain_minutes, args.pretrain_steps, args.preset_minutes, args.preset_epochs = 0.3, 40, 0.2, 1
        args.lora_minutes, args.lora_epochs, args.budget_minutes = 0.5, 1, 12.0
        if args.out == ROOT / "bench" / "results" / "quality.json":
            args.out = ROOT / "bench" / "results" / "quality_quick.json"
    return args


def main(argv: list[str] | None = None) -> None:
    """Run every contender (required part, then extras while the budget lasts); print the table, write JSON."""
    import torch

    from models.catalogue import resolve
    from models.golden_set import load_golden
    from models.multihead import PROMPT
    from models.precision import cpu_precision

    args = parse_args(argv)
    if args.report_only:
        report_only(args.report_only)
        return
    run = Run(args)
    work = args.work or Path(tempfile.mkdtemp(prefix="np-quality-"))
    probe = cpu_precision(ROOT / "var" / "machine" / "precision.json")
    precision = probe.precision
    base_dir = resolve(args.backbone, store=ROOT / "var" / "backbones").ref
    golden = load_golden()
    reuters = read_reuters(args.data_dir)
    benches = {k: v for k, v in load_benchmarks(args.data_dir, reuters).items() if k in args.benchmarks}
    if args.quick:
        benches = {k: subsample(v, 200) for k, v in benches.items()}
    splits = {}
    for b, bench in benches.items():
        for s in args.seeds:
            df = split(bench, s)
            splits[(b, s)] = (df, product_parts(df))
    run.info = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "machine": {
        "cpu_threads": torch.get_num_threads(), "platform": platform.platform(), "torch": torch.__version__},
        "precision": {"used": precision, "probe": probe.__dict__}, "backbone": base_dir,
        "args": {k: str(v) for k, v in vars(args).items()}, "quick": args.quick,
        "benchmarks": {b: {"head": bench.head, "labels": bench.labels, "rows": len(bench.frame),
                           "split_sizes": {str(s): {p: int(len(getattr(parts, p))) for p in ("train", "tune", "select", "test")}
                                           for (bb, s), (_, parts) in splits.items() if bb == b}}
                       for b, bench in benches.items()}}
    console.print(f"precision: {precision} (probe: bf16 {probe.bf16_gflops} vs fp32 {probe.fp32_gflops} GFLOP/s); "
                  f"backbone {base_dir}; work {work}")

    # 1-2. TF-IDF and the frozen backbone (+ what is served from them), every benchmark and seed.
    base_probs: dict[tuple[str, int], dict] = {}
    run.info["threads"] = []
    threads = lambda phase: run.info["threads"].append({"phase": phase, "threads": qc.pick_threads(),  # noqa: E731
                                                        "minute": round(run.elapsed_min(), 1),
                                                        "load_avg_1min": round(os.getloadavg()[0], 2)})
    threads("tfidf")
    for b, bench in benches.items():
        gold = golden if bench.head == "sentiment" else None
        for s in args.seeds:
            df, parts = splits[(b, s)]
            score, base_probs[(b, s)] = qc.tfidf(df, parts, bench.head, bench.labels, gold, s)
            run.add(b, "tfidf", s, score)
    model, tok = qc.load_frozen_model(base_dir, PROMPT)
    run.info["features"] = {}
    for b, bench in benches.items():
        gold = golden if bench.head == "sentiment" else None
        threads(f"features {b}")
        feats = qc.frozen_features(model, tok, bench.frame.text.tolist(), gold, max_length=args.max_length,
                                   precision=precision, cache={})
        run.info["features"][b] = {"seconds": round(feats.seconds, 1), "tokens": feats.tokens,
                                   "tokens_per_s": round(feats.tokens_per_s), "texts": len(bench.frame) + (len(gold) if gold is not None else 0),
                                   "precision": precision, "max_length": feats.max_length, "pool_layers": feats.pool_layers}
        console.print(f"[{run.elapsed_min():5.1f} min] {b} features: {feats.seconds:.0f} s, "
                      f"{feats.tokens_per_s:,.0f} tokens/s ({precision})")
        for s in args.seeds:
            df, parts = splits[(b, s)]
            score, probs = qc.frozen_head(df, parts, bench.head, bench.labels, feats, gold, s)
            score.seconds += feats.seconds / len(args.seeds)  # the one feature pass, shared by the seeds
            run.add(b, "frozen", s, score)
            tfidf_s = run.seconds(b, "tfidf", s) or 0.0
            run.add(b, "served_frozen", s, qc.served(df, parts, bench.head, bench.labels, probs, base_probs[(b, s)],
                                                     gold, score.seconds + tfidf_s))
    del model, tok
    if args.quick or args.check_frozen:
        _check_frozen(run, benches, splits, base_dir, precision, args, work)

    # 3-5. The run_experiment contenders under one deadline (--budget-minutes): LoRA on PhraseBank
    # (first seed), then the own preset (pretrained once; first seed everywhere), then EXTRAS.
    left = lambda: args.budget_minutes * 60 - run.elapsed_min() * 60  # noqa: E731 - seconds to the deadline
    preset_base: str | None = None

    def do(contender: str, b: str, s: int, train_s: float) -> None:
        """One run_experiment contender on one split with ``train_s`` seconds of training (failures recorded)."""
        from models.train import TrainConfig

        df, _ = splits[(b, s)]
        if contender == "preset":
            cfg = TrainConfig(recipe="full", epochs=args.preset_epochs, seed=s, prompt="", time_budget_s=train_s)
            base = preset_base
        else:
            cfg = TrainConfig(recipe="lora", lm_weight=0.0, epochs=args.lora_epochs, seed=s,
                              max_length=args.lora_max_length, precision=precision, time_budget_s=train_s)
            base = base_dir
        threads(f"{contender} {b} seed {s}")
        try:
            gpt, srv, _ = qc.experiment(df, benches[b].head, work / contender / b / f"seed{s}", base, cfg,
                                        run.info["threads"][-1]["threads"])
        except Exception as e:  # noqa: BLE001 - one failed contender must not lose the others
            traceback.print_exc()
            run.skip(b, contender, [s], f"failed: {type(e).__name__}: {e}"[:200])
            return
        gpt.extra["time_budget_s"] = round(train_s)
        run.add(b, contender, s, gpt)
        run.add(b, f"served_{contender}", s, srv)

    def attempt(contender: str, b: str, s: int) -> None:
        """Run ``contender`` on ``b``/``s`` if its training budget plus overhead fits before the deadline."""
        full = (args.lora_minutes if contender == "lora" else args.preset_minutes) * 60
        over = _overhead_s(run, contender, b, s, splits, benches, args)
        known = run.seconds(b, contender, args.seeds[0]) if s != args.seeds[0] else None
        need = known * 1.1 if known is not None else full + over
        train_s = min(full, left() - over)
        if contender == "preset" and preset_base is None:
            run.skip(b, contender, [s], run.info.get("pretrain", {}).get("failed") and "failed: pretraining"
                     or "not run (CPU budget)")
            return
        if need > left() or train_s < min(full, 120):
            run.skip(b, contender, [s], "not run (CPU budget)")
            return
        do(contender, b, s, train_s)

    first = args.seeds[0]
    for b in ("phrasebank_50agree", "phrasebank_allagree"):
        if b in benches:
            attempt("lora", b, first)
    pretrain_need = args.pretrain_minutes * 60 + 90 + args.preset_minutes * 60 + \
        _overhead_s(run, "preset", next(iter(benches)), first, splits, benches, args)
    if left() >= pretrain_need:
        threads("pretrain")
        preset_base = _pretrain_preset(run, benches, splits, args, work, reuters)
    for b in benches:
        attempt("preset", b, first)
    for contender, b, seeds in ([] if args.no_extras else EXTRAS):
        for s in seeds:
            if b not in benches or s not in args.seeds:
                continue
            if s != first and run.seconds(b, contender, first) is None:
                run.skip(b, contender, [s], "not run (its first seed did not run)")
            else:
                attempt(contender, b, s)
    for b in benches:  # seeds of the run_experiment contenders that never came up
        for contender in ("preset", "lora"):
            done = {r["seed"] for r in run.rows if (r["benchmark"], r["contender"]) == (b, contender)}
            listed = {s for n in run.not_run if (n["benchmark"], n["contender"]) == (b, contender) for s in n["seeds"]}
            missing = [s for s in args.seeds if s not in done | listed]
            if missing:
                run.skip(b, contender, missing, "not run (CPU budget)")
    run.info["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    run.info["summary"] = report(run, benches)
    run.save()
    console.print(f"total wall time {run.elapsed_min():.1f} min; results in {args.out}")


def _check_frozen(run: Run, benches, splits, base_dir: str, precision: str, args, work: Path) -> None:
    """The bench's frozen + served figures against ``run_experiment(recipe="frozen")`` on the same split.

    The bench reuses features across seeds and applies the head in float32; the product recomputes
    them and applies the head under autocast, so a few borderline rows may differ in bf16.
    """
    from models.train import TrainConfig

    b = next(iter(benches))
    s = args.seeds[0]
    df, _ = splits[(b, s)]
    cfg = TrainConfig(recipe="frozen", seed=s, max_length=args.max_length, precision=precision)
    n_threads = qc.pick_threads()
    run.info["threads"].append({"phase": "check_frozen", "threads": n_threads})
    gpt, srv, _ = qc.experiment(df, benches[b].head, work / "check_frozen" / b, base_dir, cfg, n_threads)
    mine = {r["contender"]: r for r in run.rows if (r["benchmark"], r["seed"]) == (b, s)}
    check = {"benchmark": b, "seed": s,
             "product": {"frozen_macro_f1": gpt.macro_f1, "served": srv.served, "served_macro_f1": srv.macro_f1,
                         "tfidf_macro_f1": gpt.extra["baseline_test_macro_f1"], "seconds": round(gpt.seconds, 1)},
             "bench": {"frozen_macro_f1": mine["frozen"]["macro_f1"], "served": mine["served_frozen"]["served"],
                       "served_macro_f1": mine["served_frozen"]["macro_f1"], "tfidf_macro_f1": mine["tfidf"]["macro_f1"]}}
    run.info["check_frozen"] = check
    console.print(f"check against run_experiment(frozen) on {b} seed {s}: {check}")


def _pretrain_preset(run: Run, benches, splits, args, work: Path, reuters) -> str | None:
    """Train the preset's tokenizer and LM on the shared corpora minus every test text; returns its directory."""
    from models.backbone import build_backbone
    from models.pretrain import PretrainConfig, pretrain
    from models.tokenizer import train_tokenizer

    t0 = time.perf_counter()
    try:
        exclude = {a for (b, s), (df, parts) in splits.items() for a in df.article_id.to_numpy()[parts.test]}
        corpus = pretraining_corpus(args.data_dir, exclude, reuters)
        corpus = [corpus[i] for i in np.random.default_rng(0).permutation(len(corpus))]
        if args.quick:
            corpus = corpus[:5000]
        n_val = max(50, len(corpus) // 100)
        tok = train_tokenizer(corpus[n_val:], work / "pretrain" / "tokenizer", vocab_size=8000)
        lm = build_backbone(args.preset, tok)
        warmup = max(10, args.pretrain_steps // 10)
        res = pretrain(lm, tok, corpus[n_val:], corpus[:n_val],
                       PretrainConfig(max_steps=args.pretrain_steps, warmup_steps=warmup, eval_every=100,
                                      time_budget_s=args.pretrain_minutes * 60), work / "pretrain" / "checkpoint",
                       progress=False)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        run.info["pretrain"] = {"failed": f"{type(e).__name__}: {e}"}
        return None
    seconds = time.perf_counter() - t0
    run.info["pretrain"] = {"preset": args.preset, "texts": len(corpus), "excluded_test_texts": len(exclude),
                            "steps": res.steps, "tokens_seen": res.tokens_seen, "tokens_per_s": round(res.tokens_per_s),
                            "val_perplexity": round(res.val_perplexity, 1), "seconds": round(seconds, 1)}
    console.print(f"[{run.elapsed_min():5.1f} min] pretrained {args.preset}: {res.steps} steps, {res.tokens_seen:,} tokens, "
                  f"val ppl {res.val_perplexity:.0f}, {seconds:.0f} s (tokenizer + corpus + LM)")
    return str(work / "pretrain" / "checkpoint" / "model")


def _overhead_s(run: Run, contender: str, b: str, s: int, splits, benches, args) -> float:
    """Seconds a run_experiment call spends besides its training budget, from what this run measured.

    Process start-up and model load, its own TF-IDF fit (as long as ours on the same split), and for
    LoRA the scoring passes: each epoch's tune evaluation (fp32, ~3.4x slower than bf16) and the
    select / test / golden predictions (bf16), sized by this benchmark's frozen feature pass.
    """
    _, parts = splits[(b, s)]
    tfidf_s = run.seconds(b, "tfidf", s) or 0.0
    if contender == "preset":
        return 30 + 1.2 * tfidf_s
    feat = run.info["features"][b]
    per_text = feat["seconds"] / max(feat["texts"], 1)  # one bf16 forward pass per text, here and now
    n_score = len(parts.select) + len(parts.test) + (180 if benches[b].head == "sentiment" else 0)
    return 60 + 1.2 * tfidf_s + per_text * (n_score + 3.4 * args.lora_epochs * len(parts.tune))


def _mean_sd(values: list[float]) -> str:
    """``0.812 ± 0.010`` (population sd over seeds; a single seed shows no sd)."""
    v = np.array([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return ""
    return f"{v.mean():.3f}" if v.size == 1 else f"{v.mean():.3f} ± {v.std(ddof=0):.3f}"


def _target(bench: str, contender: str, f1: float, tfidf_f1: float | None) -> str | None:
    """The issue-14 target for this cell and whether the mean macro-F1 meets it."""
    gpt_alone = contender in ("preset", "frozen", "lora")
    if bench == "phrasebank_50agree" and contender in ("frozen", "lora"):
        goal = 0.80
    elif bench == "phrasebank_50agree" and contender.startswith("served"):
        goal = 0.82
    elif bench == "phrasebank_allagree" and (contender in ("frozen", "lora") or contender.startswith("served")):
        goal = 0.93
    elif bench in ("ag_news", "reuters_top10") and gpt_alone and tfidf_f1 is not None:
        return f"≥TF-IDF {'met' if f1 >= tfidf_f1 else 'not met'}"
    else:
        return None
    return f"≥{goal:.2f} {'met' if f1 >= goal else 'not met'}"


def report(run: Run, benches) -> list[dict]:
    """Print the side-by-side table; return its rows (also written to the JSON)."""
    table = Table(title=f"Test scores, mean ± sd over seeds run ({'quick smoke run' if run.args.quick else 'full data'}); "
                        f"precision {run.info['precision']['used']}; 2-core CPU", show_lines=False)
    for col, just in (("benchmark", "left"), ("contender", "left"), ("seeds", "left"), ("macro-F1", "right"),
                      ("accuracy", "right"), ("CPU min", "right"), ("golden acc", "right"),
                      ("served (per seed)", "left"), ("target", "left")):
        table.add_column(col, justify=just, overflow="fold")
    summary = []
    for b in benches:
        rows_b = [r for r in run.rows if r["benchmark"] == b]
        tf = [r["macro_f1"] for r in rows_b if r["contender"] == "tfidf"]
        tfidf_f1 = float(np.mean(tf)) if tf else None
        for key, label in CONTENDERS.items():
            rs = sorted((r for r in rows_b if r["contender"] == key), key=lambda r: r["seed"])
            skipped = [n for n in run.not_run if (n["benchmark"], n["contender"]) == (b, key.removeprefix("served_"))]
            skipped_seeds = sorted({s for n in skipped for s in n["seeds"]})
            if not rs:
                reason = skipped[0]["reason"] if skipped else "not run"
                table.add_row(SHORT[b], label, "", reason, "", "", "", "", "")
                summary.append({"benchmark": b, "contender": key, "seeds": [], "note": reason})
                continue
            f1 = float(np.mean([r["macro_f1"] for r in rs]))
            seed_note = ",".join(str(r["seed"]) for r in rs)
            if skipped_seeds:
                seed_note += " only"
            srv = ", ".join(_compact(r["served"]) for r in rs) if key.startswith("served") else ""
            target = _target(b, key, f1, tfidf_f1)
            gold = _mean_sd([r["golden_accuracy"] for r in rs]) if rs[0]["golden_accuracy"] is not None else ""
            cpu = sum(r["seconds"] for r in rs) / 60
            table.add_row(SHORT[b], label, seed_note, _mean_sd([r["macro_f1"] for r in rs]),
                          _mean_sd([r["accuracy"] for r in rs]), f"{cpu:.1f}", gold, srv, target or "")
            summary.append({"benchmark": b, "contender": key, "seeds": [r["seed"] for r in rs],
                            "not_run_seeds": skipped_seeds, "macro_f1_mean": f1,
                            "macro_f1_sd": float(np.std([r["macro_f1"] for r in rs])),
                            "accuracy_mean": float(np.mean([r["accuracy"] for r in rs])),
                            "accuracy_sd": float(np.std([r["accuracy"] for r in rs])), "cpu_minutes": round(cpu, 2),
                            "golden_accuracy_mean": float(np.mean([r["golden_accuracy"] for r in rs]))
                            if rs[0]["golden_accuracy"] is not None else None,
                            "served": [r["served"] for r in rs] if key.startswith("served") else None, "target": target})
        table.add_section()
    console.print(table)
    feats = run.info.get("features", {})
    pre = run.info.get("pretrain", {})
    console.print("CPU min: wall clock of the contender in this run, summed over the seeds shown. Frozen: the one "
                  "feature pass per benchmark (" + ", ".join(f"{SHORT[b]} {v['seconds'] / 60:.1f} min at "
                                                              f"{v['tokens_per_s']:,} tok/s" for b, v in feats.items())
                  + ") + a head per seed. served (frozen) = frozen + TF-IDF + the choice. Preset and LoRA: the whole "
                  "run_experiment call (training, its own TF-IDF, scoring select/test/golden). Preset pretraining, "
                  f"once for all: {pre.get('seconds', 0) / 60:.1f} min, {pre.get('steps', '?')} steps, "
                  f"val ppl {pre.get('val_perplexity', '?')}. Golden: 180 real-text headlines, accuracy.")
    for line in _training_notes(run):
        console.print(line, markup=False)
    return summary


def _training_notes(run: Run) -> list[str]:
    """One line per preset / LoRA run: its training budget, epochs, throughput and (LoRA) share of an epoch."""
    lines = []
    prompt_tokens = None
    for r in run.rows:
        if r["contender"] not in ("preset", "lora"):
            continue
        e, b = r["extra"], r["benchmark"]
        line = (f"{CONTENDERS[r['contender']]}, {SHORT[b]} seed {r['seed']}: training budget {e.get('time_budget_s')} s, "
                f"{e.get('epochs_run')} epoch(s) begun, best {e.get('best_epoch')}, {e.get('tokens_per_s')} training "
                f"tokens/s on {e.get('threads')} thread(s)")
        feat = run.info.get("features", {}).get(b)
        if r["contender"] == "lora" and feat and e.get("tokens_per_s"):
            if prompt_tokens is None:
                prompt_tokens = _prompt_tokens(run.info["backbone"])
            max_len = int(run.info["args"].get("lora_max_length", 48))
            per_text = min(feat["tokens"] / max(feat["texts"], 1), prompt_tokens + max_len)
            n_train = run.info["benchmarks"][b]["split_sizes"][str(r["seed"])]["train"]
            seen = e["tokens_per_s"] * e["train_seconds"]
            line += f": ~{seen / 1000:.0f}k tokens seen of a ~{n_train * per_text / 1000:.0f}k-token epoch"
        lines.append(line)
    return lines


def _prompt_tokens(backbone_dir: str) -> int:
    """Tokens ``PROMPT`` adds around every text for the backbone's tokenizer."""
    from models.multihead import PROMPT
    from models.predict import encode_texts
    from models.tokenizer import load_tokenizer

    ids, _, _ = encode_texts(load_tokenizer(backbone_dir), [""], 8, PROMPT)
    return len(ids[0])


def report_only(path: Path) -> None:
    """Print the table of a finished run again from its JSON (same numbers; nothing is recomputed)."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    run = Run(argparse.Namespace(quick=doc.get("quick", False), out=path))
    run.rows, run.not_run, run.info = doc["rows"], doc["not_run"], doc
    report(run, doc["benchmarks"])
    console.print(f"total wall time of that run {doc['wall_minutes']:.1f} min (started {doc['started']})")


def _compact(served: str | None) -> str:
    """``ensemble w=0.55`` -> ``ens .55`` so three seeds fit the column."""
    if not served:
        return "?"
    return served.replace("ensemble w=0.", "ens .").replace("ensemble w=1.00", "ens 1.0").replace("baseline", "TF-IDF")


if __name__ == "__main__":
    main()
