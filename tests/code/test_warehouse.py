"""Tests for the DuckDB warehouse: migrations, connections, the analyst sandbox, normalisation,
exactly-once commits, the JSONL fast/exact paths, Parquet inputs and the behaviors target.

Everything runs without Prefect: one batch is staged in an in-memory DuckDB, validated with GX and
committed in one transaction (see ``_ingest``). Every committed batch is checked for the identity
``rows_read == rows_inserted + rows_duplicate + rows_quarantined``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from sources.records import behaviors_frame, map_columns, records_frame
from warehouse import commit, staging, validation
from warehouse.connection import connect, connect_memory, connect_readonly
from warehouse.migrate import MIGRATIONS_DIR, available_migrations, current_version, migrate
from warehouse.query import run_readonly

TABLES = ("articles", "quarantine", "ingest_batches", "labels", "validation_runs", "behaviors",
          "ingested_files", "source_state")


# --------------------------------------------------------------------------------------------
# helpers (this file only)
# --------------------------------------------------------------------------------------------


def _stage(settings, *, rows=None, jsonl=None, parquet=None, behaviors=None, source="src",
           input_name="test-input") -> tuple[Path, staging.Manifest]:
    """Stage one batch from records dicts, a JSONL file, a Parquet file or behaviors dicts."""
    target = "behaviors" if behaviors is not None else "articles"
    batch_dir, manifest = staging.new_batch(settings.staging_dir, source, target, input_name)
    with connect_memory(settings) as mem:
        if rows is not None:
            staging.stage_frame(mem, batch_dir, manifest, records_frame(rows))
        elif jsonl is not None:
            staging.stage_jsonl(mem, batch_dir, manifest, Path(jsonl))
        elif parquet is not None:
            staging.stage_parquet(mem, batch_dir, manifest, Path(parquet))
        else:
            staging.stage_frame(mem, batch_dir, manifest, behaviors_frame(behaviors))
    return batch_dir, manifest


def _validate(settings, batch_dir: Path, target: str = "articles") -> validation.ValidationReport:
    with connect_memory(settings) as mem:
        return validation.validate_batch(mem, batch_dir, target, settings)


def _commit(settings, batch_dir: Path, **kwargs: Any) -> commit.BatchSummary:
    with connect(settings) as con:
        summary = commit.commit_batch(con, batch_dir, **kwargs)
    _check_identity(settings, summary)
    return summary


def _check_identity(settings, s: commit.BatchSummary) -> None:
    assert s.rows_read == s.rows_inserted + s.rows_duplicate + s.rows_quarantined, s
    table = "articles" if s.target_table == "articles" else "behaviors"
    assert _scalar(settings, f"SELECT count(*) FROM {table} WHERE batch_id = ?", [s.batch_id]) == s.rows_inserted
    assert _scalar(settings, "SELECT count(*) FROM quarantine WHERE batch_id = ?", [s.batch_id]) == s.rows_quarantined
    assert _scalar(
        settings, "SELECT count(*) FROM quarantine WHERE batch_id = ? AND len(reasons) = 0", [s.batch_id]
    ) == 0


def _ingest(settings, **kwargs: Any) -> commit.BatchSummary:
    """Stage, validate and commit one batch; checks the row identity."""
    batch_dir, manifest = _stage(settings, **kwargs)
    _validate(settings, batch_dir, manifest.target)
    summary = _commit(settings, batch_dir)
    assert summary.rows_read == manifest.rows
    assert not batch_dir.exists()
    return summary


def _rows(settings, sql: str, params: list | None = None) -> list[tuple]:
    with connect(settings) as con:
        return con.execute(sql, params or []).fetchall()


def _scalar(settings, sql: str, params: list | None = None) -> Any:
    return _rows(settings, sql, params)[0][0]


def _counts(settings) -> dict[str, int]:
    return {t: _scalar(settings, f"SELECT count(*) FROM {t}") for t in TABLES}


def _normalized(batch_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``normalized.parquet``, as dicts, in record order."""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        cur = con.execute(f"SELECT * FROM read_parquet('{batch_dir / 'normalized.parquet'}') ORDER BY record_no")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()


def _normalize_one(settings, row: dict, source: str = "src") -> dict[str, Any]:
    batch_dir, _ = _stage(settings, rows=[row], source=source)
    (out,) = _normalized(batch_dir)
    return out


def _write_jsonl(path: Path, objs: list[Any]) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs), encoding="utf-8")
    return path


@pytest.fixture
def wh(settings):
    """A migrated, empty warehouse."""
    with connect(settings) as con:
        migrate(con)
    return settings


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# migrations
# --------------------------------------------------------------------------------------------


def test_fresh_database_gets_every_migration_once(settings) -> None:
    with connect(settings) as con:
        assert current_version(con) == 0
        shipped = [m.version for m in available_migrations()]
        assert shipped[:3] == [1, 2, 3]
        assert migrate(con) == shipped
        assert con.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall() == [(v,) for v in shipped]
        assert current_version(con) == shipped[-1]
        assert migrate(con) == []
        assert con.execute("SELECT count(*) FROM schema_migrations").fetchall() == [(len(shipped),)]
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert set(TABLES) <= tables
    assert {"v_articles", "v_ingest_batches", "v_quarantine", "v_impressions", "v_labelled_texts"} <= views


def test_available_migrations_lists_the_shipped_files() -> None:
    assert [(m.version, m.name) for m in available_migrations()][:3] == [(1, "ingest"), (2, "ingest_views"), (3, "models")]


