"""Load a registered model version and score texts the way the registry says to serve it.

A version directory holds the GPT heads (safetensors) and, per head, the TF-IDF baseline it was
compared with. When the card says ``served: ensemble``, probabilities are ``w * gpt + (1 - w) *
baseline`` with the weight chosen on validation; otherwise the GPT heads alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from models.multihead import MultiHeadGPT
from models.predict import predict


class ServedModel:
    """A loaded model version, ready for batch prediction."""

    def __init__(self, version_dir: Path) -> None:
        from models.registry import load_manifest

        self.version_dir = Path(version_dir)
        self.model, self.tokenizer = MultiHeadGPT.load(self.version_dir)
        self.info = load_manifest(self.version_dir)
        self.served: dict[str, str] = self.info.get("served") or {}
        self.weights: dict[str, float] = self.info.get("ensemble_weight") or {}
        self._baselines: dict[str, object] = {}

    def _baseline(self, head: str):
        from models.baseline import TfidfLogReg

        if head not in self._baselines:
            self._baselines[head] = TfidfLogReg.load(self.version_dir / "baseline" / head)
        return self._baselines[head]

    def predict_frame(self, texts: list[str], batch_size: int = 64) -> pd.DataFrame:
        """Per text: label and probability per class for each head, sentiment score, embedding-free."""
        preds = predict(self.model, self.tokenizer, texts, batch_size=batch_size)
        heads = self.model.heads
        out = pd.DataFrame(index=range(len(texts)))
        for head, labels in (("sentiment", heads.sentiment_labels), ("topic", heads.topic_labels)):
            probs = getattr(preds, f"{head}_probs")
            if probs is None or not labels:
                continue
            if self.served.get(head) == "ensemble" and head in self.weights and len(texts):
                w = self.weights[head]
                probs = w * probs + (1 - w) * self._baseline(head).predict_proba(list(texts))
            out[f"{head}_label"] = [labels[i] for i in np.argmax(probs, axis=1)] if len(texts) else []
            for j, name in enumerate(labels):
                out[f"{head}_p_{name}"] = probs[:, j]
        if "sentiment_p_positive" in out:
            out["sentiment_score"] = out["sentiment_p_positive"] - out["sentiment_p_negative"]  # in [-1, 1]
        out["truncated"] = preds.truncated
        return out
