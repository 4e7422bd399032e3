"""Evaluation metrics, confusion-matrix plot, TF-IDF baseline and ensemble weight."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from models.baseline import TfidfLogReg, fit_ensemble_weight
from models.evaluate import (
    classification_metrics,
    expected_calibration_error,
    metrics_table,
    plot_confusion_matrix,
)

LABELS = ["negative", "neutral", "positive"]


def one_hot(idx: list[int], k: int = 3, p: float = 0.9) -> np.ndarray:
    """Rows with probability ``p`` on ``idx`` and the rest spread evenly."""
    out = np.full((len(idx), k), (1.0 - p) / (k - 1))
    out[np.arange(len(idx)), idx] = p
    return out


def test_metrics_hand_computed() -> None:
    y_true = ["negative", "negative", "neutral", "neutral", "positive", "positive"]
    pred = [0, 1, 1, 1, 2, 0]  # 4/6 correct
    m = classification_metrics(y_true, one_hot(pred), LABELS)
    assert m["n"] == 6 and m["n_ignored"] == 0
    assert m["accuracy"] == pytest.approx(4 / 6)
    # negative: P=1/2 R=1/2 F=1/2; neutral: P=2/3 R=1 F=0.8; positive: P=1 R=1/2 F=2/3
    assert m["per_class"]["neutral"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)  # equal supports
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]  # rows true, cols pred
    # ECE: every row has confidence 0.9 and accuracy is 4/6
    assert m["ece"] == pytest.approx(abs(0.9 - 4 / 6))


def test_confusion_matrix_follows_labels_order() -> None:
    labels = ["positive", "negative"]
    y_true = ["positive", "positive", "negative"]
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])  # preds: positive, negative, negative
    m = classification_metrics(y_true, probs, labels)
    assert m["confusion_matrix"] == [[1, 1], [0, 1]]
    assert list(m["per_class"]) == labels


def test_unknown_labels_are_ignored_and_counted() -> None:
    y_true = ["negative", "unknown", "positive", ""]
    probs = one_hot([0, 1, 2, 1])
    m = classification_metrics(y_true, probs, LABELS)
    assert m["n"] == 2 and m["n_ignored"] == 2
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0  # neutral never seen nor predicted
    assert m["per_class"]["neutral"]["support"] == 0
    empty = classification_metrics(["x"], one_hot([0]), LABELS)
    assert empty["n"] == 0 and empty["n_ignored"] == 1 and empty["accuracy"] is None


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        classification_metrics(["negative"], np.ones((1, 2)) / 2, LABELS)


def test_ece_calibrated_vs_overconfident() -> None:
    y = np.array([0] * 8 + [1] * 2)
    calibrated = one_hot([0] * 10, k=2, p=0.8)  # 80% confident, 80% right
    assert expected_calibration_error(y, calibrated) == pytest.approx(0.0, abs=1e-12)
    overconfident = one_hot([0] * 10, k=2, p=0.99)
    assert expected_calibration_error(y, overconfident) == pytest.approx(0.19)
    y_half = np.array([0, 1] * 5)
    assert expected_calibration_error(y_half, overconfident) == pytest.approx(0.49)
    # two bins: conf 0.6 (all right) and 1.0 (all right) -> (0.4 * 5 + 0 * 5) / 10
    mixed = np.vstack([one_hot([0] * 5, k=2, p=0.6), one_hot([0] * 5, k=2, p=1.0)])
    assert expected_calibration_error(np.zeros(10, dtype=int), mixed) == pytest.approx(0.2)


def test_confusion_png(tmp_path: Path) -> None:
    labels = [f"topic_{i}" for i in range(20)]
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 50, size=(20, 20))
    cm[3] = 0  # a class with no rows must not break row normalisation
    out = plot_confusion_matrix(cm, labels, tmp_path / "sub" / "confusion_topic.png", "topic")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    small = plot_confusion_matrix([[3, 1], [0, 4]], ["a", "b"], tmp_path / "c.png", "tiny")
    assert small.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_table() -> None:
    table = metrics_table([{"model": "gpt", "macro-F1": 0.81234, "n": 10},
                           {"model": "a|b", "macro-F1": None, "ECE": float("nan")}])
    lines = table.splitlines()
    assert lines[0] == "| model | macro-F1 | n | ECE |"
    assert lines[1] == "|---|---|---|---|"
    assert lines[2] == "| gpt | 0.812 | 10 | — |"
    assert lines[3] == "| a\\|b | — | — | — |"
    assert metrics_table([]) == "_no rows_"


POS = ["profit rose strongly", "sales rose strongly this quarter", "profit and sales rose",
       "strong growth in profit", "sales growth was strong", "profit growth rose again"]
NEG = ["loss widened sharply", "sales fell sharply this quarter", "the loss and layoffs widened",
       "sharp fall in sales", "the company reported a loss", "layoffs after sales fell sharply"]


def test_baseline_learns_and_round_trips(tmp_path: Path) -> None:
    texts, labels = POS + NEG, ["positive"] * 6 + ["negative"] * 6
    model = TfidfLogReg(labels=LABELS, seed=0).fit(texts, labels, texts, labels)
    probs = model.predict_proba(texts)
    assert probs.shape == (12, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert np.all(probs[:, 1] == 0.0)  # "neutral" never seen in train
    m = classification_metrics(labels, probs, LABELS)
    assert m["accuracy"] == 1.0
    assert model.params["C"] in model.c_grid and len(model.grid) == 10

    saved = model.save(tmp_path / "baseline")
    names = {p.name for p in saved.rglob("*")}
    assert names == {"params.json", "vocab.json", "arrays.npz"}
    assert not [p for p in tmp_path.rglob("*") if p.suffix in {".pkl", ".joblib", ".pickle"}]
    with np.load(saved / "arrays.npz", allow_pickle=False) as arrays:  # no object arrays
        assert all(arrays[k].dtype != object for k in arrays.files)
    loaded = TfidfLogReg.load(saved)
    assert loaded.labels == LABELS and loaded.params == model.params
    new_texts = ["profit rose", "sales fell sharply", "nothing in common here"]
    np.testing.assert_array_equal(loaded.predict_proba(texts), probs)
    np.testing.assert_array_equal(loaded.predict_proba(new_texts), model.predict_proba(new_texts))


def test_baseline_label_order_default_and_errors() -> None:
    texts, labels = POS + NEG, ["up"] * 6 + ["down"] * 6
    model = TfidfLogReg().fit(texts, labels)  # no validation: default C, no grid
    assert model.labels == ["down", "up"] and model.grid == [] and model.params["C"] == 1.0
    assert model.predict(["profit rose strongly"]) == ["up"]
    with pytest.raises(ValueError, match="not in labels"):
        TfidfLogReg(labels=["up"]).fit(texts, labels)
    with pytest.raises(ValueError, match="two classes"):
        TfidfLogReg().fit(POS, ["up"] * 6)
    with pytest.raises(RuntimeError):
        TfidfLogReg().predict_proba(["x"])


def test_ensemble_weight_prefers_the_perfect_model() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=200)
    perfect = one_hot(y.tolist(), p=0.9)
    random = rng.dirichlet(np.ones(3), size=200)
    w, score = fit_ensemble_weight(perfect, random, y)
    assert w == 1.0 and score == 1.0
    w_b, score_b = fit_ensemble_weight(random, perfect, y)
    assert w_b == 0.0 and score_b == 1.0
    y_missing = y.copy()
    y_missing[:10] = -100  # missing labels are ignored
    assert fit_ensemble_weight(perfect, random, y_missing)[0] == 1.0


def _phrasebank_file() -> Path | None:
    root = Path(os.environ.get("NEWSPULSE_DATA_DIR")
                or Path(__file__).resolve().parents[2].parent / "shared" / "data")
    path = root / "financial_phrasebank" / "Sentences_50Agree.txt"
    return path if path.is_file() else None


@pytest.mark.slow
def test_baseline_on_phrasebank_50agree() -> None:
    path = _phrasebank_file()
    if path is None:
        pytest.skip("Financial PhraseBank not found (set NEWSPULSE_DATA_DIR or use ../shared/data)")
    from sklearn.model_selection import train_test_split

    texts, labels = [], []
    for line in path.read_text(encoding="latin-1").splitlines():
        if "@" in line:
            text, label = line.rsplit("@", 1)
            texts.append(text.strip())
            labels.append(label.strip())
    assert len(texts) > 4000 and sorted(set(labels)) == LABELS
    x_tr, x_tmp, y_tr, y_tmp = train_test_split(
        texts, labels, test_size=0.2, random_state=0, stratify=labels)
    x_va, x_te, y_va, y_te = train_test_split(
        x_tmp, y_tmp, test_size=0.5, random_state=0, stratify=y_tmp)
    model = TfidfLogReg(seed=0).fit(x_tr, y_tr, x_va, y_va)
    m = classification_metrics(y_te, model.predict_proba(x_te), model.labels)
    print(f"PhraseBank 50Agree baseline: test macro-F1 {m['macro_f1']:.3f} "
          f"acc {m['accuracy']:.3f} ECE {m['ece']:.3f} params {model.params}")
    assert 0.72 <= m["macro_f1"] <= 0.82
    assert m["n"] == len(y_te)


def test_baseline_rebuilt_differently_fails_clearly(tmp_path: Path) -> None:
    """A scikit-learn that rebuilds the saved state into other scores (or cannot) is one clear error."""
    import json

    from models.baseline import BaselineFormatError

    texts, labels = POS + NEG, ["positive"] * 6 + ["negative"] * 6
    saved = TfidfLogReg(labels=LABELS, seed=0).fit(texts, labels).save(tmp_path / "baseline")
    meta = json.loads((saved / "params.json").read_text())
    assert meta["sklearn"] and len(meta["probe"]["proba"]) == len(meta["probe"]["texts"])
    TfidfLogReg.load(saved)  # the installed scikit-learn rebuilds what it saved
    meta["probe"]["proba"][0] = [1.0, 0.0, 0.0]  # as if an upgrade changed what the arrays mean
    meta["sklearn"] = "0.0.1"
    (saved / "params.json").write_text(json.dumps(meta))
    with pytest.raises(BaselineFormatError, match=r"scikit-learn 0\.0\.1.*retrain the model or install"):
        TfidfLogReg.load(saved)