@pytest.mark.parametrize(
    "names, message",
    [
        pytest.param(["001_ok.sql", "1_short.sql"], "must look like", id="version-too-short"),
        pytest.param(["001_ok.sql", "0002_long.sql"], "must look like", id="version-too-long"),
        pytest.param(["001_ok.sql", "002-dash.sql"], "must look like", id="dash-separator"),
        pytest.param(["001_ok.sql", "002_Upper.sql"], "must look like", id="upper-case-name"),
        pytest.param(["001_ok.sql", "002_.sql"], "must look like", id="empty-name"),
        pytest.param(["001_ok.sql", "abc_name.sql"], "must look like", id="no-version"),
        pytest.param(["001_ok.sql", "001_again.sql"], "share version 1", id="duplicate-version"),
    ],
)
def test_available_migrations_rejects_bad_directories(tmp_path: Path, names: list[str], message: str) -> None:
    for name in names:
        (tmp_path / name).write_text("SELECT 1;\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        available_migrations(tmp_path)


def test_failing_migration_rolls_back_and_keeps_the_previous_version(settings, tmp_path: Path) -> None:
    mig_dir = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, mig_dir)
    shipped = [m.version for m in available_migrations()]
    nxt = shipped[-1] + 1
    (mig_dir / f"{nxt:03d}_broken.sql").write_text(
        textwrap.dedent(
            """\
            CREATE TABLE new_table (x INTEGER);
            INSERT INTO new_table VALUES (1);
            ALTER TABLE articles ADD COLUMN extra INTEGER;
            INSERT INTO source_state VALUES ('x', NULL, NULL, NULL, now());
            SELECT * FROM no_such_table;
            """
        ),
        encoding="utf-8",
    )
    with connect(settings) as con:
        assert migrate(con) == shipped
        with pytest.raises(duckdb.CatalogException, match="no_such_table"):
            migrate(con, mig_dir)
        assert current_version(con) == shipped[-1]
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert "new_table" not in tables
        assert set(TABLES) <= tables
        assert "extra" not in {r[0] for r in con.execute("DESCRIBE articles").fetchall()}
        assert con.execute("SELECT count(*) FROM source_state").fetchall() == [(0,)]
        # The connection is usable afterwards and a fixed file applies.
        (mig_dir / f"{nxt:03d}_broken.sql").write_text("CREATE TABLE new_table (x INTEGER);\n", encoding="utf-8")
        assert migrate(con, mig_dir) == [nxt]
        assert current_version(con) == nxt


# --------------------------------------------------------------------------------------------
# read-only connections and the analyst sandbox
# --------------------------------------------------------------------------------------------


def _hold_write_lock(path: Path, seconds: float) -> subprocess.Popen:
    """Another process that opens ``path`` read-write, says so, sleeps and exits."""
    code = (
        "import duckdb, sys, time\n"
        f"con = duckdb.connect({str(path)!r})\n"
        "print('locked', flush=True)\n"
        f"time.sleep({seconds})\n"
        "con.close()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_connect_readonly_waits_for_another_process_writer(wh) -> None:
    proc = _hold_write_lock(wh.warehouse_path, 1.5)
    locked_at = time.monotonic()
    try:
        # No retries: the lock error comes straight through.
        with pytest.raises(duckdb.IOException, match="(?i)lock"):
            with connect_readonly(wh, retries=0):
                pass
        # Default retries outlast the writer.
        with connect_readonly(wh) as con:
            assert con.execute("SELECT count(*) FROM articles").fetchall() == [(0,)]
        # The writer held the lock for 1.5 s after saying so: the reader really waited.
        assert time.monotonic() - locked_at >= 1.0
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_connect_readonly_without_a_file_raises(settings) -> None:
    assert not settings.warehouse_path.exists()
    with pytest.raises(FileNotFoundError):
        with connect_readonly(settings):
            pass


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory):
    """One small committed warehouse shared by the sandbox tests (they must not change it)."""
    from core.settings import Settings

    root = tmp_path_factory.mktemp("sandbox")
    settings = Settings(warehouse_path=root / "warehouse" / "sandbox.duckdb", home=root / "var")
    settings.ensure_dirs()
    with connect(settings) as con:
        migrate(con)
    _ingest(settings, rows=[
        {"source_id": "1", "title": "Acme beats estimates", "body": "Shares rose.", "published_at": "2020-01-01"},
        {"source_id": "2", "title": "x"},  # quarantined: too short
    ])
    return settings


