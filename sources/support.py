"""Support messages (customer-service inbox) -> support records frames, and the BANKING77 loader.

A support records frame has exactly :data:`SUPPORT_COLUMNS`, all text except ``record_no``:
``message_id`` (the inbox's own id; missing means the warehouse keys the message by its content),
``channel`` (email, chat, app, phone ...), ``customer_id``, ``created_at`` (ISO 8601 preferred),
``text``, ``lang``, ``meta`` (unmapped columns, JSON), and an optional gold intent label
(``dataset``, ``label``, ``split``; the task is always ``intent``). Like every reader here, a bad
record comes back with ``error`` set and its text in ``raw``; only an unusable file raises
(``OSError``, or ``UnreadableInputError`` for a missing header, which the ingest task quarantines
as one record). Plain Python only (no Prefect, no DuckDB).

Support inboxes arrive every few minutes in small files, so the readers are plain Python: every
malformed CSV row or JSON line keeps its own reason, which is what quarantine needs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from core.formats import SUPPORT_COLUMNS
from sources.datasets import DatasetSpec, _csv_rows, _headed_rows, _one_line
from sources.records import UNREADABLE_INPUT_ERRORS, InputConfigError, UnreadableInputError, _frame, to_meta


# Column names support exports commonly use for each field, matched case-insensitively, first hit
# wins; ``column_map`` overrides. An ``intent`` column is a gold label here: in a support export
# it is an agent's tag, not a publisher's section.
SUPPORT_ALIASES: dict[str, tuple[str, ...]] = {
    "message_id": ("message_id", "msg_id", "id", "ticket_id", "conversation_id", "uuid"),
    "channel": ("channel", "medium", "via"),
    "customer_id": ("customer_id", "customer", "user_id", "client_id", "account_id", "requester_id"),
    "created_at": ("created_at", "created", "timestamp", "time", "date", "sent_at", "received_at", "datetime"),
    "text": ("text", "message", "body", "content", "query", "utterance", "question"),
    "lang": ("lang", "language"),
    "source": ("source",),
    "dataset": ("dataset",),
    "label": ("label", "intent", "gold_label", "gold_intent"),
    "split": ("split",),
}
MAX_RAW_CHARS = 20_000


def map_support_columns(names: Iterable[str], overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{field: column}`` for the support fields found in ``names`` (each column used once)."""
    names = list(names)
    unknown = sorted(set(overrides or {}) - set(SUPPORT_ALIASES))
    if unknown:
        raise InputConfigError(f"column_map names unknown support fields {unknown}; allowed: {list(SUPPORT_ALIASES)}")
    mapping: dict[str, str] = {}
    for field, col in (overrides or {}).items():
        if col not in names:
            raise InputConfigError(f"column {col!r} (for {field}) not in input columns {names}")
        mapping[field] = col
    lower = {}
    for n in names:
        lower.setdefault(n.strip().lower(), n)
    for field, aliases in SUPPORT_ALIASES.items():
        if field in mapping:
            continue
        col = next((lower[a] for a in aliases if a in lower and lower[a] not in mapping.values()), None)
        if col is not None:
            mapping[field] = col
    return mapping


def support_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Build a support records frame from dicts (missing keys -> missing values)."""
    return _frame(rows, SUPPORT_COLUMNS)


def _record(obj: Mapping[str, Any], mapping: dict[str, str], base: dict[str, Any]) -> dict[str, Any]:
    """One record's fields from a mapped row (a CSV row as a dict, or a JSON object)."""
    row: dict[str, Any] = dict(base)
    used = set(mapping.values())
    for field, col in mapping.items():
        value = obj.get(col)
        if value is not None and value != "":
            row[field] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    extras = {k: v for k, v in obj.items() if k not in used}
    row["meta"] = to_meta(extras)
    return row


