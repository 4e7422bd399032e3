"""Per-impression ranking metrics, as in MIND's official evaluation (Wu et al. 2020).

The formulas are those of the MIND scorer / recommenders' ``cal_metric`` (group AUC, MRR,
nDCG@5, nDCG@10): each metric is computed inside one impression (the candidates one user was
shown, 0/1 clicks) and then averaged over impressions.

Ties: candidates are ranked by a *stable* sort on ``-score``, so equal scores keep their
candidate order (the first shown ranks first). The official scorer uses
``np.argsort(score)[::-1]``, whose order among ties is unspecified; with distinct scores the two
agree exactly. AUC (sklearn) counts a tied positive/negative pair as one half, whatever the order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score


def _rank_order(scores: np.ndarray) -> np.ndarray:
    """Candidate indices, best first; ties keep candidate order (stable sort on -score)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of one impression (raises ``ValueError`` unless both 0 and 1 labels occur)."""
    return float(roc_auc_score(np.asarray(labels), np.asarray(scores, dtype=np.float64)))


def mrr(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean reciprocal rank of the clicks: ``sum(labels[order] / rank) / sum(labels)``, rank from 1."""
    y = np.asarray(labels, dtype=np.float64)[_rank_order(scores)]
    if y.sum() <= 0:
        raise ValueError("mrr needs at least one positive label")
    return float(np.sum(y / np.arange(1, len(y) + 1)) / y.sum())


def _dcg(labels: np.ndarray, order: np.ndarray, k: int) -> float:
    """DCG@k of ``labels`` ranked by ``order``: gains 2**rel - 1, discounts log2(rank + 1)."""
    y = np.asarray(labels, dtype=np.float64)[order[:k]]
    return float(np.sum((2.0**y - 1.0) / np.log2(np.arange(1, len(y) + 1) + 1.0)))


def ndcg(labels: np.ndarray, scores: np.ndarray, k: int) -> float:
    """nDCG@k: DCG@k of the ranking by ``scores`` over the ideal DCG@k (ranking by ``labels``)."""
    ideal = _dcg(labels, _rank_order(labels), k)
    if ideal <= 0:
        raise ValueError("ndcg needs at least one positive label")
    return _dcg(labels, _rank_order(scores), k) / ideal


def evaluate_impressions(labels: Sequence[np.ndarray], scores: Sequence[np.ndarray]) -> dict[str, float]:
    """Mean AUC, MRR, nDCG@5 and nDCG@10 over impressions (MIND's metrics).

    ``labels[i]`` (0/1) and ``scores[i]`` are the candidates of impression ``i``. Impressions whose
    labels are all 0 or all 1 have no AUC and are skipped; ``impressions`` counts those used and
    ``skipped`` those left out. With none used, every metric is NaN. Ties: see the module
    docstring (stable sort on -score, candidate order breaks ties).
    """
    if len(labels) != len(scores):
        raise ValueError(f"{len(labels)} label arrays but {len(scores)} score arrays")
    rows: list[tuple[float, float, float, float]] = []
    for y, s in zip(labels, scores, strict=True):
        y, s = np.asarray(y), np.asarray(s)
        if y.shape != s.shape:
            raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape")
        n_pos = int((y > 0).sum())
        if n_pos == 0 or n_pos == len(y):
            continue
        rows.append((auc(y, s), mrr(y, s), ndcg(y, s, 5), ndcg(y, s, 10)))
    means = np.mean(np.asarray(rows), axis=0) if rows else np.full(4, np.nan)
    return {
        "auc": float(means[0]),
        "mrr": float(means[1]),
        "ndcg@5": float(means[2]),
        "ndcg@10": float(means[3]),
        "impressions": len(rows),
        "skipped": len(labels) - len(rows),
    }
