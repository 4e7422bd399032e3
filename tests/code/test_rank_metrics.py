"""MIND ranking metrics (models.rank_metrics) against hand-computed impressions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.rank_metrics import auc, evaluate_impressions, mrr, ndcg

# The worked example: labels [0, 1, 0, 1], scores [.1, .9, .3, .2].
# Ranked by score (desc): candidate 1 (.9, click), 2 (.3), 3 (.2, click), 0 (.1) -> labels [1, 0, 1, 0].
# AUC: 2 clicks x 2 non-clicks = 4 pairs; .9 beats .1 and .3, .2 beats .1 but not .3 -> 3/4.
# MRR: clicks at ranks 1 and 3 -> (1/1 + 1/3) / 2 = 2/3.
# nDCG@2: DCG = (2^1-1)/log2(2) + 0 = 1; ideal [1, 1] = 1 + 1/log2(3) -> 1 / (1 + 1/log2 3) = 0.6131.
# nDCG@4: DCG = 1 + 1/log2(4) = 1.5; ideal = 1 + 1/log2(3) -> 1.5 / 1.6309 = 0.9197.
LABELS = np.array([0, 1, 0, 1])
SCORES = np.array([0.1, 0.9, 0.3, 0.2])
IDEAL_2 = 1 + 1 / math.log2(3)


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        (lambda y, s: auc(y, s), 0.75),
        (lambda y, s: mrr(y, s), 2 / 3),
        (lambda y, s: ndcg(y, s, 2), 1 / IDEAL_2),
        (lambda y, s: ndcg(y, s, 4), 1.5 / IDEAL_2),
        (lambda y, s: ndcg(y, s, 1), 1.0),  # the top candidate is a click
    ],
    ids=["auc", "mrr", "ndcg@2", "ndcg@4", "ndcg@1"],
)
def test_worked_example(metric, expected: float) -> None:
    assert metric(LABELS, SCORES) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("labels", "scores", "auc_", "mrr_", "ndcg3"),
    [
        # perfect ranking: AUC and nDCG are 1; MRR is 1 with one click...
        ([1, 0, 0], [0.9, 0.5, 0.1], 1.0, 1.0, 1.0),
        # ...but MIND's MRR averages 1/rank over all clicks: ranks 1 and 2 -> (1 + 1/2) / 2 = 0.75
        ([0, 1, 1, 0], [0.2, 0.8, 0.7, 0.1], 1.0, 0.75, 1.0),
        # reversed: the click is last of 3 -> AUC 0, MRR 1/3, nDCG@3 = (1/log2 4) / 1 = 0.5
        ([1, 0, 0], [0.1, 0.2, 0.3], 0.0, 1 / 3, 0.5),
        # ties keep candidate order (stable sort on -score): click second -> MRR 1/2, AUC counts 1/2
        ([0, 1], [0.5, 0.5], 0.5, 0.5, 1 / math.log2(3)),
        ([1, 0], [0.5, 0.5], 0.5, 1.0, 1.0),
    ],
)
def test_table(labels: list[int], scores: list[float], auc_: float, mrr_: float, ndcg3: float) -> None:
    y, s = np.array(labels), np.array(scores)
    assert auc(y, s) == pytest.approx(auc_)
    assert mrr(y, s) == pytest.approx(mrr_)
    assert ndcg(y, s, 3) == pytest.approx(ndcg3)


def test_ndcg_graded_gains() -> None:
    # labels [0, 2, 1] ranked as given: gains 2^rel - 1 = [0, 3, 1] at ranks 1..3
    # DCG = 0/log2 2 + 3/log2 3 + 1/log2 4; ideal order [2, 1, 0]: 3/log2 2 + 1/log2 3.
    dcg = 3 / math.log2(3) + 1 / 2
    ideal = 3 + 1 / math.log2(3)
    assert ndcg(np.array([0, 2, 1]), np.array([3.0, 2.0, 1.0]), 3) == pytest.approx(dcg / ideal)


def _official(y: np.ndarray, s: np.ndarray, k: int) -> tuple[float, float]:
    """The recommenders / MIND scorer formulas verbatim (argsort()[::-1]): MRR and nDCG@k.

    The ideal DCG sorts the labels themselves; the order among equal labels cannot change it.
    """
    order = np.argsort(s)[::-1]
    yy = np.take(y, order)
    mrr_ = np.sum(yy / (np.arange(len(yy)) + 1)) / np.sum(yy)

    def dcg(score: np.ndarray) -> float:
        o = np.argsort(score)[::-1]
        t = np.take(y, o[:k])
        return np.sum((2**t - 1) / np.log2(np.arange(len(t)) + 2))

    return float(mrr_), float(dcg(s) / dcg(y))


def test_matches_official_formulas_on_random_impressions() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 30))
        y = (rng.random(n) < 0.3).astype(np.int64)
        y[rng.integers(n)] = 1
        s = rng.random(n)  # distinct with probability 1, so tie handling does not matter
        ref_mrr, ref_ndcg10 = _official(y, s, 10)
        assert mrr(y, s) == pytest.approx(ref_mrr)
        assert ndcg(y, s, 10) == pytest.approx(ref_ndcg10)


def test_evaluate_impressions_means_and_skips() -> None:
    labels = [LABELS, np.array([1, 0, 0]), np.array([0, 0, 0]), np.array([1, 1])]
    scores = [SCORES, np.array([0.9, 0.5, 0.1]), np.array([0.3, 0.2, 0.1]), np.array([0.5, 0.4])]
    out = evaluate_impressions(labels, scores)
    # all-0 and all-1 impressions are skipped; the mean is over the worked example and a perfect one
    assert out["impressions"] == 2 and out["skipped"] == 2
    assert out["auc"] == pytest.approx((0.75 + 1.0) / 2)
    assert out["mrr"] == pytest.approx((2 / 3 + 1.0) / 2)
    # nDCG@5 = nDCG@10 = full-list nDCG here (4 and 3 candidates): (1.5/IDEAL_2 + 1) / 2
    assert out["ndcg@5"] == pytest.approx((1.5 / IDEAL_2 + 1.0) / 2)
    assert out["ndcg@10"] == pytest.approx(out["ndcg@5"])


def test_evaluate_impressions_nothing_usable() -> None:
    out = evaluate_impressions([np.array([0, 0])], [np.array([0.1, 0.2])])
    assert out["impressions"] == 0 and out["skipped"] == 1 and math.isnan(out["auc"])


def test_errors() -> None:
    with pytest.raises(ValueError):
        mrr(np.array([0, 0]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError):
        ndcg(np.array([0, 0]), np.array([0.1, 0.2]), 5)
    with pytest.raises(ValueError):
        evaluate_impressions([LABELS], [SCORES[:3]])
