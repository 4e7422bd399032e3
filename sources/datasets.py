"""Readers for the public datasets in ``shared/data`` (one reader per folder format).

Every reader takes a path and returns a records frame (:func:`sources.records.records_frame`,
or :func:`sources.records.behaviors_frame` for MIND click logs): one row per record *as received*,
in file order, with ``record_no`` the 1-based position of the record in its input and ``raw`` the
record as received (the text line, the CSV/TSV row's exact text, the whole BBC file, or the Reuters
SGML block truncated to :data:`RAW_LIMIT` characters). Readers never raise on a bad record: they
set ``error`` to a human-readable reason and keep going; only a whole unreadable file raises
(``OSError`` when missing or unreadable, ``UnreadableInputError`` for a wrong header or side
file). Plain Python only (no Prefect, no DuckDB).

Conventions
-----------
- ``source``: ``financial_phrasebank``, ``ag_news``, ``bbc``, ``reuters``, ``cnbc``,
  ``guardian``, ``gold_news`` or ``mind``.
- ``source_id``: stable id within the source. Reuters ``NEWID``; BBC ``<topic>/<NNN>``; AG News
  ``<file stem>-<n>`` (``test-1`` ... 1-based data row); gold the URL (row number when empty);
  MIND the ``N…`` id. PhraseBank, CNBC and Guardian leave it missing: the warehouse hashes the
  normalised text instead (so a PhraseBank sentence present in the four agreement files becomes
  one article with four label rows).
- ``published_at``: ISO-8601 in UTC (``2020-07-17T23:51:00+00:00``). CNBC times are US Eastern
  (``Sept`` accepted, whitespace collapsed); Guardian ``DD-Mon-YY`` is midnight UTC and the
  ``Mon-YY`` rows become the 1st of the month (meta ``date_note``); gold dates are day-first
  (``DD-MM-YYYY`` / ``D/M/YYYY``); Reuters and MIND times carry no zone and are taken as UTC.
  A date that cannot be parsed leaves ``published_at`` missing and puts ``date_raw`` and
  ``date_error`` in ``meta``; the record itself is kept (it still carries a useful label).
- Text: ``title`` is one line (whitespace runs collapsed); ``body`` keeps line/paragraph breaks
  but collapses other whitespace. Junk is removed, nothing else: Reuters control-character
  references (``&#2;``, ``&#3;`` ...), real control characters and the trailing ``Reuter``
  sign-off; AG News' broken entities (`` #39;`` -> ``'``, `` #36;`` -> ``$``, `` quot;``,
  ``&lt;`` ...), its literal backslash line-break markers and leftover HTML tags. Reuters bodies
  are re-flowed (hard-wrapped lines joined, one paragraph per line); UNPROC tables keep their lines.
- Labels: ``dataset``/``task``/``label`` (``split`` where the data defines one). Labels are kept
  *as found* even when outside the allowed set (the warehouse's expectations reject those);
  gold ``Price Sentiment`` keeps ``none`` ("no price information") as its own value. Reuters
  multi-labels are joined with ``|`` (a topic listed twice is kept once, see meta
  ``duplicate_topics``); its split is ModApte (``train``/``test``, else ``unused``: training
  leaves ``unused`` out). AG News' split is the file it came from (``test``).
- Blank CSV rows (CNBC ``,,``) are kept as records with ``error="blank record"``.

:data:`DATASETS` at the bottom registers each dataset: folder, glob pattern (one batch per match)
and reader; use :func:`dataset_files` and :func:`read_dataset_file` to run them.
"""

from __future__ import annotations

import csv
import html
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import pandas as pd

from sources.records import UnreadableInputError, behaviors_frame, records_frame, to_meta

RAW_LIMIT = 20_000
EASTERN = ZoneInfo("America/New_York")

# ----------------------------------------------------------------------------- text helpers

_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_NUM_REF = re.compile(r"&#(\d+);")
_ENTITY = re.compile(r"&(#\d+|#[xX][0-9a-fA-F]+|amp|lt|gt|quot|apos|nbsp|hellip);")
_H_SPACE = re.compile(r"[^\S\n]+")


def _unescape_entities(text: str) -> str:
    """Unescape the entities real data uses (numeric, amp/lt/gt/quot/...), nothing fancier."""
    return _ENTITY.sub(lambda m: html.unescape(m.group(0)), text)


