"""The practitioner's baseline: word + character TF-IDF with logistic regression.

Trained on the same split in the same run as the GPT model, so the model card can say honestly
whether the transformer earns its cost. Saved without pickle: vocabularies and params as JSON,
idf / coef / intercept as ``.npz`` (``allow_pickle=False``); loading rebuilds fresh sklearn
objects and sets their fitted state. Also: the validation-tuned ensemble weight of two models.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

DEFAULT_C_GRID: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
DEFAULT_CLASS_WEIGHTS: tuple[str | None, ...] = (None, "balanced")
FORMAT = "newspulse-tfidf-logreg/1"
# Texts every saved baseline is scored on at save and again at load: scikit-learn's fitted state is
# rebuilt from plain arrays (no pickle) by setting its fitted attributes, which a scikit-learn
# upgrade may rename or reinterpret; the probe turns that into one clear error, not wrong scores.
PROBE_TEXTS = ("Shares rose after record profit", "The bank cut its forecast and jobs",
               "my card is not working", "what exchange rate do you use?", "")


class BaselineFormatError(ValueError):
    """A saved baseline this scikit-learn cannot rebuild faithfully (one line: what to do)."""
WORD_PARAMS: dict[str, Any] = {"analyzer": "word", "ngram_range": (1, 2), "sublinear_tf": True,
                               "min_df": 2, "lowercase": True, "dtype": np.float64}
CHAR_PARAMS: dict[str, Any] = {"analyzer": "char_wb", "ngram_range": (2, 5), "sublinear_tf": True,
                               "min_df": 2, "lowercase": True, "dtype": np.float64}


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro-F1 over the classes present in the truth or the predictions."""
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


