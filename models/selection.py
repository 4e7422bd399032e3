"""The champion gate: candidate and champion scored on the same rows, promoted only past a margin.

A promotion compares two models on **the same current validation rows** (the candidate's
``select`` half, which neither its early stopping nor its hyper-parameters saw), so a new label
that changes the split does not block promotion forever: the champion is simply re-scored on the
new rows. The margin is not 0.0 but comes from a **paired bootstrap** over those rows: both
models' macro-F1 are recomputed on the same resamples, and the candidate must win in at least
``1 - alpha`` of them (one-sided; ``alpha`` = 0.1 by default). On a few hundred rows that is
roughly +0.02 macro-F1, so noise alone does not move the champion back and forth.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _macro_f1_from_counts(tp: np.ndarray, n_pred: np.ndarray, n_true: np.ndarray) -> np.ndarray:
    """Macro-F1 over classes present in truth or predictions, per row of (B, C) count matrices."""
    denom = n_pred + n_true
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    present = denom > 0
    return (f1 * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)


def paired_bootstrap(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_classes: int,
                     n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """Macro-F1 of ``a`` minus ``b`` on the same rows, with its paired bootstrap distribution.

    ``y``, ``pred_a``, ``pred_b`` are class ids (N,). Returns ``delta`` (observed), ``lo``/``hi``
    (5th/95th percentiles of the resampled difference) and ``p_better`` (share of resamples where
    ``a`` wins).
    """
    y, pred_a, pred_b = (np.asarray(v, dtype=np.int64) for v in (y, pred_a, pred_b))
    n = len(y)
    if n == 0:
        raise ValueError("no rows to compare the models on")
    eye = np.eye(n_classes, dtype=np.float64)
    true_1h = eye[y]  # (N, C)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n))
    weights = np.stack([np.bincount(row, minlength=n) for row in draws]).astype(np.float64)  # (B, N)
    weights = np.vstack([np.ones(n), weights])  # row 0: the observed sample

    def scores(pred: np.ndarray) -> np.ndarray:
        pred_1h = eye[pred]
        tp = weights @ (pred_1h * true_1h)
        return _macro_f1_from_counts(tp, weights @ pred_1h, weights @ true_1h)  # (B + 1,)

    diff = scores(pred_a) - scores(pred_b)
    boot = diff[1:]
    return {"delta": float(diff[0]), "lo": float(np.percentile(boot, 5)), "hi": float(np.percentile(boot, 95)),
            "p_better": float((boot > 0).mean()), "rows": n}


def gate(candidate: dict[str, tuple[np.ndarray, np.ndarray]], champion: dict[str, tuple[np.ndarray, np.ndarray]],
         labels: dict[str, list[str]], alpha: float = 0.1, seed: int = 0) -> tuple[bool, str, dict[str, Any]]:
    """Decide a promotion from both models' predictions on the same labelled rows.

    ``candidate[head]`` and ``champion[head]`` are ``(y, pred)`` class-id arrays over the same rows;
    heads only one model has, or with different label sets, are left out. Rows are pooled across
    the compared heads by averaging their bootstrap differences. Returns
    ``(promote, reason, evidence)``.
    """
    heads = [h for h in candidate if h in champion and len(candidate[h][0])]
    if not heads:
        return False, ("Not promoted: candidate and champion share no head with the same labels, so they "
                       "cannot be compared on the same rows."), {}
    evidence = {h: paired_bootstrap(candidate[h][0], candidate[h][1], champion[h][1], len(labels[h]), seed=seed)
                for h in heads}
    delta = float(np.mean([e["delta"] for e in evidence.values()]))
    p_better = float(np.mean([e["p_better"] for e in evidence.values()]))
    rows = sum(e["rows"] for e in evidence.values())
    where = f"on the same {rows} validation rows ({', '.join(heads)})"
    if delta > 0 and p_better >= 1 - alpha:
        return True, (f"Promoted: macro-F1 {delta:+.4f} over the champion {where}; the candidate wins in "
                      f"{p_better:.0%} of paired bootstrap resamples (needed {1 - alpha:.0%})."), evidence
    return False, (f"Not promoted: macro-F1 {delta:+.4f} against the champion {where}; the candidate wins in "
                   f"{p_better:.0%} of paired bootstrap resamples, fewer than the {1 - alpha:.0%} needed."), evidence
