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
