"""Pieces the reliability sections (and the monitor flow tests) share: a synthetic stream of scored
articles with negative bursts, a warehouse of such articles with a champion, and settings pointed
at a throw-away folder for the duration of a block."""

from __future__ import annotations

from contextlib import contextmanager
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any


STREAM_START = datetime(2026, 10, 1, tzinfo=UTC)


def spiky_stream(days: int, seed: int, spikes: list[tuple[str, datetime, int, int]],
                 tickers: tuple[str, ...] = ("AAA", "BBB", "CCC", "DDD", "EEE"), start: datetime = STREAM_START) -> Any:
    """A flat stream (about 24 articles/hour over ``days`` from ``start``, 25% negative, 60% with one
    of ``tickers``) plus ``(ticker, start, n, n_negative)`` bursts within an hour each.

    Columns ``article_id, ts, source, tickers, neg``: what :func:`load_scored` writes.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    n = days * 24 * 24
    secs = np.sort(rng.uniform(0, days * 86400, n))
    names = np.array(tickers)
    rows = [{"ts": start + timedelta(seconds=float(s)), "source": f"outlet{rng.integers(4)}",
             "tickers": [str(rng.choice(names))] if rng.random() < 0.6 else [],
             "neg": bool(rng.random() < 0.25)} for s in secs]
    for ticker, at, count, negatives in spikes:
        for j in range(count):
            rows.append({"ts": at + timedelta(seconds=float(rng.uniform(0, 3600))), "source": "outlet0",
                         "tickers": [ticker], "neg": j < negatives})
    df = pd.DataFrame(rows)
    df["article_id"] = [f"t{seed}-{i:06d}" for i in range(len(df))]
    return df


def load_scored(settings: Any, df: Any, model: str, batch_id: str, source: Any = "outlet0",
                scored_at: datetime | None = None) -> None:
    """Write ``df`` (``article_id, ts, tickers, neg``) as articles scored by ``model``, the champion
    (registered and promoted unless there is a champion already).

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
        "n_tokens": 5, "truncated": False, "scored_at": scored_at or datetime.now(UTC), "score_run_id": batch_id})
    with connect(settings) as con:
        migrate(con)
        if db_registry.champion(con) is None:
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
    """Set ``values`` in the environment, yield fresh settings with their folders made; restore after."""
    from core.settings import settings_env as env

    with env(values) as settings:
        settings.ensure_dirs()
        yield settings
