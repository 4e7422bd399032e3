"""The shipped real-text golden set: shape, balance, and that no training input contains it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from models.golden_set import GOLDEN_CSV, LABELS, golden_scores, load_golden

REPO = Path(__file__).resolve().parents[2]


def test_golden_set_is_balanced_unique_and_realistic() -> None:
    df = load_golden()
    assert len(df) >= 150 and df.id.is_unique and df.text.is_unique
    counts = df.sentiment.value_counts()
    assert set(counts.index) == set(LABELS) and counts.min() == counts.max()
    assert df.company.nunique() >= 60 and df.text.str.len().min() >= 15


def test_no_training_code_or_data_reads_the_golden_set() -> None:
    """Only the evaluation module (and its tests) may name the file."""
    allowed = {"models/golden_set.py", "tests/data/test_golden_set.py"}
    for path in [*REPO.glob("models/*.py"), *REPO.glob("tasks/*.py"), *REPO.glob("flows/*.py"),
                 *REPO.glob("sources/*.py"), *REPO.glob("warehouse/*.py")]:
        rel = path.relative_to(REPO).as_posix()
        if rel not in allowed:
            assert "real_headlines" not in path.read_text(encoding="utf-8"), rel
    synthetic = __import__("sources.synthetic", fromlist=["HEADLINES"])
    golden = set(load_golden().text.str.lower())
    templates = " ".join(t for topic in synthetic.HEADLINES.values() for ts in topic.values() for t in ts).lower()
    assert not any(text in templates for text in golden)


def test_scores_are_accuracy_and_macro_f1() -> None:
    import numpy as np

    df = load_golden()
    perfect = np.eye(3)[[LABELS.index(s) for s in df.sentiment]]
    out = golden_scores({"oracle": perfect, "neutral": np.tile([0, 1.0, 0], (len(df), 1))}, list(LABELS), df)
    assert out["oracle"] == {"accuracy": 1.0, "macro_f1": 1.0}
    assert abs(out["neutral"]["accuracy"] - 1 / 3) < 1e-3
    assert pd.read_csv(GOLDEN_CSV).shape[0] == out["n"]
