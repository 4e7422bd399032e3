"""Hostile input through the full ingest path: nothing crashes, nothing is dropped silently.

"A file of broken records of every kind yields rows_read = inserted + duplicate + quarantined and
a reason per quarantined row." Each hostile file is written here (made-up text), staged, validated
with GX and committed; the expected outcome of every record is listed beside it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from sources.files import read_csv_records
from warehouse import commit, staging, validation
from warehouse.connection import connect, connect_memory
from warehouse.migrate import migrate

# --------------------------------------------------------------------------------------------
# helpers (this file only)
# --------------------------------------------------------------------------------------------


def _migrated(settings):
    with connect(settings) as con:
        migrate(con)
    return settings


def _ingest(settings, *, jsonl: Path | None = None, csv: Path | None = None, source: str = "hostile") -> commit.BatchSummary:
    """Stage (JSONL natively, CSV through the Python reader), validate and commit one batch."""
    batch_dir, manifest = staging.new_batch(settings.staging_dir, source, "articles", str(jsonl or csv))
    with connect_memory(settings) as mem:
        if jsonl is not None:
            staging.stage_jsonl(mem, batch_dir, manifest, jsonl)
        else:
            staging.stage_frame(mem, batch_dir, manifest, read_csv_records(csv, source=source))
    with connect_memory(settings) as mem:
        validation.validate_batch(mem, batch_dir, "articles", settings)
    with connect(settings) as con:
        summary = commit.commit_batch(con, batch_dir)
    assert summary.rows_read == manifest.rows
    assert summary.rows_read == summary.rows_inserted + summary.rows_duplicate + summary.rows_quarantined, summary
    with connect(settings) as con:
        q = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE len(reasons) = 0 OR list_contains(reasons, NULL) "
            "OR list_contains(reasons, '')) FROM quarantine WHERE batch_id = ?",
            [summary.batch_id],
        ).fetchall()[0]
        inserted = con.execute("SELECT count(*) FROM articles WHERE batch_id = ?", [summary.batch_id]).fetchall()[0][0]
    assert q == (summary.rows_quarantined, 0), "every quarantined row needs a non-empty reason"
    assert inserted == summary.rows_inserted
    return summary


def _quarantine(settings, batch_id: str) -> list[tuple[int, str | None, list[str]]]:
    with connect(settings) as con:
        return con.execute(
            "SELECT record_no, raw, reasons FROM quarantine WHERE batch_id = ? ORDER BY record_no", [batch_id]
        ).fetchall()


def _articles(settings, batch_id: str) -> dict[str | None, dict[str, Any]]:
    with connect(settings) as con:
        cur = con.execute("SELECT * FROM articles WHERE batch_id = ?", [batch_id])
        cols = [d[0] for d in cur.description]
        rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    return {r["source_id"] if r["source_id"] is not None else r["title"]: r for r in rows}


@dataclass
class Case:
    """One input record and what must happen to it.

    ``outcome``: 'ok' (inserted), 'dup' (duplicate), 'bad' (quarantined) or 'skip' (not a record).
    ``reason``: a substring one of the quarantine reasons must contain (bad), or None for any.
    ``marker``: the quarantined ``raw`` itself, or a ``b-...`` id (quoted) found in it (JSONL).
    ``check``: for 'ok', expected article fields (looked up by source id, or title without one).
    """

    line: bytes
    outcome: str
    reason: str | None = None
    marker: str | None = None
    key: str | None = None
    check: dict[str, Any] | None = None
    only_reason: bool = False


def _j(obj: Any) -> bytes:
    return json.dumps(obj).encode()


HUGE_BODY = "y" * 2_000_000

JSONL_CASES: list[Case] = [
    Case(b"\xef\xbb\xbf" + _j({"id": "g01", "title": "BOM first line", "body": "Plain body"}), "ok", key="g01",
         check={"title": "BOM first line", "body": "Plain body"}),
    Case(b'{"id": "b-trunc", "title": "truncated', "bad", "malformed JSON line", marker="b-trunc"),
    Case(b"[1, 2, 3]", "bad", "JSON value is not an object", marker="[1, 2, 3]"),
    Case(b"42", "bad", "JSON value is not an object", marker="42"),
    Case(b'"just a string"', "bad", "JSON value is not an object", marker='"just a string"'),
    Case(b"null", "bad", "JSON value is not an object", marker="null"),
    Case(b"true", "bad", "JSON value is not an object", marker="true"),
    Case(b'{"id": "b-utf8", "title": "caf\xe9 latin-1 \xff\xfe bytes"}', "bad", "invalid UTF-8 bytes", marker="b-utf8"),
    Case(b'{"id": "b-surrogate", "title": "lone \\ud800 surrogate"}', "bad", None, marker="b-surrogate"),
    Case(b'{"id": "b-rawnul", "title": "raw\x00nul"}', "bad", "malformed JSON line", marker="b-rawnul"),
    Case(b'{"id": "g-escnul", "title": "escaped \\u0000 nul"}', "ok", key="g-escnul", check={"title": "escaped nul"}),
    Case(b'{"id": "b-ctrl", "title": "raw\x01control"}', "bad", "malformed JSON line", marker="b-ctrl"),
    Case(_j({"id": "g-escctrl", "title": "escaped \u0007 bell \u001b esc"}), "ok", key="g-escctrl",
         check={"title": "escaped bell esc"}),
    Case(_j({"id": "g-crlf", "title": "CRLF ended line"}) + b"\r", "ok", key="g-crlf", check={"title": "CRLF ended line"}),
    Case(b"{}", "bad", "empty text: no title and no body", marker="{}", only_reason=True),
    Case(b"", "skip"),
    Case(b"     ", "skip"),
    Case(_j({"id": "b-huge", "title": "Huge", "body": HUGE_BODY}), "bad", "text length 2000005 outside [3, 200000]",
         marker="b-huge", only_reason=True),
    Case(_j({"id": "g-weird", "title": "Weird keys", "w\u00e9ird k\u00e9y": 1, "it's": 2, "a.b": 3, 'q"k': 4, "$": 5,
             "\u65e5\u672c": 6}), "ok", key="g-weird", check={"title": "Weird keys"}),
    Case(_j({"id": "g-nested", "title": {"nested": [1, 2]}, "body": "Nested title object"}), "ok", key="g-nested"),
    Case(_j({"id": "g-number", "title": 12345, "body": 6.5}), "ok", key="g-number", check={"title": "12345", "body": "6.5"}),
    Case(_j({"id": "g-html", "title": "<script>alert('x')</script><b>Bold</b> move",
             "body": "<p>Para one</p><p>Para &amp; two</p>"}), "ok", key="g-html",
         check={"title": "Bold move", "body": "Para one Para & two"}),
    Case(_j({"id": "g-entities", "title": "AT&amp;T &lt;rises&gt; &quot;5%&quot; it&#39;s"}), "ok", key="g-entities",
         check={"title": "AT&T <rises> \"5%\" it's"}),
    Case(_j({"id": "g01", "title": "Same id, other text"}), "dup"),
    Case(_j({"title": "No Id Story", "body": "Same body"}), "ok", key="No Id Story"),
    Case(_j({"title": "NO ID STORY", "body": "same BODY"}), "dup"),
    Case(_j({"id": "b-future", "title": "From the future", "published_at": "2999-01-01T00:00:00Z"}), "bad",
         "published_at in the future", marker="b-future", only_reason=True),
    Case(_j({"id": "b-ancient", "title": "Hastings", "published_at": "1066-10-14"}), "bad",
         "published_at before 1900-01-01", marker="b-ancient", only_reason=True),
    Case(_j({"id": "b-garbled", "title": "Garbled date", "published_at": "32/13/2020 25:61"}), "bad",
         "unparseable published_at: 32/13/2020 25:61", marker="b-garbled", only_reason=True),
    Case(_j({"id": "g-epoch", "title": "Epoch seconds", "published_at": 1594980000}), "ok", key="g-epoch",
         check={"published_at": datetime(2020, 7, 17, 10, tzinfo=UTC)}),
    Case(_j({"id": "g-epochms", "title": "Epoch millis", "published_at": "1594980000000"}), "ok", key="g-epochms",
         check={"published_at": datetime(2020, 7, 17, 10, tzinfo=UTC)}),
    Case(_j({"id": "b-label", "title": "Unknown label", "label": "bullish", "task": "sentiment"}), "bad",
         "unknown sentiment label: bullish", marker="b-label", only_reason=True),
    Case(_j({"id": "b-notask", "title": "Label no task", "label": "positive"}), "bad",
         "label without a known task", marker="b-notask", only_reason=True),
    Case(_j({"id": "g-label", "title": "Good label", "label": "Positive", "task": "sentiment"}), "ok", key="g-label"),
    Case(b'{"id": "b-two", "title": "a"}{"id": "b-two2", "title": "b"}', "bad", "malformed JSON line", marker="b-two"),
    Case(b'{"id": "b-trail", "title": "trailing"} junk', "bad", "malformed JSON line", marker="b-trail"),
]


def _check_cases(settings, summary: commit.BatchSummary, cases: list[Case], *, by_record_no: bool) -> None:
    records = [c for c in cases if c.outcome != "skip"]
    n_bad = sum(c.outcome == "bad" for c in records)
    assert summary.rows_read == len(records)
    assert summary.rows_inserted == sum(c.outcome == "ok" for c in records)
    assert summary.rows_duplicate == sum(c.outcome == "dup" for c in records)
    assert summary.rows_quarantined == n_bad
    over = n_bad / len(records) > settings.max_quarantine_fraction
    assert summary.status == ("failed_validation" if over else "succeeded")

    quarantine = _quarantine(settings, summary.batch_id)
    if by_record_no:
        expected_bad = [no for no, c in enumerate(records, start=1) if c.outcome == "bad"]
        assert [q[0] for q in quarantine] == expected_bad
        found = {no: (raw, reasons) for no, raw, reasons in quarantine}
        matched = [(c, found[no]) for no, c in enumerate(records, start=1) if c.outcome == "bad"]
    else:
        matched = []
        for c in (c for c in records if c.outcome == "bad"):
            hits = [(raw, reasons) for _, raw, reasons in quarantine
                    if raw is not None and (raw == c.marker or (c.marker.startswith("b-") and f'"{c.marker}"' in raw))]
            assert len(hits) == 1, (c.marker, hits)
            matched.append((c, hits[0]))
    for c, (raw, reasons) in matched:
        assert raw is not None
        if c.reason is not None:
            assert any(c.reason in r for r in reasons), (c.marker or c.line[:60], reasons)
        if c.only_reason:
            assert len(reasons) == 1, (c.marker, reasons)

    articles = _articles(settings, summary.batch_id)
    for c in records:
        if c.outcome == "ok":
            assert c.key in articles, (c.key, sorted(articles, key=str))
            for field, value in (c.check or {}).items():
                assert articles[c.key][field] == value, (c.key, field, articles[c.key][field])
    for a in articles.values():  # cleaned: no markup, no control characters, no outer spaces
        for text in (a["title"], a["body"]):
            if text is not None:
                assert text == text.strip() and "<b>" not in text and "<script" not in text
                assert not any(ord(ch) < 32 and ch != "\n" for ch in text), repr(text)


def test_hostile_jsonl(settings, tmp_path: Path) -> None:
    _migrated(settings)
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join(c.line for c in JSONL_CASES) + b"\n")
    summary = _ingest(settings, jsonl=path)
    _check_cases(settings, summary, JSONL_CASES, by_record_no=False)
    # The label of the good labelled record was stored; the bad ones were not.
    with connect(settings) as con:
        assert con.execute("SELECT dataset, task, label FROM labels").fetchall() == [("hostile", "sentiment", "positive")]
    # Same file again: every good record is now a duplicate, the bad ones are quarantined again.
    again = _ingest(settings, jsonl=path)
    assert again.rows_inserted == 0
    assert again.rows_duplicate == summary.rows_inserted + summary.rows_duplicate
    assert again.rows_quarantined == summary.rows_quarantined


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b" \t ", id="tab"),
        pytest.param(b"\t", id="only-tab"),
    ],
)
def test_whitespace_only_line_is_never_a_record(settings, tmp_path: Path, line: bytes) -> None:
    """Blank lines are skipped on the fast path and on the exact path alike (the exact path once
    quarantined tab-only lines as malformed JSON, so the count depended on other lines)."""
    _migrated(settings)
    good = b'{"id": "1", "title": "Good story one"}\n' + line + b'\n{"id": "2", "title": "Good story two"}\n'
    clean = tmp_path / "clean.jsonl"
    clean.write_bytes(good)
    with_bad = tmp_path / "with-bad.jsonl"
    with_bad.write_bytes(good + b"{broken\n")
    a = _ingest(settings, jsonl=clean)
    b = _ingest(settings, jsonl=with_bad)
    assert (a.rows_read, a.rows_quarantined) == (2, 0)
    assert (b.rows_read, b.rows_quarantined) == (3, 1)


@pytest.mark.parametrize(
    "first",
    [
        pytest.param({"w\u00e9ird k\u00e9y": 1, "it's": 2, 'q"k': 3, "a.b": 4, "$": 5, "x\\y": 6}, id="odd-characters"),
        pytest.param(
            {"": 1},
            id="empty-key",
        ),
    ],
)
def test_unusual_json_keys_do_not_crash(settings, tmp_path: Path, first: dict) -> None:
    _migrated(settings)
    path = tmp_path / "keys.jsonl"
    rows = [{"id": "1", "title": "First story", **first}, {"id": "2", "title": "Second story"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    s = _ingest(settings, jsonl=path)
    assert (s.rows_read, s.rows_inserted) == (2, 2)


def test_quarantined_raw_is_the_whole_line(settings, tmp_path: Path) -> None:
    _migrated(settings)
    line = b'{"id": "r", "title": "raw\x1erecord separator tail"}'
    path = tmp_path / "rs.jsonl"
    path.write_bytes(b'{"id": "g", "title": "Good story"}\n' + line + b"\n")
    s = _ingest(settings, jsonl=path)
    assert (s.rows_read, s.rows_inserted, s.rows_quarantined) == (2, 1, 1)
    ((_, raw, reasons),) = _quarantine(settings, s.batch_id)
    assert "malformed JSON line" in reasons
    assert raw == line.decode()


@pytest.mark.parametrize(
    "lines",
    [
        pytest.param([{"id": "1", "title": "First story", "Foo": 1, "foo": 2}], id="unmapped-twins"),
        pytest.param([{"id": "1", "title": "First story", "Title": "Twin"}], id="alias-and-twin-one-line"),
        pytest.param([{"id": "1", "Title": "Upper-case alias"}, {"id": "2", "title": "Lower-case alias"}],
                     id="alias-twins-across-lines"),
    ],
)
def test_json_keys_differing_only_in_case_do_not_crash(settings, tmp_path: Path, lines: list[dict]) -> None:
    _migrated(settings)
    path = tmp_path / "twins.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    s = _ingest(settings, jsonl=path)
    assert s.rows_read == len(lines) and s.rows_quarantined == 0


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------

CSV_HEADER = b"\xef\xbb\xbfid,title,body,published_at,label,task"
CSV_CASES: list[Case] = [
    Case(b"c01,Good CSV title,Good body,2020-01-01T00:00:00Z,,", "ok", key="c01",
         check={"title": "Good CSV title", "published_at": datetime(2020, 1, 1, tzinfo=UTC)}),
    Case(b"c02,a,b,c,d,e,f", "bad", "expected 6 fields, got 7", only_reason=False),
    Case(b"c03,too few", "bad", "expected 6 fields, got 2"),
    Case(b"", "bad", "blank record"),
    Case(b'c05,"Embedded\r\nnewline title","Body, with comma",2020-01-02,,', "ok", key="c05",
         check={"title": "Embedded\nnewline title", "body": "Body, with comma"}),
    Case(b"c06,caf\xe9 latin-1,body,,,", "bad", "invalid utf-8 bytes"),
    Case(b"c07,nul\x00title,Body,,,", "ok", key="c07", check={"title": "nultitle"}),
    Case(b"c08,<b>Bold</b> &amp; co,<script>x()</script>Body text,,,", "ok", key="c08",
         check={"title": "Bold & co", "body": "Body text"}),
    Case(b'c09,"Said ""hi""",Body,,,', "ok", key="c09", check={"title": 'Said "hi"'}),
    Case(b"c10,ctrl\x01char\x7fhere,Body,,,", "ok", key="c10", check={"title": "ctrl char here"}),
    Case(b"c11,,,,,", "bad", "empty text: no title and no body", only_reason=True),
    Case(b"  ,  ,  ,  ,  ,  ", "bad", "blank record"),
    Case(b'c13,"a"b,c,,,', "bad", "malformed CSV record"),
    Case(b"c01,Other title same id,x,,,", "dup"),
    Case(b",Case Story,Same Body,,,", "ok", key="Case Story"),
    Case(b",CASE STORY,same body,,,", "dup"),
    Case(b"c16,Future story,b,2999-01-01,,", "bad", "published_at in the future", only_reason=True),
    Case(b"c17,Ancient story,b,1492-10-12,,", "bad", "published_at before 1900-01-01", only_reason=True),
    Case(b"c18,Garbled date,b,not-a-date,,", "bad", "unparseable published_at: not-a-date", only_reason=True),
    Case(b"c19,Epoch story,b,1594980000,,", "ok", key="c19", check={"published_at": datetime(2020, 7, 17, 10, tzinfo=UTC)}),
    Case(b"c20,Labelled story,b,,bullish,sentiment", "bad", "unknown sentiment label: bullish", only_reason=True),
    Case(b"c21,Labelled story two,b,,positive,", "bad", "label without a known task", only_reason=True),
    Case(b"c22,Good labelled,b,,Negative,Sentiment", "ok", key="c22"),
    Case(b"c23," + b"T" * 2500 + b",b,,,", "bad", "title length 2500 over 2000", only_reason=True),
    Case(b"c24,AT&amp;T &lt;up&gt; &quot;q&quot;,b,,,", "ok", key="c24", check={"title": 'AT&T <up> "q"'}),
    Case(b"c25,\t Padded \t title ,  body  ,,,", "ok", key="c25", check={"title": "Padded title", "body": "body"}),
    Case(b"c26,Topic story,b,,earn|acq,topic", "ok", key="c26"),
    Case(b"c27,Split story,b,,,\n", "ok", key="c27"),  # an LF line in a CRLF file
    # An unterminated quote near the end is recovered from: only its own line is lost.
    Case(b'c28,"unbalanced quote,body,,,', "bad", "unterminated quoted field"),
    Case(b"c29,After the unbalanced one,body,,,", "ok", key="c29"),
    Case(b"c30,Last record,body,2020-07-17 10:00:00,,", "ok", key="c30",
         check={"published_at": datetime(2020, 7, 17, 10, tzinfo=UTC)}),
]