def _strip_controls(text: str) -> str:
    """Drop control-character references (``&#2;``, ``&#127;``) and real control characters."""
    def ref(m: re.Match[str]) -> str:
        n = int(m.group(1))
        return "" if n < 32 or 127 <= n < 160 else m.group(0)
    text = _NUM_REF.sub(ref, text.replace("\r\n", "\n").replace("\r", "\n"))
    return _CONTROL_CHARS.sub("", text)


def _one_line(text: str | None) -> str | None:
    """Collapse every whitespace run (newlines included) to one space; None when empty."""
    if text is None:
        return None
    text = " ".join(text.split())
    return text or None


def _paragraphs(text: str | None) -> str | None:
    """Keep line breaks (at most one blank line in a row), collapse other whitespace; None when empty."""
    if text is None:
        return None
    lines = [_H_SPACE.sub(" ", line).strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return text or None


def _iso(dt: datetime) -> str:
    """ISO-8601 in UTC; naive datetimes are taken as UTC."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat()


def _date_meta(raw: str, error: str) -> dict[str, str]:
    return {"date_raw": raw, "date_error": error}


def _csv_rows(path: Path, delimiter: str = ",", encoding: str = "utf-8") -> Iterator[tuple[list[str], str]]:
    """Yield ``(fields, raw_text)`` per CSV record; ``raw_text`` is the record's exact text (CR/LF cut)."""
    consumed: list[str] = []
    # surrogateescape: an undecodable byte costs its record (records_frame quarantines it), not the file.
    with open(path, encoding=encoding, errors="surrogateescape", newline="") as fh:
        def lines() -> Iterator[str]:
            for line in fh:
                consumed.append(line)
                yield line
        for fields in csv.reader(lines(), delimiter=delimiter):
            raw = "".join(consumed).rstrip("\r\n")
            consumed.clear()
            yield fields, raw


def _text_lines(path: Path, encoding: str = "utf-8") -> list[str]:
    """Split a file into lines (LF or CRLF); no phantom empty line for a trailing newline."""
    lines = path.read_bytes().decode(encoding, "surrogateescape").split("\n")  # bad bytes: see _csv_rows
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def _is_blank(fields: list[str]) -> bool:
    return all(not f.strip() for f in fields)


def _headed_rows(path: Path, expected: list[str], delimiter: str = ",") -> tuple[Iterator[tuple[list[str], str]],
                                                                             list[str], dict[str, int]]:
    """The data rows of a CSV file with a header row, the header, and the expected columns' indexes.

    A file without those columns (or empty: no header at all) is unreadable: UnreadableInputError.
    """
    it = _csv_rows(path, delimiter=delimiter)
    header, _ = next(it, ([], ""))
    index = {name.strip(): i for i, name in enumerate(header)}
    missing = [c for c in expected if c not in index]
    if missing:
        raise UnreadableInputError(f"{path}: header {header!r} lacks columns {missing!r}")
    return it, header, {c: index[c] for c in expected}


# ----------------------------------------------------------------------------- Financial PhraseBank

def read_phrasebank(path: Path | str) -> pd.DataFrame:
    """Read a Financial PhraseBank ``Sentences_<N>Agree.txt`` file (latin-1, ``sentence@label``).

    Splits on the last ``@``; the sentence goes to ``body``; dataset is ``phrasebank_<n>agree``
    from the file name, task ``sentiment``. A line without ``@`` is kept with an error.
    """
    path = Path(path)
    m = re.search(r"Sentences_(\w+?)Agree", path.name, re.IGNORECASE)
    dataset = f"phrasebank_{m.group(1).lower()}agree" if m else "financial_phrasebank"
    rows = []
    for no, line in enumerate(_text_lines(path, "latin-1"), start=1):
        row: dict[str, Any] = {"record_no": no, "raw": line, "source": "financial_phrasebank",
                               "lang": "en", "dataset": dataset, "task": "sentiment"}
        if not line.strip():
            row["error"] = "blank record"
        elif "@" not in line:
            row["body"] = _one_line(line)
            row["error"] = "no '@label' separator"
        else:
            sentence, label = line.rsplit("@", 1)
            row["body"] = _one_line(sentence)
            row["label"] = label.strip() or None
            if row["body"] is None:
                row["error"] = "empty sentence"
            elif row["label"] is None:
                row["error"] = "empty label"
        rows.append(row)
    return records_frame(rows)


# ----------------------------------------------------------------------------- AG News

AG_NEWS_LABELS = {"1": "world", "2": "sports", "3": "business", "4": "sci_tech"}
_AG_BROKEN = re.compile(r"[&\s](#\d+|#x[0-9a-fA-F]+|quot|amp|lt|gt|hellip|nbsp|apos);")
_AG_BARE = re.compile(r"(?<![A-Za-z0-9&])(#\d+|quot|amp|lt|gt|hellip);")
_HTML_TAG = re.compile(r"</?(?:a|b|i|u|p|br|font|strong|em|span|div|img)\b[^<>]*>", re.IGNORECASE)
_AG_TICKER = re.compile(r"<([A-Z][A-Z0-9&-]{0,7}\.[A-Z]{1,3})>|ticker=([A-Z][A-Z0-9-]{0,7}\.[A-Z]{1,3})\b")


def clean_ag_news(text: str) -> str | None:
    """Repair AG News text: broken entities (`` #39;`` -> ``'``; the space stood for ``&``),
    proper entities, backslash line-break markers -> spaces, leftover HTML tags; collapse spaces."""
    return _one_line(_HTML_TAG.sub("", _ag_repair(text)))


def _ag_repair(text: str) -> str:
    text = _AG_BROKEN.sub(lambda m: html.unescape(f"&{m.group(1)};"), text)
    text = _AG_BARE.sub(lambda m: html.unescape(f"&{m.group(1)};"), text)
    return _unescape_entities(text).replace("\\", " ")


def read_ag_news(path: Path | str) -> pd.DataFrame:
    """Read AG News ``test.csv`` (no header; class index, title, description).

    ``source_id`` is ``<stem>-<n>`` (n = 1-based row); label 1-4 -> world/sports/business/sci_tech
    (an unknown index is kept as found); split is the file stem (``test``), the published split the
    row came from. Only the test file ships, so there is no train/test split to keep: training splits
    AG News itself (:mod:`warehouse.training_data`). Tickers written ``<TXN.N>`` in the text go to
    ``tickers``.
    """
    path = Path(path)
    rows = []
    for no, (fields, raw) in enumerate(_csv_rows(path), start=1):
        row: dict[str, Any] = {"record_no": no, "raw": raw, "source": "ag_news", "lang": "en",
                               "source_id": f"{path.stem}-{no}", "dataset": "ag_news",
                               "task": "topic", "split": path.stem if path.stem in ("train", "test") else None}
        if _is_blank(fields):
            row["error"] = "blank record"
        elif len(fields) != 3:
            row["error"] = f"expected 3 fields (class, title, description), got {len(fields)}"
        else:
            cls, title, desc = (f.strip() for f in fields)
            row["label"] = AG_NEWS_LABELS.get(cls, cls or None)
            row["title"], row["body"] = clean_ag_news(title), clean_ag_news(desc)
            tickers = dict.fromkeys(a or b for a, b in _AG_TICKER.findall(_ag_repair(title + " " + desc)))
            row["tickers"] = ",".join(tickers) or None
            if row["title"] is None and row["body"] is None:
                row["error"] = "no title or description text"
        rows.append(row)
    return records_frame(rows)


# ----------------------------------------------------------------------------- BBC

def read_bbc(path: Path | str) -> pd.DataFrame:
    """Read BBC News articles: a topic folder (all ``*.txt``, sorted) or one ``<topic>/<NNN>.txt``.

    Line 1 is the title, the rest the body; label = topic folder name. ``source_id`` is left
    empty so the id is the hash of the text: the release has 98 byte-identical copies under
    different file names, and they must be one article (else train/test splits leak). The file
    name is kept in meta. Files that are not UTF-8 fall back to latin-1 (meta ``encoding``).
    """
    path = Path(path)
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    rows = []
    for no, file in enumerate(files, start=1):
        topic = file.parent.name
        row: dict[str, Any] = {"record_no": no, "source": "bbc", "lang": "en", "dataset": "bbc",
                               "task": "topic", "label": topic}
        data = file.read_bytes()
        meta: dict[str, Any] = {"file": f"{topic}/{file.name}"}
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
            meta["encoding"] = "latin-1 fallback"
        row["raw"] = text
        title, _, body = text.lstrip("\ufeff").strip().partition("\n")
        row["title"], row["body"] = _one_line(title), _paragraphs(body)
        row["meta"] = to_meta(meta)
        if row["title"] is None:
            row["error"] = "empty file"
        rows.append(row)
    return records_frame(rows)


# ----------------------------------------------------------------------------- Reuters-21578

_R_BLOCK_START = re.compile(r"(?=<REUTERS[\s>])")
_R_ATTR = re.compile(r'([A-Z]+)="([^"]*)"')
_R_DATE = re.compile(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})\s+(\d+):(\d{2}):(\d{2})")
_R_SIGNOFF = re.compile(r"(?:\s*\breuter\b(?:\s|\.|\^M)*)+\Z", re.IGNORECASE)
_MONTHS = {m: i for i, m in enumerate(
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], start=1)}


