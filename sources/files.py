"""CSV files -> records frames, plus small helpers for file ingestion (fingerprints, globs).

JSONL and Parquet inputs are read by DuckDB in the warehouse layer; only CSV is parsed here,
because real-world CSVs need record-level forgiveness that a bulk reader does not give.

:func:`read_csv_records` parses with Python's :mod:`csv` module (real quoting: embedded newlines,
doubled quotes, CRLF/LF/CR line endings) and never raises for a bad *record*: every record of the
file comes back exactly once, a bad one with a human-readable ``error`` and its original text in
``raw`` so the warehouse can quarantine it. Only an unusable *file* (missing, a directory, no
header row) raises.

``meta`` of each record is a JSON object (see :func:`sources.records.to_meta`) holding:

- every column the file has that is not mapped to a record field, under its own column name
  (a column whose name collides with a reader note below is stored as ``"column:<name>"``),
- ``line``: the 1-based physical line on which the record starts (the header is line 1 when the
  file does not begin with blank lines),
- ``nul_bytes_removed``: how many NUL characters were stripped from the record (omitted if none),
- ``raw_truncated``: true when ``raw`` was cut to :data:`MAX_RAW_CHARS` characters.
"""

from __future__ import annotations

import codecs
import csv
import glob
import io
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from sources.records import FIELD_ALIASES, InputConfigError, UnreadableInputError, map_columns, records_frame, to_meta

#: ``raw`` is cut to this many characters (the parsed fields themselves are not cut here).
MAX_RAW_CHARS = 20_000
#: Largest single CSV field the reader accepts (``csv.field_size_limit``); larger ones are errors.
MAX_FIELD_CHARS = 64 * 1024 * 1024
#: Delimiters tried, in order of preference on a tie, when none is given.
DELIMITER_CANDIDATES = (",", "\t", ";", "|")
#: An unterminated quote at EOF is recovered from (rest of the file re-read) at most this often.
MAX_QUOTE_RECOVERIES = 100

# Fields a caller may fill through ``defaults`` (bookkeeping columns are the reader's own).
_DEFAULTABLE = tuple(FIELD_ALIASES)
_READER_NOTES = ("line", "nul_bytes_removed", "raw_truncated")
_SURROGATES = re.compile("[\udc80-\udcff]")
_BOM = "\ufeff"


def _escape_surrogates(text: str) -> str:
    """Show bytes that ``surrogateescape`` could not decode as ``\\xNN``."""
    return _SURROGATES.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)


def _has_surrogates(text: str) -> bool:
    return _SURROGATES.search(text) is not None


def _raise_field_limit() -> None:
    # Global to the csv module; only ever raised, so concurrent readers do not fight over it.
    if csv.field_size_limit() < MAX_FIELD_CHARS:
        csv.field_size_limit(MAX_FIELD_CHARS)


def _read_text(path: Path, encoding: str) -> tuple[str, str]:
    """Read and decode the whole file; returns ``(text, canonical encoding name)``."""
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise InputConfigError(f"unknown encoding {encoding!r} for {path}") from None
    if not path.exists():
        raise FileNotFoundError(f"CSV file not found: {path}")
    if path.is_dir():
        raise UnreadableInputError(f"{path} is a directory, not a CSV file")
    data = path.read_bytes()  # an OSError (permissions, I/O) is raised: the task retries, nothing is quarantined
    if codec.name == "utf-8" and data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        text = data.decode(codec.name, errors="surrogateescape")
    except (UnicodeError, TypeError) as exc:  # codecs without surrogateescape support
        try:
            text = data.decode(codec.name, errors="replace")
        except Exception:
            raise UnreadableInputError(f"cannot decode {path} as {encoding}: {exc}") from exc
    if text.startswith(_BOM):
        text = text[1:]
    return text, codec.name