def test_hostile_csv(settings, tmp_path: Path) -> None:
    _migrated(settings)
    path = tmp_path / "hostile.csv"
    body = b"".join(c.line if c.line.endswith(b"\n") else c.line + b"\r\n" for c in CSV_CASES)
    path.write_bytes(CSV_HEADER + b"\r\n" + body + b"\r\n  \r\n\r\n")  # trailing blank lines are not records
    summary = _ingest(settings, csv=path)
    _check_cases(settings, summary, CSV_CASES, by_record_no=True)
    with connect(settings) as con:
        labels = con.execute("SELECT task, label, label_set FROM labels ORDER BY task").fetchall()
    assert labels == [("sentiment", "negative", None), ("topic", "earn", ["earn", "acq"])]


def test_semicolon_csv(settings, tmp_path: Path) -> None:
    _migrated(settings)
    path = tmp_path / "semi.csv"
    path.write_bytes(
        b"id;headline;text;date\n"
        b"s1;Semicolon title;semi body;2020-01-01\n"
        b"s2;Wrong;field;count;extra\n"
        b"s3;Comma, inside;body, too;\n"
        b"s4;;;\n"
    )
    summary = _ingest(settings, csv=path)
    assert (summary.rows_read, summary.rows_inserted, summary.rows_quarantined) == (4, 2, 2)
    articles = _articles(settings, summary.batch_id)
    assert articles["s3"]["title"] == "Comma, inside" and articles["s3"]["body"] == "body, too"
    reasons = {no: r for no, _, r in _quarantine(settings, summary.batch_id)}
    assert sorted(reasons) == [2, 4]
    assert "expected 4 fields, got 5" in reasons[2]
    assert reasons[4] == ["empty text: no title and no body"]


