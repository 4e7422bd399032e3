"""BANKING77 intent benchmark (issue 16 item 6): TF-IDF vs own GPT vs SmolLM2 frozen / LoRA vs what is served.

Every GPT row is :func:`models.experiment.run_experiment` itself on a parquet of
``article_id, text, title(None), intent, split, dataset`` (what ``newspulse finetune --intent``
trains), run in a fresh process (``python bench/intents.py --child ...``) with 1 or 2 CPU threads
(``bench.quality_contenders.pick_threads``). The child wraps ``models.experiment.auto_answer_threshold``
so that, besides the served kind's threshold the product computes, the same function is also called
for ``gpt``, ``baseline`` and ``ensemble`` on the same select / test probabilities: that gives every
row its coverage at >= 95 % precision (threshold tuned on validation ``select``, then measured on test).

Data (read with ``sources.support.read_banking77``, no warehouse): the official test file (3,080)
is test. ``full``: validation = 10 % of each intent's train rows, lowest ``sha256(seed:id)`` first
(``warehouse.training_data._hash_unit``, seed 0), the rest train (~9,000). ``10-shot`` (seeds 0, 1, 2):
per intent, in ``_hash_unit(id, seed)`` order, 10 rows train and the next ``--val-per-intent`` (3)
validation (tune/select halves for C, the ensemble weight, the served choice and the auto-answer
threshold), so each seed sees 13 labelled rows per intent in all.

Contenders:

1. **TF-IDF + LR** (``models.baseline.TfidfLogReg``): the baseline ``run_experiment`` fits; the row is
   read from the frozen run (same split, same fit).
2. **own GPT**: the ``small`` preset (4 x 256, ~5M) from scratch, BPE trained on the train texts, recipe
   ``full``, no LM pretraining, under a training time budget.
3. **SmolLM2 frozen** (the CPU default recipe): INTENT_PROMPT, multi-layer pooled features + logistic head.
4. **SmolLM2 LoRA**: recipe ``lora``, ``lm_weight=0``, ``max_length`` 48, under a time budget (on 2
   cores it sees a fraction of one epoch of the full data).
5. **served**: what each run serves (gpt / ensemble / baseline, decided on ``select``); the headline
   one is the frozen run's (the CPU default).

Order (most important first), JSON written after every row: frozen full, frozen 10-shot x seeds,
own GPT full + 10-shot, LoRA full + 10-shot seed 0. A run starts only if its budget + overhead fits
before ``--budget-minutes``; otherwise it is listed as not run. ``--phases`` picks a subset (two
processes may run disjoint phases into different ``--out`` files; ``--report-only`` merges them).

    python bench/intents.py --data-dir ../shared/data                  # the full run
    python bench/intents.py --quick                                    # tiny smoke run (~5 min)
    python bench/intents.py --report-only bench/results/intents.json [more.json ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
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
import pandas as pd  # noqa: E402

PHASES = ("frozen_full", "frozen_shot", "preset_full", "preset_shot", "lora_full", "lora_shot")
CONTENDERS = {"tfidf": "TF-IDF + LR", "preset": "own GPT (small, full FT)", "frozen": "SmolLM2 frozen",
              "lora": "SmolLM2 LoRA", "served_frozen": "served (frozen run)", "served_preset": "served (own-GPT run)",
              "served_lora": "served (LoRA run)"}
TARGETS = {"full": 0.93, "10-shot": 0.85}


# --------------------------------------------------------------------------- data

def load_banking77(data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) frames ``article_id, text, intent`` through the project's loader."""
    from sources.support import read_banking77

    out = []
    for name in ("train", "test"):
        f = read_banking77(Path(data_dir) / "banking77" / f"{name}.csv")
        bad = f.error.notna().sum()
        if bad:
            raise ValueError(f"{bad} unreadable rows in banking77/{name}.csv")
        out.append(pd.DataFrame({"article_id": f.message_id, "text": f.text, "intent": f.label}))
    return out[0], out[1]