class _Lines:
    """Iterator over physical lines (endings kept) whose position can be moved back."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.pos = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self.pos >= len(self.lines):
            raise StopIteration
        line = self.lines[self.pos]
        self.pos += 1
        return line


def _parse(lines: list[str], delimiter: str) -> Iterator[tuple[int, int, list[str] | None, str | None]]:
    """Yield ``(first_line_index, end_line_index, fields, csv_error)`` for each CSV record.

    ``fields`` is None when the csv module rejected the record (``csv_error`` says why). An
    unterminated quote at end of file is recovered from by rejecting only the line that opened it
    and re-reading the lines after it.
    """
    src = _Lines(lines)
    recoveries = 0

    def new_reader() -> Any:
        return csv.reader(src, delimiter=delimiter, quotechar='"', doublequote=True, strict=True)

    reader = new_reader()
    while True:
        start = src.pos
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            message = str(exc)
            at_eof = src.pos >= len(lines)
            if (
                at_eof
                and "unexpected end of data" in message
                and src.pos - start > 1
                and recoveries < MAX_QUOTE_RECOVERIES
            ):
                recoveries += 1
                src.pos = start + 1
                yield start, start + 1, None, "unterminated quoted field"
            else:
                if "unexpected end of data" in message:
                    message = "unterminated quoted field"
                yield start, max(src.pos, start + 1), None, f"malformed CSV record: {message}"
            reader = new_reader()
            continue
        yield start, src.pos, row, None


def _sniff_delimiter(lines: list[str]) -> str:
    """Pick the candidate delimiter that splits the header into most columns consistently."""
    sample = lines[:200]
    best: tuple[tuple[float, int], str] | None = None
    for delim in DELIMITER_CANDIDATES:
        rows = [r for r in csv.reader(sample, delimiter=delim, strict=False) if r]
        if not rows or len(rows[0]) < 2:
            continue
        width = len(rows[0])
        body = rows[1:-1] if len(rows) > 2 else rows[1:]  # the last sampled row may be cut short
        consistent = sum(len(r) == width for r in body) / len(body) if body else 1.0
        score = (consistent, width)
        if best is None or score > best[0]:
            best = (score, delim)
    return best[1] if best else ","


def _dedupe_header(header: list[str]) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    for i, name in enumerate(header, start=1):
        base = _escape_surrogates(name).strip() or f"column_{i}"
        candidate, k = base, 2
        while candidate in seen:
            candidate, k = f"{base}_{k}", k + 1
        seen.add(candidate)
        names.append(candidate)
    return names


def _record_text(lines: list[str]) -> str:
    text = "".join(lines)
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith(("\n", "\r")):
        return text[:-1]
    return text


def read_csv_records(
    path: Path,
    *,
    source: str,
    encoding: str = "utf-8",
    delimiter: str | None = None,
    column_map: Mapping[str, str] | None = None,
    defaults: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Read a CSV file with a header row into a records frame (:mod:`sources.records`).

    - ``source``: the record ``source`` unless the file has a mapped source column with a value.
    - ``encoding``: the file is decoded with ``errors="surrogateescape"``; records containing
      undecodable bytes get the error ``"invalid <encoding> bytes"`` and ``raw`` shows the bytes
      as ``\\xNN``. A UTF-8 BOM is removed.
    - ``delimiter``: one character; when None it is sniffed among ``, \\t ; |``.
    - ``column_map``: explicit ``{field: column}`` overrides for :func:`map_columns`; every other
      column goes into ``meta``.
    - ``defaults``: ``{field: value}`` for record fields the file lacks or leaves empty
      (e.g. ``{"dataset": "mydata", "task": "sentiment"}``).

    Each CSV record (after the header) becomes one row, numbered 1.. in ``record_no``. Bad records
    are returned with ``error`` set (wrong field count, blank record, invalid bytes, malformed
    quoting) and ``raw`` holding their original text (cut to :data:`MAX_RAW_CHARS`). Empty lines
    in the middle of the file are "blank record" errors; empty (or whitespace-only) lines after the
    last record are not records. NUL characters are stripped and counted in ``meta``. Empty cells are missing
    values; text is otherwise kept as is (``tickers`` included) for the warehouse to normalise.

    Raises ``OSError`` (``FileNotFoundError`` ...) when the file cannot be read,
    ``UnreadableInputError`` for a directory, an empty file or a file without a header row (the
    ingest task quarantines such a file as one record, see
    :func:`sources.records.read_or_quarantine`), and
    ``InputConfigError`` for an unknown encoding, a bad ``delimiter``, ``column_map`` naming a
    missing column, or ``defaults`` naming an unknown field (raised: the call is wrong).
    """
    path = Path(path).expanduser()
    if delimiter is not None and len(delimiter) != 1:
        raise InputConfigError(f"delimiter must be one character, got {delimiter!r}")
    unknown = sorted(set(defaults or {}) - set(_DEFAULTABLE))
    if unknown:
        raise InputConfigError(f"defaults for unknown record fields {unknown}; allowed: {list(_DEFAULTABLE)}")
    _raise_field_limit()

    text, enc_name = _read_text(path, encoding)
    raw_lines = list(io.StringIO(text, newline=""))
    nul_counts: dict[int, int] = {}
    lines: list[str] = []
    for i, line in enumerate(raw_lines):
        if "\x00" in line:
            nul_counts[i] = line.count("\x00")
            line = line.replace("\x00", "")
        lines.append(line)
    del raw_lines, text

    # Blank lines before the header are skipped; the header is the first non-blank line.
    first = 0
    while first < len(lines) and not lines[first].strip():
        first += 1
    if first >= len(lines):
        raise UnreadableInputError(f"CSV file {path} is empty: no header row")

    delim = delimiter or _sniff_delimiter(lines[first:])
    records = _parse(lines[first:], delim)
    header_item = next(records)
    if header_item[2] is None:
        raise UnreadableInputError(f"CSV file {path} has an unreadable header row: {header_item[3]}")
    header = _dedupe_header(header_item[2])
    mapping = map_columns(header, column_map)
    col_to_field = {col: field for field, col in mapping.items()}
    extra_cols = [(i, name) for i, name in enumerate(header) if name not in col_to_field]
    width = len(header)
    base_defaults = {k: v for k, v in (defaults or {}).items() if v not in (None, "")}

    rows: list[dict[str, Any]] = []
    pending_blank: list[dict[str, Any]] = []  # empty lines; only kept if a record follows them

    for start, end, fields, csv_error in records:
        start += first
        end += first
        record_lines = lines[start:end]
        raw = _record_text(record_lines)
        notes: dict[str, Any] = {"line": start + 1}
        nuls = sum(nul_counts.get(i, 0) for i in range(start, end)) if nul_counts else 0
        if nuls:
            notes["nul_bytes_removed"] = nuls
        bad_bytes = _has_surrogates(raw)
        if bad_bytes:
            raw = _escape_surrogates(raw)
        if len(raw) > MAX_RAW_CHARS:
            raw = raw[:MAX_RAW_CHARS]
            notes["raw_truncated"] = True

        row: dict[str, Any] = {"raw": raw, "source": source, **base_defaults}
        errors: list[str] = []
        if csv_error is not None:
            errors.append(csv_error)
        elif not fields or all(not f.strip() for f in fields):
            errors.append("blank record")
        elif len(fields) != width:
            errors.append(f"expected {width} fields, got {len(fields)}")
        if bad_bytes:
            errors.append(f"invalid {enc_name} bytes")

        extras: dict[str, Any] = {}
        if not errors and fields is not None:
            for col, value in zip(header, fields):
                field = col_to_field.get(col)
                if field is not None and value != "":
                    row[field] = value
            for i, name in extra_cols:
                key = f"column:{name}" if name in _READER_NOTES else name
                extras[key] = fields[i]
            if not row.get("source"):
                row["source"] = source
        row["meta"] = to_meta({**extras, **notes})
        row["error"] = "; ".join(errors) if errors else None

        if csv_error is None and not raw.strip():
            pending_blank.append(row)
            continue
        rows.extend(pending_blank)
        pending_blank.clear()
        rows.append(row)

    for n, row in enumerate(rows, start=1):
        row["record_no"] = n
    return records_frame(rows)


def file_fingerprint(path: Path) -> dict[str, Any]:
    """Identify a file's current version: ``{"path": resolved path, "size", "mtime_ns"}``.

    Used to skip files already ingested unchanged. Raises ``FileNotFoundError`` if it is missing.
    """
    resolved = Path(path).expanduser().resolve()
    st = resolved.stat()
    return {"path": str(resolved), "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def _has_magic(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def expand_globs(patterns: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Expand file patterns (``~`` and ``**`` allowed) into existing files.

    Returns ``(files, unmatched)``: ``files`` are resolved, de-duplicated and sorted regular
    files (directories are never returned); ``unmatched`` lists, in input order, each pattern
    that matched no file, so the caller can report it.
    """
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [os.fspath(patterns)]
    found: set[Path] = set()
    unmatched: list[str] = []
    for pattern in patterns:
        expanded = os.path.expanduser(os.fspath(pattern))
        if _has_magic(expanded):
            candidates = [Path(p) for p in glob.glob(expanded, recursive=True)]
        else:
            candidates = [Path(expanded)]
        hits = {p.resolve() for p in candidates if p.is_file()}
        if hits:
            found |= hits
        else:
            unmatched.append(pattern)
    return sorted(found), unmatched