def test_run_readonly_selects_views(loaded) -> None:
    res = run_readonly(loaded, "SELECT title, text FROM v_articles")
    assert res.columns == ["title", "text"]
    assert res.rows == [("Acme beats estimates", "Acme beats estimates Shares rose.")]
    assert run_readonly(loaded, "SELECT rows_read, rows_quarantined FROM v_ingest_batches").rows == [(2, 1)]
    assert run_readonly(loaded, "SELECT count(*) FROM v_quarantine").rows == [(1,)]
    many = run_readonly(loaded, "SELECT * FROM range(10)", limit=3)
    assert len(many.rows) == 3 and many.truncated


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("INSERT INTO articles (article_id, source, ingested_at, batch_id) VALUES ('x', 's', now(), 'b')", id="insert"),
        pytest.param("UPDATE articles SET title = 'hacked'", id="update"),
        pytest.param("DELETE FROM articles", id="delete"),
        pytest.param("CREATE TABLE evil (x INTEGER)", id="create-table"),
        pytest.param("DROP VIEW v_articles", id="drop-view"),
        pytest.param("CREATE MACRO evil(x) AS x", id="create-macro"),
        pytest.param("COPY articles TO '{dir}/out.csv'", id="copy-to"),
        pytest.param("COPY (SELECT 1) TO '{dir}/out.parquet' (FORMAT parquet)", id="copy-query-to"),
        pytest.param("COPY articles FROM '{dir}/in.csv'", id="copy-from"),
        pytest.param("EXPORT DATABASE '{dir}/export'", id="export"),
        pytest.param("ATTACH '{dir}/other.duckdb' AS other", id="attach-file"),
        pytest.param("ATTACH ':memory:' AS other", id="attach-memory"),
        pytest.param("INSTALL httpfs", id="install"),
        pytest.param("LOAD httpfs", id="load"),
        pytest.param("SELECT * FROM read_csv('/etc/passwd')", id="read-csv"),
        pytest.param("SELECT * FROM read_csv('{dir}/in.csv')", id="read-csv-own-dir"),
        pytest.param("SELECT * FROM read_text('/etc/hostname')", id="read-text"),
        pytest.param("SELECT * FROM read_blob('/etc/hostname')", id="read-blob"),
        pytest.param("SELECT * FROM read_parquet('/etc/passwd')", id="read-parquet"),
        pytest.param("SELECT * FROM glob('/etc/*')", id="glob"),
        pytest.param("SET enable_external_access = true", id="set-external-access"),
        pytest.param("RESET enable_external_access", id="reset-external-access"),
        pytest.param("SET lock_configuration = false", id="unlock-configuration"),
        pytest.param("SET allow_community_extensions = true", id="set-community-extensions"),
        pytest.param("SELECT 1; DELETE FROM articles", id="stacked-delete"),
    ],
)
def test_run_readonly_sandbox_refuses(loaded, sql: str) -> None:
    directory = loaded.warehouse_path.parent
    (directory / "in.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    before_files = sorted(p.name for p in directory.iterdir())
    before = _counts(loaded)
    with pytest.raises(duckdb.Error):
        run_readonly(loaded, sql.format(dir=directory))
    assert _counts(loaded) == before
    assert sorted(p.name for p in directory.iterdir()) == before_files
    # Still usable: the refused statement changed nothing.
    assert run_readonly(loaded, "SELECT title FROM v_articles").rows == [("Acme beats estimates",)]


# --------------------------------------------------------------------------------------------
# normalisation (staging -> normalized.parquet)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        pytest.param("2020-07-17T10:00:00Z", _utc(2020, 7, 17, 10), id="iso-z"),
        pytest.param("2020-07-17T12:00:00+02:00", _utc(2020, 7, 17, 10), id="iso-offset"),
        pytest.param("2020-07-17T10:00:00.250Z", _utc(2020, 7, 17, 10, 0, 0, 250000), id="iso-fraction"),
        pytest.param("Fri, 17 Jul 2020 10:00:00 -0400", _utc(2020, 7, 17, 14), id="rfc822-offset"),
        pytest.param("Fri, 17 Jul 2020 10:00:00 GMT", _utc(2020, 7, 17, 10), id="rfc822-gmt"),
        pytest.param("17 Jul 2020 10:00:00 +0100", _utc(2020, 7, 17, 9), id="rfc822-no-weekday"),
        pytest.param("2020-07-17 10:00:00", _utc(2020, 7, 17, 10), id="naive-is-utc"),
        pytest.param("2020-07-17", _utc(2020, 7, 17), id="date-only"),
        pytest.param("6/9/2017", _utc(2017, 9, 6), id="day-first-slash"),
        pytest.param("17-Jul-20", _utc(2020, 7, 17), id="dd-mon-yy"),
        pytest.param("17 July 2020", _utc(2020, 7, 17), id="day-month-name"),
        pytest.param("July 17, 2020", _utc(2020, 7, 17), id="month-name-day"),
        pytest.param("07/17/2020 10:00:00 AM", _utc(2020, 7, 17, 10), id="us-12h"),
        pytest.param("1594980000", _utc(2020, 7, 17, 10), id="epoch-s"),
        pytest.param("1594980000000", _utc(2020, 7, 17, 10), id="epoch-ms"),
        pytest.param("  2020-07-17T10:00:00Z  ", _utc(2020, 7, 17, 10), id="padded"),
    ],
)
def test_timestamps_normalise_to_utc(settings, raw: str, expected: datetime) -> None:
    out = _normalize_one(settings, {"title": "dated", "published_at": raw})
    assert out["published_at"] == expected
    assert out["published_status"] == "ok"


@pytest.mark.parametrize(
    "raw, status",
    [
        pytest.param(None, "missing", id="none"),
        pytest.param("", "missing", id="empty"),
        pytest.param("   ", "missing", id="blank"),
        pytest.param("yesterday", "unparseable", id="words"),
        pytest.param("2020-13-45", "unparseable", id="bad-month"),
        pytest.param("12345", "unparseable", id="short-number"),
        pytest.param("2020-07-17T10:00:00Zjunk", "unparseable", id="trailing-junk"),
    ],
)
def test_published_status(settings, raw: str | None, status: str) -> None:
    out = _normalize_one(settings, {"title": "dated", "published_at": raw})
    assert out["published_status"] == status
    assert out["published_at"] is None