def _tag(block: str, name: str) -> str | None:
    m = re.search(rf"<{name}\b[^>]*>(.*?)</{name}>", block, re.DOTALL)
    return m.group(1) if m else None


def _reuters_text(text: str | None) -> str | None:
    return None if text is None else _unescape_entities(_strip_controls(text))


def _reuters_list(block: str, name: str) -> list[str]:
    inner = _tag(block, name) or ""
    return [v for v in (_one_line(_reuters_text(d)) for d in re.findall(r"<D>(.*?)</D>", inner, re.DOTALL)) if v]


def parse_reuters_date(value: str) -> str:
    """Parse the first ``D-MON-YYYY HH:MM:SS`` in a Reuters DATE (no zone: UTC) to ISO-8601.

    Raises ValueError with a readable reason when there is no such match or it is impossible.
    """
    m = _R_DATE.search(value)
    if not m:
        raise ValueError("no D-MON-YYYY HH:MM:SS date found")
    day, mon, year, hh, mm, ss = m.groups()
    month = _MONTHS.get(mon.upper())
    if month is None:
        raise ValueError(f"unknown month {mon!r}")
    try:
        return _iso(datetime(int(year), month, int(day), int(hh), int(mm), int(ss)))
    except ValueError as exc:
        raise ValueError(f"impossible date/time {m.group(0)!r}: {exc}") from None


