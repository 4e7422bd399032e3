"""Record formats: what readers (``sources``) produce and the warehouse stages.

A records frame has exactly :data:`RECORD_COLUMNS` (news), :data:`BEHAVIOR_COLUMNS` (click logs)
or :data:`SUPPORT_COLUMNS` (support messages); :func:`map_columns` maps an input's own column
names onto the record fields. Plain Python: this module imports nothing of ours.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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

SUPPORT_COLUMNS: list[str] = [
    "record_no", "raw", "source", "message_id", "channel", "customer_id", "created_at", "text",
    "lang", "meta", "dataset", "label", "split", "error",
]


class InputConfigError(ValueError):
    """The call, not the input, is wrong (an unknown encoding, a ``column_map`` naming a column
    the input lacks, a bad delimiter): raised, never quarantined, so fixing the settings reads
    the same file again."""


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
    unknown = sorted(set(overrides or {}) - set(FIELD_ALIASES))
    if unknown:  # a typo ("titel") would otherwise be dropped and every record quarantined
        raise InputConfigError(f"column_map names unknown record fields {unknown}; allowed: {list(FIELD_ALIASES)}")
    for field, col in (overrides or {}).items():
        if col not in names:
            raise InputConfigError(f"column {col!r} (for {field}) not in input columns {names}")
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
