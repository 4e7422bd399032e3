"""Load a registered model version and score texts the way the registry says to serve it.

A version directory holds the GPT heads (safetensors) and, per head, the TF-IDF baseline it was
compared with. Per head the card says what is served: ``gpt`` (the GPT head alone),
``ensemble`` (``w * gpt + (1 - w) * baseline``, ``w`` chosen on held-out validation rows) or
``baseline`` (the TF-IDF model alone, when the GPT earned less than 0.2 of the mix). The pooled
embedding always comes from the GPT backbone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from models.multihead import MultiHeadGPT
from models.predict import DEFAULT_BATCH_SIZE, predict


class ServedModel:
    """A loaded model version, ready for batch prediction."""

    def __init__(self, version_dir: Path, precision: str | None = None) -> None:
        """Load ``version_dir``; ``precision`` is ``bf16``/``fp32`` for every forward pass (None:
        the device default, see :func:`models.predict.predict_ids`), or ``int8``: the backbone's
        Linear layers are quantised once here (:func:`models.precision.quantize_int8`, CPU only)."""
        from models.registry import load_manifest

        self.version_dir = Path(version_dir)
        self.precision = precision
        self.model, self.tokenizer = MultiHeadGPT.load(self.version_dir)
        if precision == "int8":
            from models.precision import quantize_int8

            self.model = quantize_int8(self.model)
        self.info = load_manifest(self.version_dir)
        self.served: dict[str, str] = self.info.get("served") or {}
        self.weights: dict[str, float] = self.info.get("ensemble_weight") or {}
        self._baselines: dict[str, object] = {}

    def _baseline(self, head: str):
        from models.baseline import TfidfLogReg

        if head not in self._baselines:
            self._baselines[head] = TfidfLogReg.load(self.version_dir / "baseline" / head)
        return self._baselines[head]

    def predict_frame(self, texts: list[str], batch_size: int = DEFAULT_BATCH_SIZE) -> pd.DataFrame:
        """Per text: label and probability per class for each head, sentiment score, embedding-free."""
        return self.score(texts, batch_size=batch_size)[0]

    def score(self, texts: list[str], batch_size: int = DEFAULT_BATCH_SIZE, device: str | None = None,
              progress: bool = False) -> tuple[pd.DataFrame, np.ndarray]:
        """One forward pass per batch for every head: ``(frame, embeddings (N, d) float32)``.

        The frame has ``<head>_label`` and ``<head>_p_<class>`` per head the model has,
        ``sentiment_score`` = p(positive) - p(negative) in [-1, 1], ``topic_confidence``,
        ``intent_confidence`` and ``intent_top3`` (``[{"intent", "p"}]``, best first), ``n_tokens``
        and ``truncated``, in input order. Served ensembles mix in the TF-IDF baseline's probabilities.
        """
        preds = predict(self.model, self.tokenizer, texts, batch_size=batch_size, device=device, progress=progress,
                        precision=self.precision)
        heads = self.model.heads
        out = pd.DataFrame(index=range(len(texts)))
        for head in ("sentiment", "topic", "intent"):
            labels, probs = getattr(heads, f"{head}_labels"), getattr(preds, f"{head}_probs")
            if probs is None or not labels:
                continue
            kind = self.served.get(head)
            if kind in ("ensemble", "baseline") and len(texts) and (self.version_dir / "baseline" / head).is_dir():
                w = self.weights.get(head, 0.0) if kind == "ensemble" else 0.0
                probs = w * probs + (1 - w) * self._baseline(head).predict_proba(list(texts))
            out[f"{head}_label"] = [labels[i] for i in np.argmax(probs, axis=1)] if len(texts) else []
            for j, name in enumerate(labels):
                out[f"{head}_p_{name}"] = probs[:, j]
            if head in ("topic", "intent"):
                out[f"{head}_confidence"] = probs.max(axis=1) if len(texts) else []
            if head == "intent":
                out["intent_top3"] = top_k(probs, labels, 3)
        if "sentiment_p_positive" in out:
            out["sentiment_score"] = out["sentiment_p_positive"] - out["sentiment_p_negative"]  # in [-1, 1]
        out["n_tokens"] = preds.n_tokens
        out["truncated"] = preds.truncated
        return out, preds.embeddings


def top_k(probs: np.ndarray, labels: list[str], k: int = 3) -> list[list[dict[str, float | str]]]:
    """Per row of ``probs`` (N, C): the ``k`` likeliest classes as ``{"intent": name, "p": prob}``, best first."""
    if not len(probs):
        return []
    best = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # (N, k)
    return [[{"intent": labels[j], "p": round(float(row[j]), 4)} for j in idx] for row, idx in zip(probs, best)]


def score_shard(served: ServedModel, in_path: Path, out_path: Path, *, batch_size: int = DEFAULT_BATCH_SIZE,
                device: str | None = None, extra: dict[str, object] | None = None) -> dict[str, float]:
    """Score one staged shard (Parquet with ``article_id``, ``text``) into ``out_path`` (Parquet).

    The output holds, per article, every head's label and probabilities, ``sentiment_score``,
    ``topic_probs`` (a list in head order), ``n_tokens``, ``truncated``, the pooled ``embedding``
    and the ``extra`` constant columns (run ids). It is written to a temporary name and renamed,
    so a shard file either exists complete or not at all. Returns rows, seconds and tokens.
    """
    import time

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(in_path, columns=["article_id", "text"])
    texts = table.column("text").to_pylist()
    t0 = time.perf_counter()
    frame, emb = served.score(texts, batch_size=batch_size, device=device)
    seconds = time.perf_counter() - t0
    topic_labels = served.model.heads.topic_labels
    cols: dict[str, pa.Array] = {"article_id": table.column("article_id").combine_chunks()}
    for name in ("sentiment_label", "sentiment_p_negative", "sentiment_p_neutral", "sentiment_p_positive",
                 "sentiment_score"):
        cols[name] = pa.array(frame[name].to_numpy(dtype=np.float32) if name != "sentiment_label"
                              else frame[name].tolist())
    if topic_labels:
        probs = frame[[f"topic_p_{t}" for t in topic_labels]].to_numpy(dtype=np.float32)  # (N, K)
        cols["topic_label"] = pa.array(frame["topic_label"].tolist(), pa.string())
        cols["topic_confidence"] = pa.array(probs.max(axis=1) if len(probs) else np.zeros(0, np.float32))
        cols["topic_probs"] = pa.FixedSizeListArray.from_arrays(pa.array(probs.ravel()), len(topic_labels))
    else:
        cols["topic_label"] = pa.nulls(len(texts), pa.string())
        cols["topic_confidence"] = pa.nulls(len(texts), pa.float32())
        cols["topic_probs"] = pa.nulls(len(texts), pa.list_(pa.float32()))
    cols["n_tokens"] = pa.array(frame["n_tokens"].to_numpy(dtype=np.int32))
    cols["truncated"] = pa.array(frame["truncated"].to_numpy(dtype=bool))
    cols["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(emb.astype(np.float32).ravel()), emb.shape[1])
    for name, value in (extra or {}).items():
        cols[name] = pa.array([value] * len(texts))
    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.name + ".tmp")
    pq.write_table(pa.table(cols), tmp)
    tmp.replace(out_path)
    return {"rows": len(texts), "seconds": seconds, "tokens": int(frame["n_tokens"].sum())}