def make_split(train: pd.DataFrame, test: pd.DataFrame, setting: str, seed: int, *, shots: int,
               val_per_intent: int, val_frac: float) -> pd.DataFrame:
    """The examples parquet frame for one setting/seed (see the module docstring)."""
    from warehouse.training_data import _hash_unit

    u = train.article_id.map(lambda a: _hash_unit(a, seed))
    split = pd.Series(None, index=train.index, dtype=object)
    for _, idx in train.groupby("intent").groups.items():
        order = u.loc[idx].sort_values(kind="stable").index
        if setting == "full":
            n_val = max(1, round(len(order) * val_frac))
            split.loc[order[:n_val]] = "validation"
            split.loc[order[n_val:]] = "train"
        else:
            split.loc[order[:shots]] = "train"
            split.loc[order[shots:shots + val_per_intent]] = "validation"
    tr = train.assign(split=split)[split.notna()]
    df = pd.concat([tr, test.assign(split="test")], ignore_index=True)
    return df.assign(title=None, dataset="banking77")[["article_id", "text", "title", "intent", "split", "dataset"]]


def subsample_quick(train: pd.DataFrame, test: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Smoke-test sizes: 20 train rows and 3 test rows per intent."""
    tr = train.groupby("intent", group_keys=False).head(20).reset_index(drop=True)
    te = test.groupby("intent", group_keys=False).head(3).reset_index(drop=True)
    return tr, te


# --------------------------------------------------------------------------- child process

def child(argv: list[str]) -> None:
    """``--child EXAMPLES OUT_DIR BASE CONFIG_JSON``: run_experiment, plus auto-answer for every kind.

    Writes ``OUT_DIR/info.json`` with ``auto_answer_by_kind`` and the process CPU seconds.
    """
    import torch

    import models.experiment as ex
    from models.registry import jsonable
    from models.train import TrainConfig

    examples, out_dir, base, cfg = Path(argv[0]), Path(argv[1]), argv[2], json.loads(argv[3])
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    by_kind: dict = {}
    original = ex.auto_answer_threshold

    def wrapped(splits, labels, kind, weight, **kw):
        for k in ("gpt", "baseline", "ensemble"):
            by_kind[k] = original(splits, labels=labels, kind=k, weight=weight, **kw)
        return original(splits, labels=labels, kind=kind, weight=weight, **kw)

    ex.auto_answer_threshold = wrapped
    t0 = time.perf_counter()
    info = ex.run_experiment(examples, out_dir, base=base, config=TrainConfig(**cfg), progress=False)
    info["auto_answer_by_kind"] = by_kind
    ru = resource.getrusage(resource.RUSAGE_SELF)
    info["process"] = {"cpu_s": round(ru.ru_utime + ru.ru_stime, 1), "experiment_wall_s": round(time.perf_counter() - t0, 1),
                       "max_rss_mb": round(ru.ru_maxrss / 1024), "torch_threads": torch.get_num_threads()}
    (out_dir / "info.json").write_text(json.dumps(jsonable(info)), encoding="utf-8")


def experiment(df: pd.DataFrame, work: Path, base: str, config, threads: int) -> tuple[dict, float, float]:
    """run_experiment in a fresh process; returns ``(info, wall seconds, CPU seconds of the child)``."""
    import shutil
    from dataclasses import asdict

    work.mkdir(parents=True, exist_ok=True)
    path = work / "examples.parquet"
    df.to_parquet(path, index=False)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(path), str(work), str(base),
           json.dumps(asdict(config))]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    (work / "log.txt").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        raise RuntimeError(f"run_experiment exited {proc.returncode}: {proc.stderr.strip().splitlines()[-3:]}")
    info = json.loads((work / "info.json").read_text(encoding="utf-8"))
    shutil.rmtree(work / "model", ignore_errors=True)
    shutil.rmtree(work / "work", ignore_errors=True)
    return info, wall, cpu


# --------------------------------------------------------------------------- the run

class Run:
    """Rows, what was not run, the clock, and the JSON file (rewritten after every row)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.t0 = args, time.perf_counter()
        self.rows: list[dict] = []
        self.not_run: list[dict] = []
        self.info: dict = {}

    def minutes(self) -> float:
        return (time.perf_counter() - self.t0) / 60

    def left_s(self) -> float:
        return self.args.budget_minutes * 60 - (time.perf_counter() - self.t0)

    def say(self, msg: str) -> None:
        print(f"[{self.minutes():5.1f} min] {msg}", flush=True)

    def save(self) -> None:
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        doc = {**self.info, "wall_minutes": round(self.minutes(), 2), "rows": self.rows, "not_run": self.not_run}
        out.write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")

    def skip(self, setting: str, contender: str, seed: int, reason: str) -> None:
        self.not_run.append({"setting": setting, "contender": contender, "seed": seed, "reason": reason})
        self.say(f"{setting} seed {seed} {contender}: {reason}")
        self.save()

    def add_experiment(self, setting: str, seed: int, contender: str, info: dict, wall: float, cpu: float,
                       threads: int, budget_s: float | None) -> None:
        """The rows one run_experiment call gives: the GPT alone, its served choice (and TF-IDF for frozen)."""
        test = info["metrics"]["intent"]["test"]
        kind, w = info["served"]["intent"], info["ensemble_weight"]["intent"]
        by_kind = info.get("auto_answer_by_kind", {})
        tr = info["training"]
        common = {"setting": setting, "seed": seed, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                  "threads": threads, "train_s": tr.get("time_s"), "time_budget_s": budget_s,
                  "precision": tr.get("precision"), "split_sizes": info["data"]["split_sizes"]}
        extra = {"best_epoch": tr.get("best_epoch"), "epochs_run": len(tr.get("history") or []),
                 "tokens_per_s": tr.get("tokens_per_s"), "history": tr.get("history"), "frozen": tr.get("frozen"),
                 "trainable_parameters": info.get("trainable_parameters"), "parameters": info.get("parameters"),
                 "process": info.get("process")}
        new = [{**common, "contender": contender, **_scores(test["gpt"], by_kind.get("gpt")), "extra": extra},
               {**common, "contender": f"served_{contender}", "served": kind, "ensemble_weight": w,
                **_scores(test[kind], info.get("auto_answer"))}]
        if contender == "frozen":
            new.insert(0, {**common, "contender": "tfidf", **_scores(test["baseline"], by_kind.get("baseline")),
                           "note": "fitted inside the frozen run; time is that run's"})
        self.rows.extend(new)
        for r in new:
            srv = f" [{r['served']} w={r['ensemble_weight']:.2f}]" if r.get("served") else ""
            cov = "" if r["coverage"] is None else f", coverage@95 {r['coverage']:.3f} (test prec {r['coverage_precision']})"
            self.say(f"{setting} seed {seed} {r['contender']}: acc {r['accuracy']:.4f}, macro-F1 {r['macro_f1']:.4f}"
                     f"{cov}{srv}; wall {wall / 60:.1f} min, CPU {cpu / 60:.1f} min")
        self.save()


def _scores(m: dict, aa: dict | None) -> dict:
    aa = aa or {}
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "ece": m.get("ece"),
            "coverage": aa.get("test_coverage"), "coverage_precision": aa.get("test_precision"),
            "threshold": aa.get("threshold"), "val_coverage": aa.get("validation_coverage"),
            "val_precision": aa.get("validation_precision"), "auto_answer_reason": aa.get("reason")}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("NEWSPULSE_DATA_DIR", ROOT.parent / "shared" / "data")))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="10-shot seeds")
    ap.add_argument("--shots", type=int, default=10)
    ap.add_argument("--val-per-intent", type=int, default=3, help="10-shot validation rows per intent")
    ap.add_argument("--val-frac", type=float, default=0.1, help="full data: validation share of each intent's train rows")
    ap.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES)
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--max-length", type=int, default=128, help="frozen recipe text tokens (product default)")
    ap.add_argument("--preset-minutes", type=float, default=10.0, help="own GPT training budget, full data")
    ap.add_argument("--preset-shot-minutes", type=float, default=2.0, help="own GPT training budget, 10-shot")
    ap.add_argument("--preset-epochs", type=int, default=30)
    ap.add_argument("--lora-minutes", type=float, default=20.0, help="LoRA training budget, full data")
    ap.add_argument("--lora-shot-minutes", type=float, default=6.0, help="LoRA training budget, 10-shot")
    ap.add_argument("--lora-epochs", type=int, default=3)
    ap.add_argument("--lora-max-length", type=int, default=48)
    ap.add_argument("--lora-shot-seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--preset-shot-seeds", type=int, nargs="+", default=None, help="default: --seeds")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads per run (0: 1 or 2 by a probe per run)")
    ap.add_argument("--budget-minutes", type=float, default=90.0, help="deadline for starting runs")
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 train / 3 test rows per intent, tiny budgets")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "intents.json")
    ap.add_argument("--report-only", type=Path, nargs="+", default=None, metavar="JSON")
    args = ap.parse_args(argv)
    if args.preset_shot_seeds is None:
        args.preset_shot_seeds = list(args.seeds)
    if args.quick:
        args.seeds, args.lora_shot_seeds, args.preset_shot_seeds = args.seeds[:1], args.lora_shot_seeds[:1], args.seeds[:1]
        args.preset_minutes = args.preset_shot_minutes = 0.2
        args.lora_minutes = args.lora_shot_minutes = 0.3
        args.shots, args.preset_epochs, args.lora_epochs = 5, 2, 1
        if args.out == ROOT / "bench" / "results" / "intents.json":
            args.out = ROOT / "bench" / "results" / "intents_quick.json"
    return args