@pytest.mark.parametrize(
    "field, raw, expected",
    [
        pytest.param("title", "<p>Hello &amp; <b>world</b></p>", "Hello & world", id="tags-and-amp"),
        pytest.param("body", "<script type='x'>alert(1)</script>Shares rose", "Shares rose", id="script"),
        pytest.param("body", "<STYLE>p {color: red}</STYLE>Shares\n rose", "Shares\nrose", id="style-upper"),
        pytest.param("body", "&lt;b&gt; &quot;q&quot; &#39;s&#39;&nbsp;x", "<b> \"q\" 's' x", id="entities"),
        pytest.param("body", "&amp;lt;", "&lt;", id="amp-unescaped-once"),
        pytest.param("body", "a\x01b\x7fc\x00d", "a b c d", id="control-chars"),
        pytest.param("body", "a \t  b\r\nc", "a b\nc", id="spaces-squeezed"),
        pytest.param("body", "para one.\n\n\npara two.", "para one.\npara two.", id="paragraphs-kept"),
        pytest.param("body", "  \n<br/>\n  ", None, id="markup-only-is-null"),
        pytest.param("title", "<p>\nHello world\n</p>", "Hello world", id="edge-newlines-trimmed"),
        pytest.param("title", "Hello world\n", "Hello world", id="trailing-newline-trimmed"),
        pytest.param("body", "<!-- note -->Kept<br/>text", "Kept text", id="comment-and-void-tag"),
        pytest.param("title", "Plain title", "Plain title", id="plain-untouched"),
        pytest.param("title", "Caf\u00e9 \u20ac5 \u2014 \u65e5\u672c", "Caf\u00e9 \u20ac5 \u2014 \u65e5\u672c", id="unicode"),
        pytest.param(
            "body", "It&#8217;s &#x27;up&#x27; &apos;5%&apos;", "It\u2019s 'up' '5%'",
            id="numeric-entities",
        ),
        pytest.param("title", "EPS < 1.00 while revenue > 2B", "EPS < 1.00 while revenue > 2B", id="less-than-in-plain-text"),
    ],
)
def test_text_cleaning(settings, field: str, raw: str, expected: str | None) -> None:
    other = "body" if field == "title" else "title"
    out = _normalize_one(settings, {field: raw, other: "other"})
    assert out[field] == expected


@pytest.mark.parametrize(
    "raw, expected",
    [
        pytest.param('["aapl","MSFT"]', ["AAPL", "MSFT"], id="json-list"),
        pytest.param("X, y;z", ["X", "Y", "Z"], id="mixed-separators"),
        pytest.param("msft aapl MSFT", ["AAPL", "MSFT"], id="dedup-sorted"),
        pytest.param(" tsla ", ["TSLA"], id="padded"),
        pytest.param(None, None, id="none"),
        pytest.param("", None, id="empty"),
    ],
)
def test_tickers(settings, raw: str | None, expected: list[str] | None) -> None:
    assert _normalize_one(settings, {"title": "tickers", "tickers": raw})["tickers"] == expected


def test_article_id_is_stable(settings) -> None:
    a1 = _normalize_one(settings, {"source_id": "42", "title": "First version"}, source="wire")
    a2 = _normalize_one(settings, {"source_id": "42", "title": "Edited later"}, source="wire")
    b = _normalize_one(settings, {"source_id": "42", "title": "First version"}, source="other")
    row_source = _normalize_one(settings, {"source": "other", "source_id": "42", "title": "x"}, source="wire")
    t1 = _normalize_one(settings, {"title": "Same TEXT", "body": "Here"}, source="wire")
    t2 = _normalize_one(settings, {"title": "same text", "body": "HERE"}, source="wire")
    t3 = _normalize_one(settings, {"title": "<b>same</b> text", "body": "here"}, source="wire")
    t4 = _normalize_one(settings, {"title": "same text", "body": "there"}, source="wire")
    t5 = _normalize_one(settings, {"title": "same text", "body": "here"}, source="other")
    for row in (a1, a2, b, t1, t4):
        assert len(row["article_id"]) == 32 and int(row["article_id"], 16) >= 0
    assert a1["article_id"] == a2["article_id"]  # same (source, source_id) across batches
    assert a1["article_id"] != b["article_id"]  # another source
    assert row_source["source"] == "other" and row_source["article_id"] == b["article_id"]
    assert t1["article_id"] == t2["article_id"] == t3["article_id"]  # normalised text, any case
    assert t1["article_id"] != t4["article_id"]
    assert t1["article_id"] != t5["article_id"]
    assert t1["article_id"] != a1["article_id"]


@pytest.mark.parametrize(
    "row, expected",
    [
        pytest.param(
            {"label": "earn|acq", "task": "topic"},
            {"label": "earn", "label_set": ["earn", "acq"], "task": "topic", "topic_label": "earn",
             "sentiment_label": None, "dataset": "src"},
            id="multi-label-topic",
        ),
        pytest.param(
            {"label": " Positive ", "task": "Sentiment", "dataset": "phrasebank", "split": "Train"},
            {"label": "positive", "label_set": None, "task": "sentiment", "sentiment_label": "positive",
             "topic_label": None, "dataset": "phrasebank", "split": "train"},
            id="sentiment",
        ),
        pytest.param(
            {"label": "positive"},
            {"label": "positive", "task": "missing", "sentiment_label": None, "dataset": "src"},
            id="label-without-task",
        ),
        pytest.param(
            {"task": "topic"},
            {"label": None, "task": None, "dataset": None, "topic_label": None},
            id="task-without-label",
        ),
    ],
)
def test_label_fields(settings, row: dict, expected: dict) -> None:
    out = _normalize_one(settings, {"title": "labelled", **row})
    assert {k: out[k] for k in expected} == expected


# --------------------------------------------------------------------------------------------
# commits: exactly once, duplicates, labels, crash safety
# --------------------------------------------------------------------------------------------