def _reuters_record(block: str, no: int) -> dict[str, Any]:
    head = block[: block.find(">") + 1]
    attrs = dict(_R_ATTR.findall(head))
    row: dict[str, Any] = {"record_no": no, "raw": block[:RAW_LIMIT], "source": "reuters", "lang": "en",
                           "source_id": attrs.get("NEWID") or None, "dataset": "reuters", "task": "topic"}
    meta: dict[str, Any] = {"lewissplit": attrs.get("LEWISSPLIT"), "topics_attr": attrs.get("TOPICS"),
                            "cgisplit": attrs.get("CGISPLIT"), "oldid": attrs.get("OLDID")}
    date_raw = _one_line(_reuters_text(_tag(block, "DATE")))
    if date_raw is None:
        meta.update(_date_meta("", "no DATE element"))
    else:
        try:
            row["published_at"] = parse_reuters_date(date_raw)
        except ValueError as exc:
            meta.update(_date_meta(date_raw, str(exc)))
    topics = _reuters_list(block, "TOPICS")
    unique = list(dict.fromkeys(topics))
    if len(unique) < len(topics):
        meta["duplicate_topics"] = sorted({t for t in topics if topics.count(t) > 1})
    row["label"] = "|".join(unique) or None
    for name in ("PLACES", "PEOPLE", "ORGS", "EXCHANGES", "COMPANIES"):
        meta[name.lower()] = _reuters_list(block, name)
    text_m = re.search(r"<TEXT\b([^>]*)>(.*?)</TEXT>", block, re.DOTALL)
    text_type = (dict(_R_ATTR.findall(text_m.group(1))).get("TYPE") if text_m else None) or "NORMAL"
    meta["text_type"] = text_type
    inner = text_m.group(2) if text_m else ""
    row["title"] = _one_line(_reuters_text(_tag(inner, "TITLE")))
    meta["dateline"] = _one_line(_reuters_text(_tag(inner, "DATELINE")))
    body = _reuters_text(_tag(inner, "BODY"))
    if body is not None:
        body = _R_SIGNOFF.sub("", body)
        # Re-flow: an indented line starts a paragraph; other line breaks are hard wraps.
        paras = (_one_line(p) for p in re.split(r"\n(?=[ \t])", body))
        row["body"] = "\n".join(p for p in paras if p) or None
    elif text_type == "UNPROC":
        row["body"] = _paragraphs(_R_SIGNOFF.sub("", _reuters_text(inner) or ""))
    # BRIEF docs have only a title (their "Blah blah blah." filler is dropped).
    lewis, has_topics = attrs.get("LEWISSPLIT"), attrs.get("TOPICS") == "YES"
    row["split"] = ("train" if lewis == "TRAIN" and has_topics else
                    "test" if lewis == "TEST" and has_topics else "unused")
    row["meta"] = to_meta(meta)
    errors = []
    if "NEWID" not in attrs:
        errors.append("no NEWID attribute")
    if text_m is None:
        errors.append("no <TEXT> element")
    elif row["title"] is None and row["body"] is None:
        errors.append("no title or body text")
    row["error"] = "; ".join(errors) or None
    return row


