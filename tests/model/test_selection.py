"""The champion gate: paired bootstrap on the same rows, and what it refuses to decide."""

from __future__ import annotations

import numpy as np
import pytest

from models.selection import gate, paired_bootstrap

LABELS = {"sentiment": ["negative", "neutral", "positive"]}


def _preds(y: np.ndarray, accuracy: float, seed: int) -> np.ndarray:
    """Predictions right on ``accuracy`` of the rows, a wrong class elsewhere."""
    r = np.random.default_rng(seed)
    wrong = r.random(len(y)) > accuracy
    return np.where(wrong, (y + 1 + r.integers(0, 2, len(y))) % 3, y)


def test_bootstrap_sees_a_clear_winner_and_no_difference_in_noise() -> None:
    y = np.random.default_rng(0).integers(0, 3, 600)
    strong, weak = _preds(y, 0.9, 1), _preds(y, 0.7, 2)
    clear = paired_bootstrap(y, strong, weak, 3)
    assert clear["delta"] > 0.15 and clear["p_better"] == 1.0 and clear["lo"] > 0
    same = paired_bootstrap(y, strong, strong, 3)
    assert same["delta"] == 0 and same["p_better"] == 0.0


@pytest.mark.parametrize("acc_candidate, acc_champion, promoted", [
    (0.90, 0.70, True),   # clearly better: promoted
    (0.80, 0.80, False),  # the same model retrained: noise must not move the champion
    (0.70, 0.90, False),  # worse
])
def test_gate(acc_candidate: float, acc_champion: float, promoted: bool) -> None:
    y = np.random.default_rng(3).integers(0, 3, 300)
    cand = {"sentiment": (y, _preds(y, acc_candidate, 4))}
    champ = {"sentiment": (y, _preds(y, acc_champion, 4 if acc_candidate == acc_champion else 5))}
    ok, reason, evidence = gate(cand, champ, LABELS)
    assert ok is promoted, reason
    assert "same 300 validation rows" in reason and evidence["sentiment"]["rows"] == 300


def test_a_small_edge_on_few_rows_is_not_enough() -> None:
    y = np.random.default_rng(7).integers(0, 3, 40)
    champion = _preds(y, 0.75, 8)
    candidate = champion.copy()
    candidate[np.flatnonzero(candidate != y)[:1]] = y[np.flatnonzero(candidate != y)[:1]]  # one more right
    ok, reason, _ = gate({"sentiment": (y, candidate)}, {"sentiment": (y, champion)}, LABELS)
    assert not ok and "bootstrap" in reason


def test_no_shared_head_cannot_be_compared() -> None:
    y = np.zeros(10, dtype=int)
    ok, reason, _ = gate({"topic": (y, y)}, {"sentiment": (y, y)}, LABELS)
    assert not ok and "share no head" in reason