GOOD = [
    {"source_id": "1", "title": "Acme beats estimates", "body": "Shares rose.", "published_at": "2020-01-01T10:00:00Z"},
    {"source_id": "2", "title": "Globex misses", "body": "Shares fell.", "published_at": "2020-01-02T10:00:00Z"},
    {"source_id": "3", "title": "Initech flat", "body": "Nothing moved.", "published_at": "2020-01-03T10:00:00Z"},
]
BAD = {"source_id": "4", "title": "", "body": ""}


def test_commit_counts_and_writes_every_table(wh) -> None:
    s = _ingest(wh, rows=[*GOOD, BAD], source="wire")
    assert (s.rows_read, s.rows_inserted, s.rows_duplicate, s.rows_quarantined) == (4, 3, 0, 1)
    assert s.status == "succeeded" and s.source == "wire" and s.target_table == "articles"
    assert _rows(wh, "SELECT record_no, reasons FROM quarantine") == [(4, ["empty text: no title and no body"])]
    assert _scalar(wh, "SELECT count(*) FROM validation_runs WHERE batch_id = ?", [s.batch_id]) > 5
    assert _rows(wh, "SELECT watermark FROM ingest_batches") == [(_utc(2020, 1, 3, 10),)]
    assert _rows(wh, "SELECT source, watermark FROM source_state") == [("wire", _utc(2020, 1, 3, 10))]


def test_recommitting_the_same_batch_folder_is_a_noop(wh) -> None:
    batch_dir, _ = _stage(wh, rows=[*GOOD, BAD])
    _validate(wh, batch_dir)
    copy = batch_dir.with_name(batch_dir.name + "-copy")
    shutil.copytree(batch_dir, copy)
    first = _commit(wh, batch_dir)
    assert not batch_dir.exists()
    counts = _counts(wh)
    again = _commit(wh, copy)
    assert again == first
    assert _counts(wh) == counts
    assert not copy.exists()


def test_commit_without_cleanup_twice(wh) -> None:
    batch_dir, _ = _stage(wh, rows=GOOD)
    _validate(wh, batch_dir)
    first = _commit(wh, batch_dir, cleanup=False)
    assert batch_dir.exists()
    counts = _counts(wh)
    assert _commit(wh, batch_dir, cleanup=False) == first
    assert _counts(wh) == counts
    assert first.rows_inserted == 3


def test_same_rows_in_a_new_batch_insert_nothing(wh) -> None:
    first = _ingest(wh, rows=[*GOOD, BAD])
    second = _ingest(wh, rows=[*GOOD, BAD])
    assert first.batch_id != second.batch_id
    assert (second.rows_read, second.rows_inserted, second.rows_duplicate, second.rows_quarantined) == (4, 0, 3, 1)
    assert _scalar(wh, "SELECT count(*) FROM articles") == 3
    assert _scalar(wh, "SELECT count(*) FROM quarantine") == 2  # each batch keeps its own bad row


def test_within_batch_duplicates_count_as_duplicate(wh) -> None:
    rows = [GOOD[0], GOOD[1], {**GOOD[0], "title": "Acme beats (updated)"}, GOOD[1],
            {"title": "No id", "body": "same text"}, {"title": "NO ID", "body": "Same Text"}]
    s = _ingest(wh, rows=rows)
    assert (s.rows_read, s.rows_inserted, s.rows_duplicate, s.rows_quarantined) == (6, 3, 3, 0)
    # First occurrence wins.
    assert _rows(wh, "SELECT title FROM articles WHERE source_id = '1'") == [("Acme beats estimates",)]


def test_overlapping_batches_never_duplicate_article_ids(wh) -> None:
    docs = [{"source_id": str(i), "title": f"Story number {i}", "body": "text"} for i in range(12)]
    notext = [{"title": f"Untitled story {i}"} for i in range(4)]
    batches = [docs[0:5] + notext[:2], docs[3:9] + notext[1:3] + docs[3:4], docs[:12] + notext, docs[6:8]]
    inserted = 0
    for rows in batches:
        inserted += _ingest(wh, rows=rows).rows_inserted
    assert inserted == 16 == _scalar(wh, "SELECT count(*) FROM articles")
    assert _rows(wh, "SELECT article_id FROM articles GROUP BY article_id HAVING count(*) > 1") == []
    assert _rows(wh, "SELECT count(*) FROM ingest_batches WHERE rows_read <> rows_inserted + rows_duplicate + rows_quarantined") == [(0,)]


def test_labels_per_dataset_and_task(wh) -> None:
    item = {"source_id": "s1", "title": "Profit up strongly", "task": "sentiment"}
    s1 = _ingest(wh, rows=[{**item, "dataset": "d1", "label": "positive"}], source="pb")
    s2 = _ingest(wh, rows=[{**item, "dataset": "d2", "label": "neutral"}], source="pb")
    # Same (dataset, item, task) again with a corrected label, twice within one batch: still one
    # label row, the correction replaces the old label and the old one is kept in label_history.
    s3 = _ingest(wh, rows=[{**item, "dataset": "d1", "label": "negative"}] * 2, source="pb")
    assert (s1.labels_inserted, s2.labels_inserted) == (1, 1)
    assert (s1.rows_inserted, s2.rows_inserted, s3.rows_inserted) == (1, 0, 0)
    assert _rows(wh, "SELECT dataset, task, label FROM labels ORDER BY dataset") == [
        ("d1", "sentiment", "negative"),
        ("d2", "sentiment", "neutral"),
    ]
    assert _rows(wh, "SELECT dataset, label, replaced_label FROM label_history") == [("d1", "positive", "negative")]
    s4 = _ingest(wh, rows=[{**item, "dataset": "d1", "label": "negative"}], source="pb")  # the same again: no-op
    assert s4.labels_inserted == 0 and _scalar(wh, "SELECT count(*) FROM label_history") == 1
    topic = _ingest(wh, rows=[{**item, "task": "topic", "dataset": "d1", "label": "earn|acq"}], source="pb")
    assert topic.labels_inserted == 1
    assert _rows(wh, "SELECT label, label_set FROM labels WHERE task = 'topic'") == [("earn", ["earn", "acq"])]
    assert _scalar(wh, "SELECT count(DISTINCT item) FROM labels") == 1
    assert _scalar(wh, "SELECT count(*) FROM v_labelled_texts") == 3


