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

import csv
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pandas as pd

from core.formats import (BEHAVIOR_COLUMNS, FIELD_ALIASES, RECORD_COLUMNS, SENTIMENT_LABELS, TASKS,  # noqa: F401
                          InputConfigError, map_columns)



NOT_UTF8 = "not valid UTF-8 text (undecodable bytes shown as \\xNN, lone surrogates as \\uXXXX)"


_SURROGATE = re.compile("[\ud800-\udfff]")


def _show_surrogate(m: re.Match[str]) -> str:
    code = ord(m.group(0))
    # U+DC80..U+DCFF: a byte surrogateescape kept (shown as that byte); others: a lone surrogate
    # from a JSON escape such as "\ud83d" (shown as the escape).
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def _visible_bytes(value: Any) -> Any:
    """A string holding lone surrogates (undecodable bytes read with ``surrogateescape``, or a
    lone ``\\ud83d`` escape) with each written out visibly; anything else unchanged."""
    if not isinstance(value, str) or not _SURROGATE.search(value):
        return value
    return _SURROGATE.sub(_show_surrogate, value)


def _repair_not_utf8(rows: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mark every row holding text that is not valid UTF-8 with an error and make it storable.

    Readers decode with ``surrogateescape`` so one bad byte costs one record, not the file; such
    a record cannot be stored as text, so its bytes are shown as ``\\xNN`` and it is quarantined.
    Only called when the fast conversion failed: clean inputs pay nothing.
    """
    out = []
    for row in rows:
        fixed = {k: _visible_bytes(v) for k, v in row.items()}
        if any(fixed[k] is not row[k] for k in row):
            err = row.get("error")
            fixed["error"] = NOT_UTF8 if err is None or pd.isna(err) or not err else f"{err}; {NOT_UTF8}"
        out.append(fixed)
    return out


def _frame(rows: Iterable[Mapping[str, Any]], columns: list[str]) -> pd.DataFrame:
    rows = list(rows)
    try:
        return _typed_frame(rows, columns)
    except UnicodeEncodeError:  # a reader kept undecodable bytes (surrogateescape)
        return _typed_frame(_repair_not_utf8(rows), columns)


def _typed_frame(rows: list[Mapping[str, Any]], columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(rows, columns=columns)
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


class UnreadableInputError(ValueError):
    """The input as a whole cannot be read: empty, a wrong or missing header, an encoding it
    cannot be decoded with, a broken side file (MIND's JSON id map). Quarantined as one record."""


# What read_or_quarantine turns into a quarantined record. Nothing broader: an OSError (a file
# that vanished, permissions, I/O) is retried by the task, and any other exception is a bug
# that the fuzzer must see as a crash, not a quarantined file.
UNREADABLE_INPUT_ERRORS: tuple[type[Exception], ...] = (UnreadableInputError, csv.Error)


def read_or_quarantine(read: Callable[[], pd.DataFrame], input_name: str,
                       behaviors: bool = False) -> pd.DataFrame:
    """``read()``, or, when the input as a whole is unreadable, one record standing for it.

    That record carries the input's name as ``raw`` and ``unreadable input: <why>`` as its error,
    so the warehouse quarantines it with the reason and the batch commits like any other: the
    run goes on with the next input, and the file's version is recorded (a fixed file, with a new
    size or mtime, is read again). Settings errors (``InputConfigError``), ``OSError`` and bugs
    (any other exception) still raise.
    """
    try:
        return read()
    except UNREADABLE_INPUT_ERRORS as exc:
        row = {"record_no": 1, "raw": input_name, "error": f"unreadable input: {type(exc).__name__}: {exc}"[:2000]}
        return behaviors_frame([row]) if behaviors else records_frame([row])


def to_meta(values: Mapping[str, Any]) -> str | None:
    """Serialise source-specific extras to the ``meta`` JSON text (None when empty)."""
    clean = {k: v for k, v in values.items() if v not in (None, "", [], {})}
    return json.dumps(clean, ensure_ascii=False, sort_keys=True) if clean else None


