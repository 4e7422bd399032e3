"""The records-frame contract shared by every reader.

A records frame is a pandas DataFrame with exactly :data:`RECORD_COLUMNS`:

- ``record_no`` (int64, 1-based position of the record in its input),
- ``raw``: the record as received (a line, a CSV row, a JSON object), kept for quarantine,
- article fields, all strings or missing: ``source``, ``source_id``, ``title``, ``body``, ``url``,
  ``published_at`` (ISO 8601 preferred; other formats are tried by the warehouse),
  ``lang``, ``tickers`` (comma/space separated), ``meta`` (a JSON object as text),
- optional gold label fields: ``dataset``, ``task`` (``sentiment`` | ``topic``), ``label``
  (several labels joined by ``|`` for multi-label data), ``split`` (``train``/``validation``/``test``),
- ``error``: why the reader could not use the record (``None`` when it could). Records with an
  error are still returned; the warehouse routes them to ``quarantine`` with that reason.

MIND click logs use :data:`BEHAVIOR_COLUMNS` instead (see :func:`behaviors_frame`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

RECORD_COLUMNS: list[str] = [
    "record_no",
    "raw",
    "source",
    "source_id",
    "title",
    "body",
    "url",
    "published_at",
    "lang",
    "tickers",
    "meta",
    "dataset",
    "task",
    "label",
    "split",
    "error",
]

BEHAVIOR_COLUMNS: list[str] = [
    "record_no",
    "raw",
    "source",
    "impression_id",
    "user_id",
    "time",
    "history",
    "impressions",
    "error",
]

TASKS = ("sentiment", "topic")
SENTIMENT_LABELS = ("negative", "neutral", "positive")


def _frame(rows: Iterable[Mapping[str, Any]], columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(list(rows), columns=columns)
    if df["record_no"].isna().any():
        df["record_no"] = range(1, len(df) + 1)
    df["record_no"] = df["record_no"].astype("int64")
    for col in columns:
        if col != "record_no":
            # Strings with real missing values (None/NaN -> <NA>), whatever the reader produced.
            df[col] = df[col].astype("string")
    return df


def records_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Build a records frame from dicts; missing keys become missing values.

    ``record_no`` is numbered 1..n when the dicts do not carry it.
    """
    return _frame(rows, RECORD_COLUMNS)


def behaviors_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Build a click-log frame (:data:`BEHAVIOR_COLUMNS`) from dicts."""
    return _frame(rows, BEHAVIOR_COLUMNS)


def to_meta(values: Mapping[str, Any]) -> str | None:
    """Serialise source-specific extras to the ``meta`` JSON text (None when empty)."""
    clean = {k: v for k, v in values.items() if v not in (None, "", [], {})}
    return json.dumps(clean, ensure_ascii=False, sort_keys=True) if clean else None


# Column names that generic files (CSV, JSONL, Parquet) commonly use for each record field,
# matched case-insensitively, first hit wins. Users can override with an explicit mapping.
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "source_id": ("source_id", "id", "guid", "article_id", "news_id", "uuid", "doc_id"),
    "title": ("title", "headline", "headlines", "heading"),
    "body": ("body", "text", "content", "description", "summary", "article", "sentence", "abstract"),
    "url": ("url", "link", "href"),
    "published_at": (
        "published_at", "published", "pubdate", "pub_date", "date", "time", "timestamp",
        "datetime", "created_at", "dates",
    ),
    "source": ("source", "publisher", "feed"),
    "lang": ("lang", "language"),
    "tickers": ("tickers", "ticker", "symbols", "symbol", "entities"),
    "dataset": ("dataset",),
    "task": ("task",),
    # Only an explicit `label` column is a gold label: a `topic` or `category` field in a news
    # feed is the publisher's section, not a training label (map it explicitly if it is one).
    "label": ("label", "gold_label"),
    "split": ("split",),
}


def map_columns(names: Iterable[str], overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """Map record fields to the input's column names using :data:`FIELD_ALIASES`.

    ``overrides`` maps a field to a column explicitly (``{"body": "Description"}``) and wins.
    Returns ``{field: column}`` for every field found; each input column is used at most once.
    """
    names = list(names)
    lower: dict[str, str] = {}
    for n in names:  # the exact spelling wins over case/whitespace variants ("title" over "title ")
        key = n.lower().strip()
        if key not in lower or n == key:
            lower[key] = n
    mapping: dict[str, str] = {}
    used: set[str] = set()
    for field, col in (overrides or {}).items():
        if col not in names:
            raise ValueError(f"column {col!r} (for {field}) not in input columns {names}")
        mapping[field] = col
        used.add(col)
    for field, aliases in FIELD_ALIASES.items():
        if field in mapping:
            continue
        for alias in aliases:
            col = lower.get(alias)
            if col is not None and col not in used:
                mapping[field] = col
                used.add(col)
                break
    return mapping