class _CrashingConnection:
    """Wraps a DuckDB connection and raises when a statement containing ``marker`` runs."""

    def __init__(self, con: duckdb.DuckDBPyConnection, marker: str) -> None:
        self._con, self._marker = con, marker

    def execute(self, sql: str, *args: Any) -> Any:
        if self._marker in sql:
            raise RuntimeError(f"simulated crash at {self._marker}")
        return self._con.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


@pytest.mark.parametrize(
    "crash_at",
    [
        pytest.param("after-commit-articles", id="after-article-inserts"),
        pytest.param("INSERT INTO quarantine", id="at-quarantine"),
        pytest.param("INSERT INTO ingest_batches", id="at-ingest-batches"),
        pytest.param("INSERT INTO source_state", id="at-last-statement"),
    ],
)
def test_crash_mid_commit_rolls_back_and_rerun_commits_once(wh, monkeypatch, crash_at: str) -> None:
    batch_dir, manifest = _stage(wh, rows=[*GOOD, {**GOOD[0], "dataset": "d", "task": "topic", "label": "earn"}, BAD])
    manifest.fingerprint = {"path": "/data/in.jsonl", "size": 10, "mtime_ns": 1}
    manifest.write(batch_dir)
    _validate(wh, batch_dir)
    before = _counts(wh)

    if crash_at == "after-commit-articles":
        original = commit._commit_articles

        def crashing(con, batch_id):
            result = original(con, batch_id)
            assert con.execute("SELECT count(*) FROM articles").fetchall()[0][0] == 3  # rows were written
            raise RuntimeError("simulated crash after inserts")

        monkeypatch.setattr(commit, "_commit_articles", crashing)
        with pytest.raises(RuntimeError, match="simulated crash"):
            with connect(wh) as con:
                commit.commit_batch(con, batch_dir)
        monkeypatch.setattr(commit, "_commit_articles", original)
    else:
        with pytest.raises(RuntimeError, match="simulated crash"):
            with connect(wh) as con:
                commit.commit_batch(_CrashingConnection(con, crash_at), batch_dir)

    assert _counts(wh) == before
    assert _scalar(wh, "SELECT count(*) FROM ingest_batches WHERE batch_id = ?", [manifest.batch_id]) == 0
    assert batch_dir.exists(), "a failed commit must keep the batch folder for the retry"

    retry_copy = batch_dir.with_name(batch_dir.name + "-retry")
    shutil.copytree(batch_dir, retry_copy)
    summary = _commit(wh, batch_dir)
    assert (summary.rows_read, summary.rows_inserted, summary.rows_duplicate, summary.rows_quarantined) == (5, 3, 1, 1)
    assert summary.labels_inserted == 1
    after = _counts(wh)
    assert after["articles"] == 3 and after["quarantine"] == 1 and after["ingest_batches"] == 1
    assert after["ingested_files"] == 1 and after["labels"] == 1
    # Retrying the (already committed) batch id again changes nothing.
    assert _commit(wh, retry_copy) == summary
    assert _counts(wh) == after


# --------------------------------------------------------------------------------------------
# JSONL: fast path vs exact path
# --------------------------------------------------------------------------------------------

CLEAN_JSONL = [
    {"id": "1", "headline": "Acme <b>beats</b>", "text": "Body &amp; more", "date": "2020-07-17T10:00:00Z",
     "tickers": ["acme", "X"], "extra": {"k": [1, 2]}, "n": 3},
    {"id": 2, "headline": "Globex", "text": "misses\n\nbadly", "date": "Fri, 17 Jul 2020 10:00:00 -0400",
     "tickers": "glx", "extra": None},
    {"headline": "No id here", "text": "at all", "date": 1594980000, "label": "positive", "task": "sentiment"},
    {"headline": "Unicode caf\u00e9 \u2014 \u65e5\u672c", "text": "tab\there", "date": "17-Jul-20"},
]
COMPARED = ("record_no", "source_id", "title", "body", "published_at", "article_id", "tickers", "label", "task")


def _fast_and_exact(settings, path: Path) -> tuple[list[dict], list[dict], staging.Manifest]:
    fast_dir, fast_manifest = _stage(settings, jsonl=path)
    exact_dir, exact_manifest = staging.new_batch(settings.staging_dir, "src", "articles", "exact")
    mapping = map_columns(staging._sample_keys(path))
    with connect_memory(settings) as mem:
        staging._stage_jsonl_exact(mem, exact_dir, exact_manifest, path, mapping, {})
    return _normalized(fast_dir), _normalized(exact_dir), fast_manifest