def test_latin1_file_read_as_utf8_quarantines_only_the_bad_records(settings, tmp_path: Path) -> None:
    _migrated(settings)
    path = tmp_path / "latin1.csv"
    path.write_bytes("id,title\n1,Caf\u00e9 au lait\n2,Plain ascii\n3,Stra\u00dfe\n".encode("latin-1"))
    summary = _ingest(settings, csv=path)
    assert (summary.rows_read, summary.rows_inserted, summary.rows_quarantined) == (3, 1, 2)
    rows = _quarantine(settings, summary.batch_id)
    assert [no for no, _, _ in rows] == [1, 3]
    assert all("invalid utf-8 bytes" in reasons for _, _, reasons in rows)
    assert rows[0][1] == "1,Caf\\xe9 au lait"
    # Read with the right encoding, the same file is clean.
    batch_dir, manifest = staging.new_batch(settings.staging_dir, "latin", "articles", str(path))
    with connect_memory(settings) as mem:
        staging.stage_frame(mem, batch_dir, manifest, read_csv_records(path, source="latin", encoding="latin-1"))
    con = duckdb.connect()
    titles = [r[0] for r in con.execute(f"SELECT title FROM read_parquet('{batch_dir / 'normalized.parquet'}') ORDER BY record_no").fetchall()]
    con.close()
    assert titles == ["Caf\u00e9 au lait", "Plain ascii", "Stra\u00dfe"]


