"""The ingest flow end to end against a temporary warehouse and a real (test) Prefect server."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _counts(settings) -> dict:
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        return {
            t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
            for t in ("articles", "quarantine", "ingest_batches", "labels", "validation_runs")
        }
    finally:
        con.close()


def test_jsonl_ingest_is_idempotent(settings, tmp_path: Path) -> None:
    from flows.ingest import ingest_flow

    path = tmp_path / "news.jsonl"
    rows = [
        {"id": "1", "title": "Acme beats estimates", "body": "Shares rose.", "published_at": "2026-11-01T10:00:00Z"},
        {"id": "2", "title": "Globex misses", "body": "Shares fell.", "published_at": "2026-11-02T10:00:00Z"},
        {"id": "2", "title": "Globex misses", "body": "Shares fell.", "published_at": "2026-11-02T10:00:00Z"},
        {"id": "3", "title": "", "body": "", "published_at": "2026-11-02T10:00:00Z"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n", encoding="utf-8")
    first = ingest_flow(files=[str(path)], source="wire")
    assert len(first) == 1
    b = first[0]
    assert (b["rows_read"], b["rows_inserted"], b["rows_duplicate"], b["rows_quarantined"]) == (5, 2, 1, 2)
    # Same file again: skipped by fingerprint. Touch it: read again, everything duplicate.
    assert ingest_flow(files=[str(path)], source="wire") == []
    path.write_text(path.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    again = ingest_flow(files=[str(path)], source="wire")
    assert (again[0]["rows_inserted"], again[0]["rows_duplicate"], again[0]["rows_quarantined"]) == (0, 3, 2)
    counts = _counts(settings)
    assert counts["articles"] == 2 and counts["ingest_batches"] == 2 and counts["quarantine"] == 4

    # The UI gets a validation table per batch and the batch summary table.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["validation-wire", "ingest-batches"])))
    kinds = {(a.key, a.type) for a in arts}
    assert ("validation-wire", "table") in kinds and ("ingest-batches", "table") in kinds
    table = next(a for a in arts if a.key == "validation-wire")
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert any(r["expectation"] == "expect_column_values_to_be_between" and r["success"] is False for r in rows)


RSS = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Local wire</title><link>http://127.0.0.1/</link>
<item><guid isPermaLink="false">w-1</guid><title>Acme raises outlook</title><description>&lt;p&gt;Acme &amp;amp; partners lift guidance.&lt;/p&gt;</description>
<pubDate>Fri, 17 Jul 2020 19:51:00 GMT</pubDate><link>http://127.0.0.1/a/1</link></item>
<item><guid isPermaLink="false">w-2</guid><title>Globex cuts jobs</title><description>Layoffs announced.</description>
<pubDate>Sat, 18 Jul 2020 08:00:00 GMT</pubDate><link>http://127.0.0.1/a/2</link></item>
<item><guid isPermaLink="false">w-3</guid><title></title><description></description></item>
</channel></rss>"""