def test_jsonl_fast_and_exact_paths_agree(settings, tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "clean.jsonl", CLEAN_JSONL)
    fast, exact, manifest = _fast_and_exact(settings, path)
    assert not any("line by line" in n for n in manifest.notes)  # the fast path ran
    assert len(fast) == len(exact) == 4
    assert [{k: r[k] for k in COMPARED} for r in fast] == [{k: r[k] for k in COMPARED} for r in exact]
    assert fast[0]["title"] == "Acme beats" and fast[0]["body"] == "Body & more"
    assert fast[0]["tickers"] == ["ACME", "X"]
    assert fast[1]["published_at"] == _utc(2020, 7, 17, 14) and fast[1]["source_id"] == "2"
    assert fast[3]["published_at"] == _utc(2020, 7, 17)
    assert all(r["error"] is None for r in fast + exact)


def test_jsonl_fast_and_exact_paths_agree_on_meta(settings, tmp_path: Path) -> None:
    """Unmapped keys keep their JSON types in meta on both paths (fast path once stringified them)."""
    path = _write_jsonl(tmp_path / "clean.jsonl", CLEAN_JSONL[:1])
    fast, exact, _ = _fast_and_exact(settings, path)
    assert json.loads(fast[0]["meta"]) == json.loads(exact[0]["meta"]) == {"extra": {"k": [1, 2]}, "n": 3}


def test_one_bad_line_takes_the_exact_path_and_keeps_every_good_line(wh, tmp_path: Path) -> None:
    path = tmp_path / "one-bad.jsonl"
    good = [{"id": str(i), "title": f"Good story {i}", "body": "text"} for i in range(5)]
    lines = [json.dumps(o) for o in good]
    lines.insert(2, '{"id": "x", "title": "truncated')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    batch_dir, manifest = _stage(wh, jsonl=path)
    assert len(_normalized(batch_dir)) == 6
    _validate(wh, batch_dir)
    s = _commit(wh, batch_dir)
    assert (s.rows_read, s.rows_inserted, s.rows_quarantined) == (6, 5, 1)
    assert _rows(wh, "SELECT title FROM articles ORDER BY source_id") == [(f"Good story {i}",) for i in range(5)]
    ((raw, reasons),) = _rows(wh, "SELECT raw, reasons FROM quarantine")
    assert raw == '{"id": "x", "title": "truncated' and "malformed JSON line" in reasons


# --------------------------------------------------------------------------------------------
# Parquet
# --------------------------------------------------------------------------------------------


def test_parquet_typed_columns_map_and_ingest(wh, tmp_path: Path) -> None:
    path = tmp_path / "typed.parquet"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        f"""COPY (SELECT * FROM (VALUES
              (1, 'Acme up', 'body one', TIMESTAMPTZ '2020-07-17 10:00:00+02', ['aapl', 'msft'], 3.5),
              (2, 'Globex down', NULL, NULL, [], NULL),
              (3, 'Later one', 'b', TIMESTAMPTZ '2021-01-01 00:00:00+00', NULL, 1.0)
            ) t(id, headline, text, published_at, tickers, score)) TO '{path}' (FORMAT parquet)"""
    )
    con.close()
    s = _ingest(wh, parquet=path)
    assert (s.rows_read, s.rows_inserted, s.rows_quarantined) == (3, 3, 0)
    assert _rows(wh, "SELECT source_id, title, body, published_at, tickers FROM articles ORDER BY source_id") == [
        ("1", "Acme up", "body one", _utc(2020, 7, 17, 8), ["AAPL", "MSFT"]),
        ("2", "Globex down", None, None, []),
        ("3", "Later one", "b", _utc(2021, 1, 1), None),
    ]


def test_parquet_naive_timestamp_is_utc(settings, tmp_path: Path) -> None:
    path = tmp_path / "naive.parquet"
    con = duckdb.connect()
    con.execute(f"COPY (SELECT 'x1' AS id, 'Title' AS title, TIMESTAMP '2020-07-17 10:00:00' AS date) TO '{path}' (FORMAT parquet)")
    con.close()
    batch_dir, _ = _stage(settings, parquet=path)
    (row,) = _normalized(batch_dir)
    assert row["published_at"] == _utc(2020, 7, 17, 10) and row["source_id"] == "x1"


def test_corrupt_parquet_becomes_one_quarantined_record(wh, tmp_path: Path) -> None:
    path = tmp_path / "corrupt.parquet"
    path.write_bytes(os.urandom(2048))
    s = _ingest(wh, parquet=path)
    assert (s.rows_read, s.rows_inserted, s.rows_quarantined) == (1, 0, 1)
    ((raw, reasons),) = _rows(wh, "SELECT raw, reasons FROM quarantine")
    assert raw == str(path)
    assert any("unreadable Parquet" in r for r in reasons)


# --------------------------------------------------------------------------------------------
# behaviors (MIND click logs)
# --------------------------------------------------------------------------------------------