class TfidfLogReg:
    """Word 1-2-gram + char_wb 2-5-gram TF-IDF features and a multinomial logistic regression."""

    def __init__(
        self,
        labels: Sequence[str] | None = None,
        c_grid: Sequence[float] = DEFAULT_C_GRID,
        class_weights: Sequence[str | None] = DEFAULT_CLASS_WEIGHTS,
        max_iter: int = 2000,
        seed: int = 0,
        min_df: int = 2,
    ) -> None:
        """Configure the model; ``labels`` fixes the probability columns (default: train labels)."""
        self.labels: list[str] | None = [str(x) for x in labels] if labels is not None else None
        self.c_grid = [float(c) for c in c_grid]
        self.class_weights = list(class_weights)
        self.max_iter = int(max_iter)
        self.seed = int(seed)
        self.min_df = int(min_df)
        self.params: dict[str, Any] = {}
        self.grid: list[dict[str, Any]] = []
        self.val_score: float | None = None
        self.word_vec: TfidfVectorizer | None = None
        self.char_vec: TfidfVectorizer | None = None
        self.clf: LogisticRegression | None = None

    def _vectorizers(self) -> tuple[TfidfVectorizer, TfidfVectorizer]:
        """Fresh, unfitted word and char vectorizers with this model's settings."""
        return (TfidfVectorizer(**{**WORD_PARAMS, "min_df": self.min_df}),
                TfidfVectorizer(**{**CHAR_PARAMS, "min_df": self.min_df}))

    def _features(self, texts: Sequence[str]) -> sparse.csr_matrix:
        """Stacked word + char TF-IDF features of ``texts``."""
        if self.word_vec is None or self.char_vec is None:
            raise RuntimeError("TfidfLogReg is not fitted; call fit() or load() first")
        texts = [str(t) for t in texts]
        return sparse.hstack(
            [self.word_vec.transform(texts), self.char_vec.transform(texts)], format="csr"
        )

    def _new_clf(self, c: float, class_weight: str | None) -> LogisticRegression:
        """An unfitted logistic regression with the given C and class weighting."""
        return LogisticRegression(C=c, class_weight=class_weight, max_iter=self.max_iter,
                                  random_state=self.seed)

    def fit(
        self,
        train_texts: Sequence[str],
        train_labels: Sequence[str],
        val_texts: Sequence[str] | None = None,
        val_labels: Sequence[str] | None = None,
    ) -> TfidfLogReg:
        """Fit the vectorizers on train; pick C and class weighting by validation macro-F1.

        Without a validation split the first grid point (C=1 if present, no class weights) is used.
        Ties keep the earlier grid point. Raises ``ValueError`` for train labels outside ``labels``.
        """
        texts = [str(t) for t in train_texts]
        y = np.array([str(v) for v in train_labels])
        if len(texts) != len(y):
            raise ValueError("train_texts and train_labels differ in length")
        if self.labels is None:
            self.labels = sorted(set(y.tolist()))
        unknown = sorted(set(y.tolist()) - set(self.labels))
        if unknown:
            raise ValueError(f"train labels {unknown} are not in labels {self.labels}")
        if len(set(y.tolist())) < 2:
            raise ValueError("the baseline needs at least two classes in the training data")
        self.word_vec, self.char_vec = self._vectorizers()
        x_train = sparse.hstack(
            [self.word_vec.fit_transform(texts), self.char_vec.fit_transform(texts)], format="csr"
        )
        self.grid = []
        if val_texts is None or val_labels is None:
            c = 1.0 if 1.0 in self.c_grid else self.c_grid[0]
            self.clf = self._new_clf(c, None).fit(x_train, y)
            self.params, self.val_score = {"C": c, "class_weight": None}, None
            return self
        x_val = self._features(val_texts)
        y_val = np.array([str(v) for v in val_labels])
        best: tuple[float, LogisticRegression, dict[str, Any]] | None = None
        for class_weight in self.class_weights:
            for c in self.c_grid:
                clf = self._new_clf(c, class_weight).fit(x_train, y)
                score = _macro_f1(y_val, clf.predict(x_val))
                self.grid.append({"C": c, "class_weight": class_weight, "val_macro_f1": score})
                if best is None or score > best[0]:
                    best = (score, clf, {"C": c, "class_weight": class_weight})
        assert best is not None, "empty hyper-parameter grid"
        self.val_score, self.clf, self.params = best
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities, ``(n, len(self.labels))``; labels unseen in train get 0."""
        if self.clf is None or self.labels is None:
            raise RuntimeError("TfidfLogReg is not fitted; call fit() or load() first")
        raw = self.clf.predict_proba(self._features(texts))
        out = np.zeros((raw.shape[0], len(self.labels)), dtype=np.float64)
        col = {lab: i for i, lab in enumerate(self.labels)}
        for j, cls in enumerate(self.clf.classes_):
            out[:, col[str(cls)]] = raw[:, j]
        return out

    def predict(self, texts: Sequence[str]) -> list[str]:
        """Most probable label per text."""
        assert self.labels is not None
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]

    def save(self, directory: Path) -> Path:
        """Write ``params.json``, ``vocab.json`` and ``arrays.npz`` to ``directory`` (no pickle)."""
        if self.clf is None or self.word_vec is None or self.char_vec is None:
            raise RuntimeError("nothing to save: the baseline is not fitted")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        vocab = {name: [term for term, _ in sorted(vec.vocabulary_.items(), key=lambda kv: kv[1])]
                 for name, vec in (("word", self.word_vec), ("char", self.char_vec))}
        (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False),
                                              encoding="utf-8")
        np.savez(directory / "arrays.npz", word_idf=self.word_vec.idf_,
                 char_idf=self.char_vec.idf_, coef=self.clf.coef_, intercept=self.clf.intercept_,
                 allow_pickle=False)
        meta = {"format": FORMAT, "labels": self.labels,
                "classes": [str(c) for c in self.clf.classes_], "params": self.params,
                "c_grid": self.c_grid, "class_weights": self.class_weights,
                "max_iter": self.max_iter, "seed": self.seed, "min_df": self.min_df,
                "val_score": self.val_score, "grid": self.grid, "sklearn": sklearn.__version__,
                "probe": {"texts": list(PROBE_TEXTS), "proba": self.predict_proba(PROBE_TEXTS).tolist()}}
        (directory / "params.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: Path) -> TfidfLogReg:
        """Rebuild a fitted baseline from :meth:`save` output, without unpickling anything."""
        directory = Path(directory)
        meta = json.loads((directory / "params.json").read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{directory} is not a saved TfidfLogReg ({meta.get('format')!r})")
        vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
        model = cls(labels=meta["labels"], c_grid=meta["c_grid"],
                    class_weights=meta["class_weights"], max_iter=meta["max_iter"],
                    seed=meta["seed"], min_df=meta["min_df"])
        model.params, model.val_score, model.grid = meta["params"], meta["val_score"], meta["grid"]
        with np.load(directory / "arrays.npz", allow_pickle=False) as arrays:
            model.word_vec, model.char_vec = model._vectorizers()
            for vec, name in ((model.word_vec, "word"), (model.char_vec, "char")):
                vec.vocabulary_ = {term: i for i, term in enumerate(vocab[name])}
                vec.idf_ = arrays[f"{name}_idf"]
            clf = model._new_clf(float(meta["params"]["C"]), meta["params"]["class_weight"])
            clf.classes_ = np.array(meta["classes"])
            clf.coef_ = arrays["coef"]
            clf.intercept_ = arrays["intercept"]
            clf.n_features_in_ = int(arrays["coef"].shape[1])
            clf.n_iter_ = np.zeros(1, dtype=np.int32)
        model.clf = clf
        model._check_probe(directory, meta)
        return model

    def _check_probe(self, directory: Path, meta: dict[str, Any]) -> None:
        """Raise :class:`BaselineFormatError` unless the rebuilt model scores the saved probe as at save."""
        saved = meta.get("sklearn", "an unrecorded version")
        probe = meta.get("probe") or {"texts": list(PROBE_TEXTS), "proba": None}
        try:
            got = self.predict_proba(probe["texts"])
        except (AttributeError, TypeError, ValueError) as exc:
            raise BaselineFormatError(
                f"{directory}: the TF-IDF baseline saved with scikit-learn {saved} cannot be rebuilt with "
                f"{sklearn.__version__} ({type(exc).__name__}: {exc}); retrain the model or install "
                f"scikit-learn=={saved}") from None
        if probe["proba"] is not None and not np.allclose(got, np.asarray(probe["proba"]), atol=1e-6):
            raise BaselineFormatError(
                f"{directory}: the TF-IDF baseline rebuilt with scikit-learn {sklearn.__version__} scores differently "
                f"from when it was saved with scikit-learn {saved}; retrain the model or install scikit-learn=={saved}")


def load_version_baseline(artifact_path: str | Path | None, head: str = "sentiment") -> TfidfLogReg | None:
    """A registered version's saved TF-IDF baseline for ``head`` (``<artifact_path>/baseline/<head>``),
    or None when there is none or it cannot be rebuilt here (checks then go without a second opinion)."""
    path = Path(artifact_path or "/nonexistent") / "baseline" / head
    if not (path / "params.json").is_file():
        return None
    try:
        return TfidfLogReg.load(path)
    except (ValueError, KeyError, OSError):
        return None


def fit_ensemble_weight(
    p_a: np.ndarray,
    p_b: np.ndarray,
    y_val_idx: np.ndarray,
    grid: np.ndarray = np.linspace(0.0, 1.0, 21),
) -> tuple[float, float]:
    """Weight ``w`` for ``w * p_a + (1 - w) * p_b`` that maximises validation macro-F1.

    Rows with a negative label (missing, e.g. ``-100``) are ignored. Among weights with the same
    macro-F1 the one with the lowest validation log-loss wins, so ties are not broken by grid
    order. Returns ``(w, macro_f1)``.
    """
    a = np.asarray(p_a, dtype=np.float64)
    b = np.asarray(p_b, dtype=np.float64)
    y = np.asarray(y_val_idx).reshape(-1).astype(np.int64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] != y.shape[0]:
        raise ValueError(f"p_a {a.shape}, p_b {b.shape} and y_val_idx {y.shape} do not match")
    keep = y >= 0
    a, b, y = a[keep], b[keep], y[keep]
    if y.size == 0:
        raise ValueError("no labelled validation rows to fit the ensemble weight on")
    best: tuple[float, float, float] | None = None  # (score, -logloss, w)
    for w in np.asarray(grid, dtype=np.float64):
        mix = w * a + (1.0 - w) * b
        score = _macro_f1(y, mix.argmax(axis=1))
        logloss = float(-np.log(np.clip(mix[np.arange(y.size), y], 1e-12, 1.0)).mean())
        key = (round(score, 12), -logloss, float(w))
        if best is None or key[:2] > best[:2]:
            best = key
    assert best is not None, "empty weight grid"
    return best[2], best[0]