def read_support_file(
    path: Path | str,
    fmt: str,
    *,
    source: str,
    column_map: Mapping[str, str] | None = None,
    defaults: Mapping[str, str] | None = None,
    encoding: str = "utf-8",
) -> pd.DataFrame:
    """Read a support export (``fmt``: csv, jsonl or parquet) into a support records frame.

    ``defaults`` fill fields the file lacks or leaves empty (``{"channel": "email"}``). CSV needs a
    header row (``.tsv`` files are tab-separated); a row with the wrong field count, a blank row,
    a malformed JSON line or a JSON value that is not an object is kept with its reason.
    """
    path = Path(path).expanduser()
    unknown = sorted(set(defaults or {}) - set(SUPPORT_ALIASES))
    if unknown:
        raise InputConfigError(f"defaults for unknown support fields {unknown}; allowed: {list(SUPPORT_ALIASES)}")
    base = {"source": source, **{k: v for k, v in (defaults or {}).items() if v not in (None, "")}}
    rows: list[dict[str, Any]] = []
    if fmt == "csv":
        it = _csv_rows(path, delimiter="\t" if path.suffix.lower() == ".tsv" else ",", encoding=encoding)
        header, _ = next(it, ([], ""))
        header = [h.strip().lstrip("\ufeff") for h in header]
        if not any(header):
            raise UnreadableInputError(f"CSV file {path} is empty: no header row")
        mapping = map_support_columns(header, column_map)
        for fields, raw in it:
            if not raw.strip():
                continue  # empty lines are not records
            row = {"raw": raw[:MAX_RAW_CHARS], **base}
            if len(fields) != len(header):
                row["error"] = f"expected {len(header)} fields, got {len(fields)}"
            else:
                row = {**row, **_record(dict(zip(header, fields, strict=True)), mapping, base)}
            rows.append(row)
    elif fmt == "jsonl":
        for line in path.read_bytes().decode(encoding, "surrogateescape").splitlines():
            if not line.strip():
                continue
            row = {"raw": line[:MAX_RAW_CHARS], **base}
            try:
                obj = json.loads(line)
            except ValueError:
                obj, row["error"] = None, "malformed JSON line"
            if obj is not None and not isinstance(obj, dict):
                row["error"] = "JSON value is not an object"
            elif isinstance(obj, dict):
                # Keys are mapped per object: JSON exports often omit empty fields.
                keys = map_support_columns(list(obj), {k: v for k, v in (column_map or {}).items() if v in obj})
                row = {**row, **_record(obj, keys, base)}
            rows.append(row)
    elif fmt == "parquet":
        frame = pd.read_parquet(path)
        mapping = map_support_columns([str(c) for c in frame.columns], column_map)
        for obj in frame.astype(object).where(frame.notna(), None).to_dict("records"):
            obj = {str(k): (v if v is None or isinstance(v, str) else str(v)) for k, v in obj.items()}
            rows.append({"raw": json.dumps(obj, ensure_ascii=False)[:MAX_RAW_CHARS], **_record(obj, mapping, base)})
    else:
        raise InputConfigError(f"support files are csv, jsonl or parquet, not {fmt!r}")
    for n, row in enumerate(rows, start=1):
        row["record_no"] = n
    return support_frame(rows)


def read_banking77(path: Path | str) -> pd.DataFrame:
    """Read a BANKING77 ``train.csv`` / ``test.csv`` (header ``text,category``; CRLF; quoted commas).

    ``message_id`` is ``<stem>-<n>`` (n = 1-based data row), like AG News: stable across re-reads.
    The intent goes to ``label`` as found (the suite rejects names outside the 77), dataset
    ``banking77``, split the file stem. Channel, customer and time are not in the data: missing.
    """
    path = Path(path)
    it, _header, idx = _headed_rows(path, ["text", "category"])
    rows = []
    for no, (fields, raw) in enumerate(it, start=1):
        row: dict[str, Any] = {"record_no": no, "raw": raw, "source": "banking77", "lang": "en",
                               "message_id": f"{path.stem}-{no}", "dataset": "banking77",
                               "split": path.stem if path.stem in ("train", "test") else None}
        if all(not f.strip() for f in fields):
            row["error"] = "blank record"
        elif len(fields) != 2:
            row["error"] = f"expected 2 fields (text, category), got {len(fields)}"
        else:
            row["text"] = _one_line(fields[idx["text"]])
            row["label"] = fields[idx["category"]].strip() or None
        rows.append(row)
    return support_frame(rows)


# Support datasets, by name: resolved beside sources.datasets.DATASETS by the ingest tasks (kept
# apart so the news registry, its tests and the reliability fuzzer see only article/behaviour data).
SUPPORT_DATASETS: dict[str, DatasetSpec] = {
    "banking77": DatasetSpec("banking77", "banking77", "*.csv", read_banking77, "support_messages"),
}


def read_support_or_quarantine(read: Callable[[], pd.DataFrame], input_name: str) -> pd.DataFrame:
    """``read()``, or one quarantinable record standing for a wholly unreadable input.

    The support-frame twin of :func:`sources.records.read_or_quarantine` (same errors caught,
    same reason text), so a broken export costs one quarantined record, not the run.
    """
    try:
        return read()
    except UNREADABLE_INPUT_ERRORS as exc:
        row = {"record_no": 1, "raw": input_name, "error": f"unreadable input: {type(exc).__name__}: {exc}"[:2000]}
        return support_frame([row])
