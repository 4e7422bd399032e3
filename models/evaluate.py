"""Evaluation helpers: classification metrics, calibration, confusion-matrix plots, markdown tables.

Everything works on plain label strings and probability arrays (columns in ``labels`` order), so
the GPT heads, the TF-IDF baseline and their ensemble are scored by exactly the same code.
Plots use matplotlib's Agg canvas directly (no pyplot state, safe in worker threads).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import classification_report, confusion_matrix, f1_score

DEFAULT_ECE_BINS = 15


def expected_calibration_error(
    y_true_idx: np.ndarray, probs: np.ndarray, n_bins: int = DEFAULT_ECE_BINS
) -> float:
    """Expected calibration error of the top-class probability.

    Rows are put in ``n_bins`` equal-width bins ``(lo, hi]`` over the max probability; the ECE is
    the support-weighted mean of ``|accuracy(bin) - mean confidence(bin)|``. 0 means perfectly
    calibrated. Returns NaN for zero rows.
    """
    y = np.asarray(y_true_idx).reshape(-1)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"probs must be (n, k) with n = len(y_true_idx): {p.shape} vs {y.shape}")
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    n = y.shape[0]
    if n == 0:
        return float("nan")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bin_idx = np.searchsorted(edges[1:-1], conf, side="left")  # (lo, hi] bins, 0 falls in bin 0
    ece = 0.0
    for b in range(n_bins):
        mask = bin_idx == b
        count = int(mask.sum())
        if count:
            ece += abs(float(correct[mask].mean()) - float(conf[mask].mean())) * count / n
    return float(ece)


def classification_metrics(
    y_true: Sequence[str], probs: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro/weighted F1, per-class report, confusion matrix and ECE of ``probs``.

    ``probs`` is ``(n, len(labels))`` with columns in ``labels`` order; the prediction is the
    argmax. Rows whose true label is not in ``labels`` (e.g. a missing label) are dropped and
    counted in ``n_ignored``. Macro-F1 averages over the labels that occur in the truth or in the
    predictions (a label never seen and never predicted has no defined F1 and is left out); the
    per-class report and the confusion matrix (rows = true, cols = predicted) cover all ``labels``.
    With no usable rows the scores are ``None``.
    """
    labels = [str(lab) for lab in labels]
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be unique, got {labels}")
    p = np.asarray(probs, dtype=np.float64)
    y_list = list(y_true)
    if p.ndim != 2 or p.shape != (len(y_list), len(labels)):
        raise ValueError(f"probs must have shape ({len(y_list)}, {len(labels)}), got {p.shape}")
    index = {lab: i for i, lab in enumerate(labels)}
    keep = np.array([y in index for y in y_list], dtype=bool)
    y_idx = np.array([index[y] for y in y_list if y in index], dtype=np.int64)
    p = p[keep]
    k = len(labels)
    out: dict[str, Any] = {"labels": labels, "n": int(y_idx.size), "n_ignored": int((~keep).sum())}
    if y_idx.size == 0:
        out.update(accuracy=None, macro_f1=None, weighted_f1=None, ece=None,
                   per_class={lab: {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
                              for lab in labels},
                   confusion_matrix=[[0] * k for _ in range(k)])
        return out
    pred = p.argmax(axis=1)
    present = sorted(set(y_idx.tolist()) | set(pred.tolist()))
    report = classification_report(
        y_idx, pred, labels=list(range(k)), target_names=labels, output_dict=True, zero_division=0
    )
    out["accuracy"] = float((pred == y_idx).mean())
    out["macro_f1"] = float(f1_score(y_idx, pred, labels=present, average="macro", zero_division=0))
    out["weighted_f1"] = float(
        f1_score(y_idx, pred, labels=present, average="weighted", zero_division=0)
    )
    out["per_class"] = {
        lab: {
            "precision": float(report[lab]["precision"]),
            "recall": float(report[lab]["recall"]),
            "f1": float(report[lab]["f1-score"]),
            "support": int(report[lab]["support"]),
        }
        for lab in labels
    }
    out["confusion_matrix"] = confusion_matrix(y_idx, pred, labels=list(range(k))).tolist()
    out["ece"] = expected_calibration_error(y_idx, p, DEFAULT_ECE_BINS)
    return out


def plot_confusion_matrix(
    cm: Sequence[Sequence[int]] | np.ndarray, labels: Sequence[str], path: Path, title: str
) -> Path:
    """Write a confusion-matrix PNG: colour = row-normalised rate (recall), text = raw counts.

    Rows are true labels, columns predicted. Figure size and font shrink with the number of
    classes so ~20 classes stay readable. Returns ``path``.
    """
    m = np.asarray(cm, dtype=np.int64)
    k = len(labels)
    if m.shape != (k, k):
        raise ValueError(f"cm must be {k}x{k} for {k} labels, got {m.shape}")
    row_sums = m.sum(axis=1, keepdims=True)
    rates = np.divide(m, row_sums, out=np.zeros(m.shape, dtype=np.float64), where=row_sums > 0)
    side = min(max(4.5, 0.55 * k + 2.5), 16.0)
    fontsize = 10 if k <= 6 else (8 if k <= 12 else (6 if k <= 25 else 4))
    fig = Figure(figsize=(side + 1.2, side), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ticks = np.arange(k)
    ax.set_xticks(ticks, labels=[str(lab) for lab in labels], rotation=45 if k > 3 else 0,
                  ha="right" if k > 3 else "center", fontsize=fontsize)
    ax.set_yticks(ticks, labels=[str(lab) for lab in labels], fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=11)
    # Counts in the cells while they stay legible; 77 intents are read by colour (off-diagonal dots).
    for i in range(k if k <= 25 else 0):
        for j in range(k):
            colour = "white" if rates[i, j] > 0.6 else "black"
            ax.text(j, i, str(int(m[i, j])), ha="center", va="center", color=colour,
                    fontsize=fontsize)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _cell(value: Any) -> str:
    """Format one markdown table cell (floats to 3 decimals, None/NaN as an em dash)."""
    if value is None:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return "—" if math.isnan(float(value)) else f"{float(value):.3f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def metrics_table(rows: list[dict[str, Any]]) -> str:
    """Render dict rows as a markdown table; columns are the union of keys in first-seen order."""
    if not rows:
        return "_no rows_"
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    lines = [
        "| " + " | ".join(_cell(c) for c in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)
