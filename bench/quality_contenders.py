"""The contenders of ``bench/quality.py``, each scored on one benchmark split.

Every function returns a :class:`Score` (test macro-F1 / accuracy, wall seconds, golden-set figures
when the head is sentiment, and what else is worth keeping) and calls only product code:

* :func:`tfidf`: :class:`models.baseline.TfidfLogReg`, ``C`` and class weighting on ``tune``;
* :func:`frozen_features` once per benchmark, then :func:`frozen_head` per seed: the product's
  frozen recipe (:mod:`models.frozen`) with the features of each text computed once;
* :func:`served`: the product's decision (:func:`models.baseline.fit_ensemble_weight` on ``select``,
  then gpt / ensemble / baseline with :data:`models.experiment.MIN_GPT_WEIGHT`) for frozen + TF-IDF;
* :func:`experiment`: :func:`models.experiment.run_experiment` itself (the own preset GPT with
  recipe ``full``, the pretrained backbone with recipe ``lora``), which also decides what it serves.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.quality_data import Parts


@dataclass
class Score:
    """One contender on one benchmark and seed."""

    macro_f1: float
    accuracy: float
    seconds: float
    golden: dict[str, float] | None = None  # {"accuracy", "macro_f1"} on the golden set (sentiment only)
    served: str | None = None  # "gpt" | "ensemble w=0.55" | "baseline" for served rows
    extra: dict[str, Any] = field(default_factory=dict)


def metrics(y: list[str], probs: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, ECE and n of ``probs`` (the product's :func:`classification_metrics`)."""
    from models.evaluate import classification_metrics

    m = classification_metrics(y, probs, labels)
    return {k: m[k] for k in ("accuracy", "macro_f1", "ece", "n")}


def golden_figures(probs: np.ndarray, labels: list[str], golden: pd.DataFrame) -> dict[str, float]:
    """Accuracy and macro-F1 of sentiment ``probs`` (rows in golden order, columns in ``labels``)."""
    from models.golden_set import golden_scores

    return golden_scores({"m": probs}, labels, golden)["m"]


# --------------------------------------------------------------------------- CPU threads

_BLAS_LIMIT = None


def pick_threads(max_threads: int | None = None) -> int:
    """Use 1 or all cores for what follows, whichever a 2-second bf16 matmul probe finds faster now.

    On a 2-core machine shared with other jobs, two OpenMP threads per process oversubscribe the
    cores and every parallel region waits for a descheduled thread: we measured a SmolLM2 forward
    pass at 148 tokens/s with 2 threads and 1,119 with 1 while another model ran. Idle, 2 threads
    win (~2x). Sets torch's intra-op threads and the BLAS pools (threadpoolctl) to the choice.
    """
    import torch
    from threadpoolctl import threadpool_limits

    global _BLAS_LIMIT
    cores = max_threads or os.cpu_count() or 1
    x, w = torch.randn(1760, 576), torch.randn(576, 1536)  # one 32 x 55-token batch through an MLP

    def seconds(threads: int) -> float:
        torch.set_num_threads(threads)
        runs = []
        with torch.autocast("cpu", dtype=torch.bfloat16):
            for _ in range(3):
                t = time.perf_counter()
                for _ in range(10):
                    torch.nn.functional.silu(x @ w) @ w.T
                runs.append(time.perf_counter() - t)
        return sorted(runs)[1]

    timing = {n: seconds(n) for n in sorted({1, cores}, reverse=True)}
    best = min(timing, key=timing.get)
    torch.set_num_threads(best)
    _BLAS_LIMIT = threadpool_limits(limits=best)  # kept referenced: the limit holds until the next pick
    return best


# --------------------------------------------------------------------------- TF-IDF + LR

def tfidf(df: pd.DataFrame, parts: Parts, head: str, labels: list[str], golden: pd.DataFrame | None,
          seed: int) -> tuple[Score, dict[str, np.ndarray]]:
    """The baseline on one split; also returns its probabilities on select / test / golden for the ensemble."""
    from models.baseline import TfidfLogReg

    t0 = time.perf_counter()
    text, y = df.text.to_numpy(), df[head].to_numpy()
    model = TfidfLogReg(labels=labels).fit(text[parts.train].tolist(), y[parts.train].tolist(),
                                           text[parts.tune].tolist(), y[parts.tune].tolist())
    probs = {"select": model.predict_proba(text[parts.select].tolist()),
             "test": model.predict_proba(text[parts.test].tolist())}
    if golden is not None:
        probs["golden"] = model.predict_proba(golden.text.tolist())
    seconds = time.perf_counter() - t0
    m = metrics(y[parts.test].tolist(), probs["test"], labels)
    return Score(m["macro_f1"], m["accuracy"], seconds,
                 golden=golden_figures(probs["golden"], labels, golden) if golden is not None else None,
                 extra={"params": model.params, "tune_macro_f1": model.val_score, "ece": m["ece"],
                        "n_test": m["n"], "seed": seed}), probs