def read_reuters(path: Path | str) -> pd.DataFrame:
    """Read a Reuters-21578 ``reut2-NNN.sgm`` file (latin-1 SGML), one row per ``<REUTERS>`` block.

    ``source_id`` = NEWID; label = TOPICS joined with ``|``; split = ModApte; places, people, orgs,
    exchanges, companies, LEWISSPLIT, TOPICS attribute, CGISPLIT, OLDID, DATELINE and TEXT TYPE in
    meta. An unterminated block is kept with an error.
    """
    text = Path(path).read_bytes().decode("latin-1")
    rows = []
    chunks = [c for c in _R_BLOCK_START.split(text) if c.startswith("<REUTERS")]
    for no, chunk in enumerate(chunks, start=1):
        end = chunk.find("</REUTERS>")
        if end < 0:
            rows.append({"record_no": no, "raw": chunk[:RAW_LIMIT], "source": "reuters",
                         "error": "unterminated <REUTERS> block (no </REUTERS>)"})
            continue
        rows.append(_reuters_record(chunk[: end + len("</REUTERS>")], no))
    return records_frame(rows)


# ----------------------------------------------------------------------------- CNBC / Guardian

def parse_cnbc_time(value: str) -> str:
    """Parse a CNBC time like ``" 7:51  PM ET Fri, 17 July 2020"`` (US Eastern) to ISO-8601 UTC."""
    text = re.sub(r"\bSept\b", "Sep", " ".join(value.split()))
    text = re.sub(r"\s+ET\b", "", text)
    for fmt in ("%I:%M %p %a, %d %B %Y", "%I:%M %p %a, %d %b %Y"):
        try:
            return _iso(datetime.strptime(text, fmt).replace(tzinfo=EASTERN))
        except ValueError:
            continue
    raise ValueError("not 'h:mm AM/PM ET Day, D Month YYYY'")


def read_cnbc(path: Path | str) -> pd.DataFrame:
    """Read ``cnbc_headlines.csv`` (Headlines, Time, Description): title, body, published_at.

    Blank ``,,`` rows are kept with ``error="blank record"``; no labels; ``source_id`` is left
    missing (the warehouse hashes the text).
    """
    path = Path(path)
    it, header, col = _headed_rows(path, ["Headlines", "Time", "Description"])
    rows = []
    for no, (fields, raw) in enumerate(it, start=1):
        row: dict[str, Any] = {"record_no": no, "raw": raw, "source": "cnbc", "lang": "en"}
        if _is_blank(fields):
            row["error"] = "blank record"
        elif len(fields) != len(header):
            row["error"] = f"expected {len(header)} fields, got {len(fields)}"
        else:
            row["title"] = _one_line(fields[col["Headlines"]])
            row["body"] = _paragraphs(fields[col["Description"]])
            time_raw = fields[col["Time"]]
            try:
                row["published_at"] = parse_cnbc_time(time_raw)
            except ValueError as exc:
                row["meta"] = to_meta(_date_meta(time_raw, str(exc)))
            if row["title"] is None:
                row["error"] = "no headline"
        rows.append(row)
    return records_frame(rows)