# --------------------------------------------------------------------------------------------
# property: random lines never break the identity or leave a reason out
# --------------------------------------------------------------------------------------------

_json_object = st.fixed_dictionaries(
    {"title": st.one_of(st.none(), st.text(max_size=40))},
    optional={
        "id": st.one_of(st.text(max_size=6), st.integers(0, 5)),
        "body": st.text(max_size=80),
        "published_at": st.one_of(st.text(max_size=20), st.integers(0, 2_000_000_000_000),
                                  st.sampled_from(["2020-01-01", "2999-01-01", "1800-01-01", "17-Jul-20"])),
        "label": st.sampled_from(["positive", "bullish", "earn|acq", ""]),
        "task": st.sampled_from(["sentiment", "topic", "emotion"]),
    },
)
_line = st.one_of(
    _json_object.map(lambda o: json.dumps(o).encode()),
    _json_object.map(lambda o: json.dumps(o, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.binary(max_size=40),
    st.sampled_from([b"", b"   ", b"{}", b"[]", b"null", b'{"title": "unterminated', b"\xff\xfe", b"\x00"]),
)


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_line, min_size=1, max_size=12))
def test_random_jsonl_lines_keep_the_identity(settings, tmp_path: Path, lines: list[bytes]) -> None:
    _migrated(settings)
    path = tmp_path / "random.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    summary = _ingest(settings, jsonl=path)  # asserts the identity and a reason per quarantined row
    pieces = re.split(rb"\r\n|\r|\n", b"\n".join(lines))
    assert summary.rows_read <= sum(1 for piece in pieces if piece.strip(b" \t\x0b\x0c"))