@pytest.fixture
def feed_server():
    """An RSS feed on 127.0.0.1 that honours If-None-Match; yields (url, request log)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            if self.headers.get("If-None-Match") == '"v1"':
                hits.append(304)
                self.send_response(304)
                self.end_headers()
                return
            body = RSS.encode()
            hits.append(200)
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("ETag", '"v1"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/feed.xml", hits
    server.shutdown()


def test_rss_feed_ingest_uses_conditional_get(settings, feed_server) -> None:
    from flows.ingest import ingest_flow

    url, hits = feed_server
    first = ingest_flow(feeds={"localwire": url})
    b = first[0]
    assert (b["rows_read"], b["rows_inserted"], b["rows_quarantined"]) == (3, 2, 1)
    assert ingest_flow(feeds={"localwire": url}) == []  # 304: nothing staged, nothing committed
    assert hits == [200, 304]
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        rows = con.execute(
            "SELECT source_id, title, body, published_at FROM articles ORDER BY source_id"
        ).fetchall()
        etag = con.execute("SELECT etag FROM source_state WHERE source = 'localwire'").fetchall()
    finally:
        con.close()
    assert [r[0] for r in rows] == ["w-1", "w-2"]
    assert rows[0][2] == "Acme & partners lift guidance."
    assert str(rows[0][3]).startswith("2020-07-17 19:51:00")
    assert etag == [('"v1"',)]


def test_csv_batch_failing_validation_fails_the_run_but_keeps_rows(settings, tmp_path: Path) -> None:
    from flows.ingest import BatchValidationFailed, ingest_flow

    path = tmp_path / "mostly_bad.csv"
    path.write_text(
        "id,title,published_at\n1,Fine headline here,2026-01-01\n2,,2026-01-01\n3,ok title,not a date\n"
        "4,another fine one,2099-01-01\n",
        encoding="utf-8",
    )
    state = ingest_flow(files=[str(path)], source="csvsrc", return_state=True)
    assert state.is_failed()
    with pytest.raises(BatchValidationFailed, match="over the 50% limit"):
        state.result()
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        batch = con.execute(
            "SELECT status, rows_read, rows_inserted, rows_quarantined FROM ingest_batches"
        ).fetchall()
        reasons = dict(con.execute("SELECT record_no, reasons FROM quarantine ORDER BY record_no").fetchall())
    finally:
        con.close()
    assert batch == [("failed_validation", 4, 1, 3)]
    assert reasons[2] == ["empty text: no title and no body"]
    assert reasons[3] == ["unparseable published_at: not a date"]
    assert reasons[4][0].startswith("published_at in the future")


def test_unreadable_files_are_quarantined_and_the_run_goes_on(settings, tmp_path: Path) -> None:
    """An empty CSV, a CNBC file with the wrong header and one with a bad byte among good rows:
    no task fails, each unreadable file is one quarantined record with its reason, the bad byte
    costs only its row; a settings error (unknown encoding) still fails loudly."""
    from flows.ingest import ingest_flow

    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    good = tmp_path / "good.csv"
    good.write_bytes(b"id,title\n1,Acme beats estimates\n2,Glob\xffex misses\n3,Initech rallies\n")
    summaries = ingest_flow(files=[str(empty), str(good)], source="drops", fail_on_invalid_batch=False)
    assert len(summaries) == 2, summaries
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        quarantined = [list(r[0]) for r in con.execute("SELECT reasons FROM quarantine ORDER BY record_no").fetchall()]
        titles = sorted(r[0] for r in con.execute("SELECT title FROM articles").fetchall())
    finally:
        con.close()
    assert titles == ["Acme beats estimates", "Initech rallies"]
    assert len(quarantined) == 2, quarantined  # the empty file, the row with the bad byte
    assert any(r.startswith("unreadable input: UnreadableInputError") and "empty" in r for q in quarantined for r in q)
    assert any("utf-8" in r.lower() for q in quarantined for r in q), quarantined

    data = tmp_path / "data" / "financial_news_headlines"
    data.mkdir(parents=True)
    (data / "cnbc_headlines.csv").write_text("Title,When\nSomething,now\n", encoding="utf-8")
    (summary,) = ingest_flow(datasets=["cnbc"], data_dir=str(tmp_path / "data"), fail_on_invalid_batch=False)
    assert (summary["rows_read"], summary["rows_quarantined"]) == (1, 1)

    with pytest.raises(Exception, match="unknown encoding"):
        ingest_flow(files=[str(tmp_path / "good.csv")], source="other", encoding="no-such-codec")


def test_a_feed_that_is_not_a_feed_is_quarantined_not_retried(settings, feed_server, monkeypatch) -> None:
    """An HTML error page or an XML bomb where the feed should be: one quarantined record with
    the reason, no task retries (fetching again would not help), the run succeeds."""
    from flows.ingest import ingest_flow

    url, hits = feed_server
    monkeypatch.setitem(globals(), "RSS", "<html><body>502 Bad Gateway</body></html>")
    (summary,) = ingest_flow(feeds={"brokenwire": url}, fail_on_invalid_batch=False)
    assert (summary["rows_read"], summary["rows_quarantined"]) == (1, 1)
    bomb = ('<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
            "<rss><channel><item><title>&b;</title></item></channel></rss>")
    monkeypatch.setitem(globals(), "RSS", bomb)
    (summary,) = ingest_flow(feeds={"bombwire": url}, fail_on_invalid_batch=False)
    assert (summary["rows_read"], summary["rows_quarantined"]) == (1, 1)
    assert hits == [200, 200]  # one fetch each: no retry
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        reasons = [r[0] for r in con.execute("SELECT unnest(reasons) FROM quarantine ORDER BY quarantined_at").fetchall()]
    finally:
        con.close()
    assert any(r.startswith("unreadable input: UnreadableFeedError: not an RSS/Atom feed") for r in reasons), reasons
    assert any(r.startswith("unreadable input: UnsafeXMLError: unsafe XML") for r in reasons), reasons