def read_guardian(path: Path | str) -> pd.DataFrame:
    """Read ``guardian_headlines.csv`` (Time, Headlines): title and a date-only published_at.

    ``DD-Mon-YY`` -> midnight UTC; ``Mon-YY`` -> the 1st of that month, meta
    ``{"date_note": "day missing, assumed 1st"}``.
    """
    path = Path(path)
    it, header, col = _headed_rows(path, ["Time", "Headlines"])
    rows = []
    for no, (fields, raw) in enumerate(it, start=1):
        row: dict[str, Any] = {"record_no": no, "raw": raw, "source": "guardian", "lang": "en"}
        if _is_blank(fields):
            row["error"] = "blank record"
        elif len(fields) != len(header):
            row["error"] = f"expected {len(header)} fields, got {len(fields)}"
        else:
            row["title"] = _one_line(fields[col["Headlines"]])
            date_raw = " ".join(fields[col["Time"]].split())
            meta: dict[str, Any] = {}
            try:
                row["published_at"] = _iso(datetime.strptime(date_raw, "%d-%b-%y"))
            except ValueError:
                try:
                    row["published_at"] = _iso(datetime.strptime(date_raw, "%b-%y"))
                    meta["date_note"] = "day missing, assumed 1st"
                except ValueError:
                    meta.update(_date_meta(date_raw, "not DD-Mon-YY or Mon-YY"))
            row["meta"] = to_meta(meta)
            if row["title"] is None:
                row["error"] = "no headline"
        rows.append(row)
    return records_frame(rows)


# ----------------------------------------------------------------------------- gold commodity news

GOLD_COLUMNS = ["Dates", "URL", "News", "Price Direction Up", "Price Direction Constant",
                "Price Direction Down", "Asset Comparision", "Past Information",
                "Future Information", "Price Sentiment"]


def parse_day_first_date(value: str) -> str:
    """Parse a gold-news date, ``DD-MM-YYYY`` or ``D/M/YYYY`` (day first), to ISO midnight UTC."""
    text = value.strip()
    m = re.fullmatch(r"(\d{1,2})[-/](\d{1,2})[-/](\d{4})", text)
    if not m:
        raise ValueError("garbled date, not DD-MM-YYYY or D/M/YYYY")
    day, month, year = (int(g) for g in m.groups())
    try:
        return _iso(datetime(year, month, day))
    except ValueError as exc:
        raise ValueError(f"impossible date: {exc}") from None


def read_gold_news(path: Path | str) -> pd.DataFrame:
    """Read ``gold-dataset-sinha-khandait.csv`` (tab-separated despite the name, with header).

    Headline -> title, URL -> url and source_id; label = ``Price Sentiment`` as found
    (positive/negative/neutral/none, where ``none`` = no price information); the 0/1 flags go to
    meta. Garbled dates keep the row with published_at missing and ``date_error`` in meta.
    """
    path = Path(path)
    it, header, col = _headed_rows(path, GOLD_COLUMNS, delimiter="\t")
    rows = []
    for no, (fields, raw) in enumerate(it, start=1):
        row: dict[str, Any] = {"record_no": no, "raw": raw, "source": "gold_news", "lang": "en",
                               "dataset": "gold_news", "task": "sentiment"}
        if _is_blank(fields):
            row["error"] = "blank record"
        elif len(fields) != len(header):
            row["error"] = f"expected {len(header)} tab-separated fields, got {len(fields)}"
        else:
            get = {c: fields[i].strip() for c, i in col.items()}
            row["title"] = _one_line(_unescape_entities(get["News"]))
            row["url"] = get["URL"] or None
            row["source_id"] = get["URL"] or f"row-{no}"
            row["label"] = get["Price Sentiment"].lower() or None
            meta: dict[str, Any] = {}
            for c in GOLD_COLUMNS[3:9]:
                key = c.lower().replace(" ", "_")
                meta[key] = int(get[c]) if get[c] in ("0", "1") else get[c]
            try:
                row["published_at"] = parse_day_first_date(get["Dates"])
            except ValueError as exc:
                meta.update(_date_meta(get["Dates"], str(exc)))
            row["meta"] = to_meta(meta)
            if row["title"] is None:
                row["error"] = "no headline"
        rows.append(row)
    return records_frame(rows)


# ----------------------------------------------------------------------------- MIND

# MIND ids look like N12345; other MIND-format click logs (the demo stream) use their own item
# ids, so any id without whitespace or a trailing -0/-1 marker is accepted.
_MIND_NID = re.compile(r"[A-Za-z0-9_.:-]+")
_MIND_IMPRESSION = re.compile(r"[A-Za-z0-9_.:-]+-[01]")