def machine_info() -> dict:
    import torch

    flags = set()
    model = ""
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for ln in f:
            if ln.startswith("flags"):
                flags |= set(ln.split(":", 1)[1].split())
            elif ln.startswith("model name") and not model:
                model = ln.split(":", 1)[1].strip()
    return {"cpu": model, "cores": os.cpu_count(), "amx": sorted(f for f in flags if f.startswith("amx")),
            "avx512_bf16": "avx512_bf16" in flags, "avx512f": "avx512f" in flags, "platform": platform.platform(),
            "torch": torch.__version__, "python": platform.python_version(), "load_avg_at_start": os.getloadavg()}


def main(argv: list[str] | None = None) -> None:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    args = parse_args(argv)
    if args.report_only:
        report(args.report_only)
        return
    from bench.quality_contenders import pick_threads
    from models.catalogue import resolve
    from models.precision import cpu_precision
    from models.train import TrainConfig
    from core.settings import get_settings

    settings = get_settings()
    run = Run(args)
    work = args.work or Path(tempfile.mkdtemp(prefix="np-intents-"))
    probe = cpu_precision(settings.precision_cache)
    precision = probe.precision
    base_dir = resolve(args.backbone, settings.backbones_dir, settings.runs_dir).ref
    train, test = load_banking77(args.data_dir)
    if args.quick:
        train, test = subsample_quick(train, test)
    kw = {"shots": args.shots, "val_per_intent": args.val_per_intent, "val_frac": args.val_frac}
    splits = {("full", 0): make_split(train, test, "full", 0, **kw)}
    for s in sorted(set(args.seeds) | set(args.lora_shot_seeds) | set(args.preset_shot_seeds)):
        splits[("10-shot", s)] = make_split(train, test, "10-shot", s, **kw)
    run.info = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine_info(),
                "precision": {"used": precision, "probe": probe.__dict__}, "backbone": base_dir,
                "args": {k: str(v) for k, v in vars(args).items()}, "quick": args.quick, "threads": [],
                "split_sizes": {f"{k[0]} seed {k[1]}": df.split.value_counts().to_dict() for k, df in splits.items()}}
    run.say(f"precision {precision} (probe bf16 {probe.bf16_gflops} vs fp32 {probe.fp32_gflops} GFLOP/s); "
            f"backbone {base_dir}; work {work}; machine {run.info['machine']}")
    run.save()

    def threads(label: str) -> int:
        n = args.threads or pick_threads()
        run.info["threads"].append({"run": label, "threads": n, "minute": round(run.minutes(), 1),
                                    "load_avg_1min": round(os.getloadavg()[0], 2)})
        return n

    def wall_of(setting: str, contender: str) -> float | None:
        hit = [r["wall_s"] for r in run.rows if (r["setting"], r["contender"]) == (setting, contender)]
        return hit[0] if hit else None

    def overhead_s(setting: str, contender: str) -> float:
        """Seconds besides the training budget, from what this run measured (frozen wall ~ scoring passes)."""
        frozen = wall_of(setting, "frozen")
        if frozen is None:
            return 300.0 if setting == "full" else 120.0
        feat = next(r["extra"]["frozen"]["feature_seconds"] for r in run.rows
                    if (r["setting"], r["contender"]) == (setting, "frozen"))
        rest = frozen - feat  # load + TF-IDF fit + select/test scoring
        return rest + 30 if contender == "preset" else rest + 0.6 * feat + 60

    def do(setting: str, seed: int, contender: str) -> None:
        df = splits[(setting, seed)]
        if contender == "frozen":
            budget = None
            cfg = TrainConfig(recipe="frozen", seed=seed, max_length=args.max_length, precision=precision)
            base = base_dir
        else:
            full = 60 * {("preset", "full"): args.preset_minutes, ("preset", "10-shot"): args.preset_shot_minutes,
                         ("lora", "full"): args.lora_minutes, ("lora", "10-shot"): args.lora_shot_minutes}[(contender, setting)]
            over = overhead_s(setting, contender)
            budget = min(full, run.left_s() - over)
            if budget < min(full, 60 if setting == "10-shot" else 120):
                run.skip(setting, contender, seed, f"not run (CPU budget: {run.left_s() / 60:.1f} min left, "
                                                   f"needs {(full + over) / 60:.1f})")
                return
            if contender == "preset":
                cfg = TrainConfig(recipe="full", epochs=args.preset_epochs, seed=seed, prompt="",
                                  time_budget_s=budget, precision=precision)
                base = args.preset
            else:
                cfg = TrainConfig(recipe="lora", lm_weight=0.0, epochs=args.lora_epochs, seed=seed,
                                  max_length=args.lora_max_length, precision=precision, time_budget_s=budget)
                base = base_dir
        if contender == "frozen" and run.left_s() < 60:
            run.skip(setting, contender, seed, "not run (CPU budget)")
            return
        n = threads(f"{contender} {setting} seed {seed}")
        run.say(f"{setting} seed {seed} {contender}: start ({n} thread(s), training budget {budget} s)")
        try:
            info, wall, cpu = experiment(df, work / contender / setting.replace("-", "") / f"seed{seed}", base, cfg, n)
        except Exception as e:  # noqa: BLE001 - one failed contender must not lose the others
            traceback.print_exc()
            run.skip(setting, contender, seed, f"failed: {type(e).__name__}: {e}"[:300])
            return
        run.add_experiment(setting, seed, contender, info, wall, cpu, n, budget)

    plan = []
    if "frozen_full" in args.phases:
        plan.append(("full", 0, "frozen"))
    if "frozen_shot" in args.phases:
        plan += [("10-shot", s, "frozen") for s in args.seeds]
    if "preset_full" in args.phases:
        plan.append(("full", 0, "preset"))
    if "preset_shot" in args.phases:
        plan += [("10-shot", s, "preset") for s in args.preset_shot_seeds]
    if "lora_full" in args.phases:
        plan.append(("full", 0, "lora"))
    if "lora_shot" in args.phases:
        plan += [("10-shot", s, "lora") for s in args.lora_shot_seeds]
    for setting, seed, contender in plan:
        do(setting, seed, contender)
    run.info["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    run.save()
    run.say(f"done; results in {args.out}")
    report([args.out])


# --------------------------------------------------------------------------- report

def _agg(values: list[float | None]) -> str:
    v = np.array([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return "-"
    if v.size == 1:
        return f"{v[0]:.3f}"
    return f"{v.mean():.3f} ({v.min():.3f}-{v.max():.3f})"


def summarize(rows: list[dict], not_run: list[dict]) -> list[dict]:
    """One line per setting x contender: mean and range over seeds, CPU minutes per seed."""
    out = []
    for setting in ("full", "10-shot"):
        for key in CONTENDERS:
            rs = sorted((r for r in rows if (r["setting"], r["contender"]) == (setting, key)), key=lambda r: r["seed"])
            skipped = [n for n in not_run if (n["setting"], n["contender"]) == (setting, key.removeprefix("served_"))]
            if not rs:
                if skipped:
                    out.append({"setting": setting, "contender": key, "seeds": [], "note": skipped[0]["reason"]})
                continue
            acc = [r["accuracy"] for r in rs]
            line = {"setting": setting, "contender": key, "seeds": [r["seed"] for r in rs],
                    "accuracy": _agg(acc), "macro_f1": _agg([r["macro_f1"] for r in rs]),
                    "coverage": _agg([_coverage(r) for r in rs]),
                    "coverage_precision": _agg([r["coverage_precision"] for r in rs]),
                    "cpu_min": float(np.mean([r["cpu_s"] for r in rs])) / 60,
                    "wall_min": float(np.mean([r["wall_s"] for r in rs])) / 60,
                    "threads": sorted({r["threads"] for r in rs}),
                    "served": [f"{r['served']} w={r['ensemble_weight']:.2f}" for r in rs] if r_has(rs, "served") else None,
                    "accuracy_mean": float(np.mean(acc)),
                    "target": f">= {TARGETS[setting]:.2f} {'met' if np.mean(acc) >= TARGETS[setting] else 'not met'}",
                    "not_run_seeds": [n["seed"] for n in skipped]}
            out.append(line)
    return out


def _coverage(r: dict) -> float | None:
    """Test coverage at the tuned threshold; 0 when no threshold reached 95 % on validation (never auto-answers)."""
    if r.get("coverage") is None and r.get("threshold") is None and r.get("auto_answer_reason"):
        return 0.0
    return r.get("coverage")


def r_has(rs: list[dict], key: str) -> bool:
    return any(r.get(key) for r in rs)


def report(paths: list[Path]) -> list[dict]:
    """Print the table of one or more result files (merged), as markdown."""
    rows, not_run, docs = [], [], []
    for p in paths:
        d = json.loads(Path(p).read_text(encoding="utf-8"))
        docs.append(d)
        rows += d["rows"]
        not_run += d["not_run"]
    summary = summarize(rows, not_run)
    print("| data | contender | seeds | test accuracy | macro-F1 | coverage @95% prec. (test prec.) | CPU min / run "
          "(wall) | served | target (acc) |")
    print("|---|---|---|---:|---:|---:|---:|---|---|")
    for s in summary:
        if "note" in s:
            print(f"| {s['setting']} | {CONTENDERS[s['contender']]} | - | {s['note']} | | | | | |")
            continue
        seeds = ",".join(map(str, s["seeds"])) + (" only" if s["not_run_seeds"] else "")
        served = ", ".join(s["served"]) if s["served"] else ""
        print(f"| {s['setting']} | {CONTENDERS[s['contender']]} | {seeds} | {s['accuracy']} | {s['macro_f1']} | "
              f"{s['coverage']} ({s['coverage_precision']}) | {s['cpu_min']:.1f} ({s['wall_min']:.1f}) | {served} | "
              f"{s['target']} |")
    for d in docs:
        print(f"{d.get('started')}: wall {d.get('wall_minutes')} min, precision {d.get('precision', {}).get('used')}, "
              f"machine {d.get('machine', {}).get('cpu')} amx={d.get('machine', {}).get('amx')} "
              f"avx512_bf16={d.get('machine', {}).get('avx512_bf16')}, threads {[t['threads'] for t in d.get('threads', [])]}")
    for r in rows:
        if r["contender"] in ("preset", "lora"):
            e = r["extra"]
            print(f"{r['contender']} {r['setting']} seed {r['seed']}: budget {r['time_budget_s']} s, "
                  f"{e['epochs_run']} epoch(s) begun, best {e['best_epoch']}, {e['tokens_per_s']} training tokens/s")
    return summary


if __name__ == "__main__":
    main()