# --------------------------------------------------------------------------- frozen pretrained backbone

@dataclass
class Features:
    """Pooled multi-layer features of every text of a benchmark (and the golden set), computed once."""

    x: np.ndarray  # (N, k*d) in benchmark-frame order
    golden: np.ndarray | None  # (180, k*d)
    seconds: float
    tokens: int
    precision: str
    max_length: int
    pool_layers: list[int]

    @property
    def tokens_per_s(self) -> float:
        """Forward-pass throughput of the feature extraction (prompt + text tokens, no padding)."""
        return self.tokens / max(self.seconds, 1e-9)


def load_frozen_model(base_dir: str, prompt: str):
    """The pretrained backbone with (untrained) heads reading ``multilayer`` pooled, prompted features."""
    from models.backbone import load_backbone, num_layers
    from models.frozen import FROZEN_POOLING
    from models.multihead import HeadsConfig, from_backbone, multilayer
    from models.tokenizer import load_tokenizer

    tok = load_tokenizer(base_dir)
    lm = load_backbone(base_dir, tok)
    heads = HeadsConfig(pool_layers=multilayer(num_layers(lm.config)), recipe="frozen", prompt=prompt,
                        pooling=FROZEN_POOLING)
    model = from_backbone(lm, heads)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), tok


def frozen_features(model, tok, texts: list[str], golden: pd.DataFrame | None, *, max_length: int,
                    precision: str, cache: dict[str, np.ndarray] | None = None, chunk: int = 1024) -> Features:
    """:func:`models.frozen.extract_features` for ``texts`` (+ the golden set), each distinct text once.

    ``cache`` (text -> feature row) may carry rows computed before; new rows are added to it. The
    bench gives every benchmark a fresh cache so that its feature time is its own. Texts go through
    in chunks of ``chunk``, each after :func:`pick_threads` (length bucketing is per chunk).
    """
    from models.frozen import extract_features

    cache = {} if cache is None else cache
    t0 = time.perf_counter()
    wanted = list(texts) + (golden.text.tolist() if golden is not None else [])
    todo = [t for t in dict.fromkeys(wanted) if t not in cache]  # distinct, first-seen order
    tokens = 0
    for start in range(0, len(todo), chunk):  # re-pick the thread count per chunk: other jobs come and go
        part = todo[start:start + chunk]
        pick_threads()
        feats, n_tokens = extract_features(model, tok, part, max_length=max_length, precision=precision)
        cache.update(zip(part, feats))
        tokens += n_tokens
    x = np.stack([cache[t] for t in texts])
    g = np.stack([cache[t] for t in golden.text]) if golden is not None else None
    return Features(x, g, time.perf_counter() - t0, tokens, precision, max_length, list(model.heads.pool_layers))


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def frozen_head(df: pd.DataFrame, parts: Parts, head: str, labels: list[str], feats: Features,
                golden: pd.DataFrame | None, seed: int) -> tuple[Score, dict[str, np.ndarray]]:
    """The frozen recipe's logistic head on one split (``C`` on tune, as ``fit_frozen`` picks it).

    The head is :func:`models.frozen.fit_head` (standardisation folded into the weights); it is
    applied here to the cached features in float32 instead of inside the model under autocast.
    """
    from models.frozen import fit_head
    from models.train import encode_labels

    t0 = time.perf_counter()
    y = encode_labels(df[head], labels)
    w, b, info = fit_head(feats.x[parts.train], y[parts.train], feats.x[parts.tune], y[parts.tune], len(labels), seed)
    prob = lambda x: _softmax(x @ w.T + b)  # noqa: E731
    probs = {"select": prob(feats.x[parts.select]), "test": prob(feats.x[parts.test])}
    if golden is not None:
        probs["golden"] = prob(feats.golden)
    seconds = time.perf_counter() - t0
    m = metrics(df[head].to_numpy()[parts.test].tolist(), probs["test"], labels)
    return Score(m["macro_f1"], m["accuracy"], seconds,
                 golden=golden_figures(probs["golden"], labels, golden) if golden is not None else None,
                 extra={"C": info["C"], "tune_macro_f1": info["val_macro_f1"], "ece": m["ece"], "n_test": m["n"],
                        "head_seconds": round(seconds, 2)}), probs


# --------------------------------------------------------------------------- served choice

