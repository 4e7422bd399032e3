"""Pieces the reliability sections share: a warehouse of already-scored articles with a champion,
and settings pointed at a throw-away folder for the duration of a block."""

from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import UTC, datetime
from collections.abc import Iterator
from typing import Any


def load_scored(settings: Any, df: Any, model: str, batch_id: str, source: Any = "outlet0") -> None:
    """Write ``df`` (``article_id, ts, tickers, neg``) as articles scored by ``model``, the champion.

    What ingest + score would leave behind, without training a model: negatives score -0.7,
    the rest are neutral; ``source`` is a value or a column of ``df``.
    """
    import numpy as np
    import pandas as pd

    from warehouse import registry as db_registry
    from warehouse.connection import connect
    from warehouse.migrate import migrate

    arts = pd.DataFrame({
        "article_id": df.article_id, "source": source, "title": "headline " + df.article_id.astype(str),
        "body": "", "published_at": df.ts, "ingested_at": df.ts, "tickers": df.tickers, "batch_id": batch_id})
    scores = pd.DataFrame({
        "article_id": df.article_id, "model_version": model,
        "sentiment_label": np.where(df.neg, "negative", "neutral"),
        "sentiment_p_negative": np.where(df.neg, 0.8, 0.1), "sentiment_p_neutral": np.where(df.neg, 0.1, 0.8),
        "sentiment_p_positive": 0.1, "sentiment_score": np.where(df.neg, -0.7, 0.0), "topic_label": "markets",
        "n_tokens": 5, "truncated": False, "scored_at": datetime.now(UTC), "score_run_id": batch_id})
    with connect(settings) as con:
        migrate(con)
        db_registry.record_model(con, {"model_version": model, "backbone": "tiny", "heads": {}, "metrics": {},
                                       "val_score": 0.0, "served": "gpt", "val_split_id": "t",
                                       "artifact_path": "/nonexistent"})
        db_registry.promote(con, model, batch_id)
        con.register("arts", arts)
        con.execute("INSERT INTO articles BY NAME SELECT * FROM arts")
        con.register("sc", scores)
        con.execute("INSERT INTO scores BY NAME SELECT * FROM sc")


@contextmanager
def settings_env(values: dict[str, str]) -> Iterator[Any]:
    """Set ``values`` in the environment, yield fresh ``get_settings()``; restore everything after."""
    from newspulse.settings import get_settings

    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    get_settings.cache_clear()
    try:
        settings = get_settings()
        settings.ensure_dirs()
        yield settings
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()