def read_mind_titles(news_mind_tsv: Path | str, nid2idx_json: Path | str) -> pd.DataFrame:
    """Read MIND-small titles: ``news_mind.tsv`` (row_index, category, title; default CSV quoting)
    joined to the N-ids of ``nid2idx_small_train.json`` (``{nid: row_index + 1}``).

    One article per TSV row: source_id = N-id, label = category (task ``topic``). A title holding
    a TAB (the damaged N20922 row) is cut there and noted in meta.
    """
    try:
        mapping = json.loads(Path(nid2idx_json).read_text(encoding="utf-8"))
        if not isinstance(mapping, dict):
            raise TypeError(f"a JSON {type(mapping).__name__}, not an object")
        nid_of = {int(idx): nid for nid, idx in mapping.items()}
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError) as exc:
        raise UnreadableInputError(f"{Path(nid2idx_json).name}: not a JSON map of news id to row: {exc}") from exc
    rows = []
    for no, (fields, raw) in enumerate(_csv_rows(Path(news_mind_tsv), delimiter="\t"), start=1):
        row: dict[str, Any] = {"record_no": no, "raw": raw, "source": "mind", "lang": "en",
                               "dataset": "mind", "task": "topic"}
        if len(fields) != 3:
            row["error"] = f"expected 3 tab-separated fields (row_index, category, title), got {len(fields)}"
        elif not fields[0].strip().isdigit():
            row["error"] = f"row_index {fields[0]!r} is not a number"
        else:
            row_index, category, title = int(fields[0]), fields[1].strip(), fields[2]
            meta: dict[str, Any] = {}
            if row_index != no - 1:
                meta["row_index"] = row_index  # only noted when it is not the row's position
            if "\t" in title:
                title, rest = title.split("\t", 1)
                meta["title_note"] = f"cut at first TAB ({len(rest)} chars of abstract dropped)"
            row["title"], row["label"] = _one_line(title), category or None
            row["source_id"] = nid_of.get(row_index + 1)
            row["meta"] = to_meta(meta)
            if row["source_id"] is None:
                row["error"] = f"row_index {row_index} has no news id in {Path(nid2idx_json).name}"
            elif row["title"] is None:
                row["error"] = "empty title"
        rows.append(row)
    return records_frame(rows)


def read_mind_titles_folder(folder: Path | str) -> pd.DataFrame:
    """Registry entry point: :func:`read_mind_titles` on ``folder``'s two files."""
    folder = Path(folder)
    return read_mind_titles(folder / "news_mind.tsv", folder / "nid2idx_small_train.json")


def read_mind_news(path: Path | str) -> pd.DataFrame:
    """Read MIND ``news.tsv`` (8 tab-separated fields, no header, quoting disabled).

    source_id = N-id, title, abstract -> body, url; category, subcategory and the two entity
    lists (parsed JSON) go to meta. No label fields.
    """
    rows = []
    for no, line in enumerate(_text_lines(Path(path)), start=1):
        fields = line.split("\t")
        row: dict[str, Any] = {"record_no": no, "raw": line, "source": "mind", "lang": "en"}
        if not line.strip():
            row["error"] = "blank record"
        elif len(fields) != 8:
            row["error"] = f"expected 8 tab-separated fields, got {len(fields)}"
        else:
            nid, category, subcategory, title, abstract, url, t_ent, a_ent = fields
            row.update(source_id=nid.strip() or None, title=_one_line(title),
                       body=_one_line(abstract), url=url.strip() or None)
            meta: dict[str, Any] = {"category": category, "subcategory": subcategory}
            for key, value in (("title_entities", t_ent), ("abstract_entities", a_ent)):
                try:
                    meta[key] = json.loads(value) if value.strip() else []
                except json.JSONDecodeError:
                    meta[key + "_raw"] = value
                    meta[key + "_error"] = "not valid JSON"
            row["meta"] = to_meta(meta)
            if not _MIND_NID.fullmatch(nid.strip()):
                row["error"] = f"bad news id {nid!r}"
            elif row["title"] is None:
                row["error"] = "empty title"
        rows.append(row)
    return records_frame(rows)


