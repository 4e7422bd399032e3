"""The real-text golden set: 180 realistic headlines with real company names, written by us.

``models/golden/real_headlines.csv`` (see its README: original wording, Apache-2.0, balanced
60/60/60 over negative/neutral/positive) is an **evaluation set only**: no training, tuning or
selection code reads it. Every model card reports the sentiment accuracy of the GPT head alone,
the TF-IDF baseline and the served choice on it, beside the figures on the data the model was
trained on, so a model that learned the synthetic stream's templates shows it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

GOLDEN_CSV = Path(__file__).resolve().parent / "golden" / "real_headlines.csv"
LABELS = ("negative", "neutral", "positive")


def load_golden(path: Path = GOLDEN_CSV) -> pd.DataFrame:
    """The golden headlines: ``id, text, sentiment, company, kind``."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    unknown = sorted(set(df.sentiment) - set(LABELS))
    if unknown:
        raise ValueError(f"{path}: unknown sentiment labels {unknown}")
    return df


def golden_scores(probs: dict[str, np.ndarray], labels: list[str], golden: pd.DataFrame | None = None
                  ) -> dict[str, Any]:
    """Accuracy and macro-F1 on the golden set per model: ``probs[name]`` is (N, 3) in ``labels`` order."""
    from sklearn.metrics import accuracy_score, f1_score

    golden = load_golden() if golden is None else golden
    y = golden.sentiment.to_numpy()
    out: dict[str, Any] = {"n": int(len(golden))}
    for name, p in probs.items():
        pred = np.array(labels)[np.asarray(p).argmax(axis=1)]
        out[name] = {"accuracy": round(float(accuracy_score(y, pred)), 4),
                     "macro_f1": round(float(f1_score(y, pred, average="macro", labels=list(LABELS))), 4)}
    return out