def test_behaviors_target(wh) -> None:
    ok_time = "11/15/2019 8:55:22 AM"
    rows = [
        {"impression_id": "1", "user_id": "U1", "time": ok_time, "history": "N1 N2", "impressions": "N3-1 N4-0"},
        {"impression_id": "2", "user_id": "U2", "time": "2019-11-15T08:55:22Z", "history": "", "impressions": "N5-0"},
        {"impression_id": "3", "user_id": "U3", "time": "not a time", "history": "", "impressions": "N5-0"},
        {"impression_id": "4", "user_id": "U4", "time": ok_time, "history": "N1", "impressions": "  "},
        {"impression_id": "5", "user_id": "U5", "time": ok_time, "history": "", "impressions": "N5-2 N6 N7-1"},
        {"impression_id": "1", "user_id": "U1", "time": ok_time, "history": "N1 N2", "impressions": "N3-1 N4-0"},
    ]
    s = _ingest(wh, behaviors=rows, source="mind")
    assert s.target_table == "behaviors"
    assert (s.rows_read, s.rows_inserted, s.rows_duplicate, s.rows_quarantined) == (6, 2, 1, 3)
    assert _rows(wh, "SELECT record_no, reasons FROM quarantine ORDER BY record_no") == [
        (3, ["unparseable time: not a time"]),
        (4, ["no impressions shown"]),
        (5, ["2 impression token(s) not like <item>-0 or <item>-1"]),
    ]
    assert _rows(wh, "SELECT impression_id, user_id, time, history, impressions FROM behaviors ORDER BY impression_id") == [
        ("1", "U1", _utc(2019, 11, 15, 8, 55, 22), ["N1", "N2"],
         [{"item": "N3", "clicked": True}, {"item": "N4", "clicked": False}]),
        ("2", "U2", _utc(2019, 11, 15, 8, 55, 22), [], [{"item": "N5", "clicked": False}]),
    ]
    assert _rows(wh, "SELECT impression_id, position, item, clicked FROM v_impressions ORDER BY impression_id, position") == [
        ("1", 1, "N3", True), ("1", 2, "N4", False), ("2", 1, "N5", False),
    ]
    # The same impressions again: duplicates only.
    again = _ingest(wh, behaviors=rows[:2], source="mind")
    assert (again.rows_inserted, again.rows_duplicate) == (0, 2)


# --------------------------------------------------------------------------------------------
# one-pass ingest (warehouse/direct.py) == stage -> validate -> commit through Parquet
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_one_pass_ingest_matches_three_steps(settings, tmp_path: Path, fmt: str) -> None:
    """The ingest-file task's one pass commits the same articles, quarantine rows (raw and
    reasons), labels and counts as the three-step path; a re-run of the same file version
    (a retried task) returns the stored batch."""
    from warehouse.direct import ingest_direct

    rows = [{"id": f"x{i}", "title": "A title here", "body": "some body text that is long enough",
             "published_at": "2024-01-01T00:00:00Z", "tickers": ["b", "A"] if i % 2 else [], "extra": {"k": i}}
            for i in range(40)]
    rows[3]["title"], rows[3]["body"] = "", None
    rows[7]["published_at"] = "garbage"
    rows[9].update(label="bullish", task="sentiment")
    rows[11].update(label="positive", task="sentiment", body="<b>bold</b> &amp; text  with   spaces")
    path = _write_jsonl(tmp_path / "in.jsonl", rows)
    if fmt == "parquet":
        con = duckdb.connect()
        con.execute(f"COPY (SELECT * FROM read_json('{path}')) TO '{tmp_path / 'in.parquet'}' (FORMAT parquet)")
        con.close()
        path = tmp_path / "in.parquet"
    reader = staging.stage_jsonl if fmt == "jsonl" else staging.stage_parquet
    seen = []
    for mode in ("three-step", "one-pass"):
        s = settings.model_copy(update={"warehouse_path": tmp_path / f"{mode}.duckdb", "home": tmp_path / mode})
        s.ensure_dirs()
        with connect(s) as con:
            migrate(con)
        batch_dir, manifest = staging.new_batch(s.staging_dir, "src", "articles", str(path))
        manifest.fingerprint = {"path": str(path), "size": 1, "mtime_ns": 1}
        if mode == "three-step":
            with connect_memory(s) as mem:
                reader(mem, batch_dir, manifest, path)
            with connect_memory(s) as mem:
                validation.validate_batch(mem, batch_dir, "articles", s)
            with connect(s) as con:
                summary = commit.commit_batch(con, batch_dir)
        else:
            phases: list[str] = []
            result = ingest_direct(s, batch_dir, manifest,
                                   lambda mem: reader(mem, batch_dir, manifest, path, write_parquet=False),
                                   on_phase=phases.append)
            summary = result.summary
            assert phases == ["staged", "validated", "committed"]
            assert not batch_dir.exists()
            # The same file version again (a retried task): the stored batch, nothing added.
            again_dir, again = staging.new_batch(s.staging_dir, "src", "articles", str(path))
            again.fingerprint = manifest.fingerprint
            repeat = ingest_direct(s, again_dir, again,
                                   lambda mem: reader(mem, again_dir, again, path, write_parquet=False)).summary
            assert repeat == summary and not again_dir.exists()
        with connect(s) as con:
            seen.append({
                "counts": (summary.rows_read, summary.rows_inserted, summary.rows_duplicate,
                           summary.rows_quarantined, summary.labels_inserted, summary.status),
                "quarantine": con.execute("SELECT record_no, raw, reasons FROM quarantine ORDER BY record_no").fetchall(),
                "articles": con.execute("SELECT article_id, source, source_id, title, body, published_at, tickers, meta "
                                        "FROM articles ORDER BY article_id").fetchall(),
                "labels": con.execute("SELECT dataset, item, task, label FROM labels ORDER BY item").fetchall(),
                "runs": con.execute("SELECT expectation_no, success, unexpected_count FROM validation_runs "
                                    "ORDER BY expectation_no").fetchall(),
                "batches": con.execute("SELECT count(*) FROM ingest_batches").fetchall(),
            })
    assert seen[0] == seen[1]
    assert seen[1]["counts"][:4] == (40, 37, 0, 3) and len(seen[1]["labels"]) == 1
    assert [r[0] for r in seen[1]["quarantine"]] == [4, 8, 10]
    assert all(raw and raw.startswith('{"id":') for _, raw, _ in seen[1]["quarantine"])