def served(df: pd.DataFrame, parts: Parts, head: str, labels: list[str], gpt: dict[str, np.ndarray],
           base: dict[str, np.ndarray], golden: pd.DataFrame | None, seconds: float) -> Score:
    """What the product serves from a GPT and the baseline, decided on ``select`` as ``run_experiment`` does.

    The mix weight ``w`` maximises select macro-F1 (:func:`fit_ensemble_weight`); ``w`` below
    ``MIN_GPT_WEIGHT`` serves the baseline, else the ensemble if it beats the GPT alone on select
    (and ``w < 1``), else the GPT. ``seconds`` is the cost of what it is made of.
    """
    from models.baseline import fit_ensemble_weight
    from models.experiment import MIN_GPT_WEIGHT

    t0 = time.perf_counter()
    y = df[head].to_numpy()
    y_sel = y[parts.select].tolist()
    w, _ = fit_ensemble_weight(gpt["select"], base["select"], np.array([labels.index(v) for v in y_sel]))
    if w < MIN_GPT_WEIGHT:
        kind = "baseline"
    else:
        ens = metrics(y_sel, w * gpt["select"] + (1 - w) * base["select"], labels)["macro_f1"]
        alone = metrics(y_sel, gpt["select"], labels)["macro_f1"]
        kind = "ensemble" if ens > alone and w < 1 else "gpt"
    mix = {"gpt": 1.0, "baseline": 0.0}.get(kind, w)
    test = metrics(y[parts.test].tolist(), mix * gpt["test"] + (1 - mix) * base["test"], labels)
    gold = (golden_figures(mix * gpt["golden"] + (1 - mix) * base["golden"], labels, golden)
            if golden is not None else None)
    return Score(test["macro_f1"], test["accuracy"], seconds + time.perf_counter() - t0, golden=gold,
                 served=served_label(kind, w), extra={"kind": kind, "weight": w, "ece": test["ece"]})


def served_label(kind: str, weight: float) -> str:
    """``gpt``, ``baseline`` or ``ensemble w=0.55`` (the registry's wording, compact)."""
    return f"ensemble w={weight:.2f}" if kind == "ensemble" else kind


# --------------------------------------------------------------------------- run_experiment contenders

def experiment(df: pd.DataFrame, head: str, work: Path, base: str, config, threads: int
               ) -> tuple[Score, Score, dict[str, Any]]:
    """:func:`models.experiment.run_experiment` on one split: ``(gpt alone, served, info)``.

    Run through the product's own command line (``python -m models.experiment``, which writes
    ``info.json``) in a fresh process with ``threads`` CPU threads: each run gets all its memory back
    (a SmolLM2 LoRA run peaks at ~7 GB resident), a crash stays in its process, and no process-wide
    state (accelerate's mixed-precision singleton: fp32 preset, then bf16 LoRA) carries over.
    The seconds are the whole call (start-up, backbone load, training, its own TF-IDF fit, scoring
    select, test and the golden set). The model directory is deleted afterwards (a LoRA run writes
    the 540 MB base LM next to its adapters).
    """
    import json
    import subprocess
    import sys
    from dataclasses import asdict

    work.mkdir(parents=True, exist_ok=True)
    path = work / "examples.parquet"
    df.to_parquet(path, index=False)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads), "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-m", "models.experiment", str(path), str(work), "--base", str(base),
           "--config", json.dumps(asdict(config))]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    (work / "log.txt").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        raise RuntimeError(f"run_experiment exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
    info = json.loads((work / "info.json").read_text(encoding="utf-8"))
    shutil.rmtree(work / "model", ignore_errors=True)
    shutil.rmtree(work / "work", ignore_errors=True)
    test = info["metrics"][head]["test"]
    kind, w = info["served"][head], info["ensemble_weight"][head]
    gold = info.get("golden")
    training = info["training"]
    extra = {"train_seconds": training["time_s"], "tokens_per_s": training.get("tokens_per_s"),
             "best_epoch": training.get("best_epoch"), "threads": threads,
             "epochs_run": len(training.get("history") or []), "history": training.get("history"),
             "baseline_test_macro_f1": test["baseline"]["macro_f1"], "ece": test["gpt"]["ece"],
             "n_test": test["gpt"]["n"], "trainable_parameters": info.get("trainable_parameters")}
    gpt = Score(test["gpt"]["macro_f1"], test["gpt"]["accuracy"], seconds,
                golden=gold["gpt"] if gold else None, extra=extra)
    srv = Score(test[kind]["macro_f1"], test[kind]["accuracy"], seconds, golden=gold["served"] if gold else None,
                served=served_label(kind, w), extra={"kind": kind, "weight": w, "ece": test[kind]["ece"]})
    return gpt, srv, info