def parse_mind_time(value: str) -> str:
    """Parse a MIND behaviors time ``M/D/YYYY h:mm:ss AM/PM`` (no zone: UTC) to ISO-8601."""
    return _iso(datetime.strptime(" ".join(value.split()), "%m/%d/%Y %I:%M:%S %p"))


def read_mind_behaviors(path: Path | str) -> pd.DataFrame:
    """Read MIND ``behaviors.tsv`` into a behaviors frame (impression_id, user_id, time, history,
    impressions). History and impressions are kept as found (space-separated); a row with the
    wrong field count, a bad time or a bad id/impression token gets an error.
    """
    rows = []
    for no, line in enumerate(_text_lines(Path(path)), start=1):
        fields = line.split("\t")
        row: dict[str, Any] = {"record_no": no, "raw": line, "source": "mind"}
        if not line.strip():
            row["error"] = "blank record"
            rows.append(row)
            continue
        if len(fields) != 5:
            row["error"] = f"expected 5 tab-separated fields, got {len(fields)}"
            rows.append(row)
            continue
        imp_id, user, time_raw, history, impressions = (f.strip() for f in fields)
        row.update(impression_id=imp_id or None, user_id=user or None,
                   history=history or None, impressions=impressions or None)
        errors = []
        if not imp_id.isdigit():
            errors.append(f"bad impression id {imp_id!r}")
        if not user:
            errors.append("empty user id")
        try:
            row["time"] = parse_mind_time(time_raw)
        except ValueError:
            errors.append(f"bad time {time_raw!r} (expected M/D/YYYY h:mm:ss AM/PM)")
        bad_hist = [t for t in history.split() if not _MIND_NID.fullmatch(t)]
        if bad_hist:
            errors.append(f"bad history id {bad_hist[0]!r}")
        if not impressions:
            errors.append("no impressions")
        bad_imp = [t for t in impressions.split() if not _MIND_IMPRESSION.fullmatch(t)]
        if bad_imp:
            errors.append(f"bad impression token {bad_imp[0]!r} (expected <item>-0 or <item>-1)")
        row["error"] = "; ".join(errors) or None
        rows.append(row)
    return behaviors_frame(rows)


# ----------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class DatasetSpec:
    """One public dataset: where its files are and how to read them.

    ``pattern`` is a glob relative to ``folder`` (one batch per match; ``"."`` means the folder
    itself, a trailing ``/`` matches folders); ``target`` says which frame the reader returns.
    """

    name: str
    folder: str
    pattern: str
    reader: Callable[[Path], pd.DataFrame]
    target: Literal["articles", "behaviors", "support_messages"] = "articles"


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("financial_phrasebank", "financial_phrasebank", "Sentences_*Agree.txt", read_phrasebank),
        DatasetSpec("ag_news", "ag_news", "test.csv", read_ag_news),
        DatasetSpec("bbc", "bbc_news", "bbc/*/", read_bbc),
        DatasetSpec("reuters", "reuters21578", "reut2-*.sgm", read_reuters),
        DatasetSpec("cnbc", "financial_news_headlines", "cnbc_headlines.csv", read_cnbc),
        DatasetSpec("guardian", "financial_news_headlines", "guardian_headlines.csv", read_guardian),
        DatasetSpec("gold_news", "gold_commodity_news", "gold-dataset-sinha-khandait.csv", read_gold_news),
        DatasetSpec("mind_news", "mind_small_sample", "news.tsv", read_mind_news),
        DatasetSpec("mind_titles", "mind_small_titles", ".", read_mind_titles_folder),
        DatasetSpec("mind_behaviors", "mind_small_sample", "behaviors.tsv", read_mind_behaviors, "behaviors"),
    )
}


def dataset_files(spec: DatasetSpec, data_dir: Path | str) -> list[Path]:
    """The inputs (files or folders) of ``spec`` under ``data_dir``, sorted; one batch each.

    Raises FileNotFoundError when the dataset folder is missing.
    """
    folder = Path(data_dir) / spec.folder
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset {spec.name!r}: folder {folder} not found")
    if spec.pattern in ("", "."):
        return [folder]
    return sorted(folder.glob(spec.pattern))


def read_dataset_file(spec: DatasetSpec, path: Path | str) -> pd.DataFrame:
    """Read one input of ``spec`` (as returned by :func:`dataset_files`) into its frame."""
    return spec.reader(Path(path))
