"""Commit a validated batch folder into the warehouse in one transaction.

Exactly-once: everything a batch writes (articles, behaviors or support messages, labels, quarantine,
validation_runs, the ingest_batches row, file fingerprints, the source watermark) commits
together or not at all. Committing a batch id that is already in ``ingest_batches`` is a no-op
that returns the stored summary, so a retried task cannot double-count. Rows already in the
warehouse (same ``article_id`` / impression) count as duplicates, so re-ingesting the same input
inserts nothing.

The caller holds the writer slot (Prefect ``duckdb-writer`` limit) around :func:`commit_batch`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb

from warehouse.connection import fetch_dicts
from warehouse.staging import Manifest
from warehouse.validation import ValidationReport


@dataclass
class BatchSummary:
    """The ``ingest_batches`` row of one batch."""

    batch_id: str
    source: str
    target_table: str
    input: str
    rows_read: int
    rows_inserted: int
    rows_duplicate: int
    rows_quarantined: int
    labels_inserted: int
    status: str
    message: str | None

    def as_dict(self) -> dict:
        """Plain dict (for artifacts and JSON)."""
        return asdict(self)


def _existing(con: duckdb.DuckDBPyConnection, batch_id: str) -> BatchSummary | None:
    rows = fetch_dicts(
        con,
        "SELECT batch_id, source, target_table, input, rows_read, rows_inserted, rows_duplicate,"
        " rows_quarantined, labels_inserted, status, message FROM ingest_batches WHERE batch_id = ?",
        [batch_id],
    )
    return BatchSummary(**rows[0]) if rows else None


def _load_batch(con: duckdb.DuckDBPyConnection, batch_dir: Path, tables: tuple[str, str] | None = None) -> None:
    # The rows stay in Parquet (a view scans only the columns each statement needs); the
    # failures are few, so they are materialised with their reasons grouped per record.
    # ``tables``: (rows, failures) already in this connection (warehouse.direct), not files.
    rows, failures = tables or (f"read_parquet('{batch_dir / 'normalized.parquet'}')",
                                f"read_parquet('{batch_dir / 'failures.parquet'}')")
    con.execute(f"CREATE OR REPLACE TEMP VIEW b_rows AS SELECT * FROM {rows}")
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE b_fail AS
            SELECT record_no, list(DISTINCT reason ORDER BY reason) AS reasons
            FROM {failures} GROUP BY record_no"""
    )
    con.execute("CREATE OR REPLACE TEMP VIEW b_good AS SELECT r.* FROM b_rows r ANTI JOIN b_fail f USING (record_no)")


def _count(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None) -> int:
    return int(con.execute(sql, params or {}).fetchall()[0][0])


def _first_per_key(con: duckdb.DuckDBPyConnection, keys: str) -> str:
    """A relation of good rows, one per key (the first in record order).

    Most batches have no repeated key, so the window function (a full sort) only runs when a
    cheap distinct count says it is needed.
    """
    total, distinct = con.execute(f"SELECT count(*), count(DISTINCT ({keys})) FROM b_good").fetchall()[0]
    if total == distinct:
        return "b_good"
    return (f"(SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY {keys} ORDER BY record_no) AS k "
            f"FROM b_good) WHERE k = 1)")


def _replace_changed_labels(con: duckdb.DuckDBPyConnection, batch_id: str, new_labels: str) -> int:
    """Labels of this batch that differ from the stored label of the same (dataset, item, task)
    replace it; the stored row goes to ``label_history`` first (migration 014), so a corrected
    dataset is not ignored and nothing is lost. ``new_labels``: SQL of ``dataset, item, task,
    label, label_set`` (one row per key). Returns how many labels were replaced."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE b_labels AS {new_labels}")
    con.execute(
        """INSERT INTO label_history
           SELECT l.dataset, l.item, l.task, l.label, l.split, l.batch_id, l.created_at, l.annotator, l.labelled_at,
                  $batch_id, n.label, now()
           FROM labels l JOIN b_labels n ON l.dataset = n.dataset AND l.item = n.item AND l.task = n.task
           WHERE l.label <> n.label""", {"batch_id": batch_id})
    return _count(
        con,
        """UPDATE labels SET label = n.label, label_set = n.label_set, batch_id = $batch_id, created_at = now(),
                  annotator = NULL, labelled_at = NULL
           FROM b_labels n WHERE labels.dataset = n.dataset AND labels.item = n.item AND labels.task = n.task
             AND labels.label <> n.label""", {"batch_id": batch_id})


def _commit_articles(con: duckdb.DuckDBPyConnection, batch_id: str) -> tuple[int, int, int]:
    """Insert the batch's good, new articles and its labels; returns (inserted, duplicate, labels)."""
    good = _count(con, "SELECT count(*) FROM b_good")
    first = _first_per_key(con, "article_id")
    inserted = _count(
        con,
        f"""INSERT INTO articles (article_id, source, source_id, url, title, body, published_at,
                                  ingested_at, lang, tickers, meta, batch_id)
            SELECT g.article_id, g.source, g.source_id, g.url, g.title, g.body, g.published_at, now(),
                   g.lang, g.tickers, g.meta, $batch_id
            FROM {first} g ANTI JOIN articles a USING (article_id)""",
        {"batch_id": batch_id},
    )
    # Labels ride on good rows, also when the article itself was already known (the same
    # PhraseBank sentence appears in four agreement files: one article, four label rows). A label
    # that changed since the stored one replaces it, the old one kept in label_history.
    _replace_changed_labels(con, batch_id, """
        SELECT dataset, article_id AS item, task, label, label_set FROM (
          SELECT *, row_number() OVER (PARTITION BY dataset, article_id, task ORDER BY record_no) AS k
          FROM b_good WHERE label IS NOT NULL) WHERE k = 1""")
    labels = _count(
        con,
        """INSERT INTO labels (dataset, item, task, label, label_set, split, batch_id, created_at)
           SELECT dataset, article_id, task, label, label_set, split, $batch_id, now()
           FROM (SELECT *, row_number() OVER (PARTITION BY dataset, article_id, task ORDER BY record_no) AS k
                 FROM b_good WHERE label IS NOT NULL) WHERE k = 1
           ON CONFLICT DO NOTHING""",
        {"batch_id": batch_id},
    )
    return inserted, good - inserted, labels


def _commit_behaviors(con: duckdb.DuckDBPyConnection, batch_id: str) -> tuple[int, int, int]:
    good = _count(con, "SELECT count(*) FROM b_good")
    first = _first_per_key(con, "source, impression_id")
    inserted = _count(
        con,
        f"""INSERT INTO behaviors SELECT g.source, g.impression_id, g.user_id, g."time", g.history,
                   g.impressions, $batch_id, now()
            FROM {first} g ANTI JOIN behaviors b USING (source, impression_id)""",
        {"batch_id": batch_id},
    )
    return inserted, good - inserted, 0


def _commit_support(con: duckdb.DuckDBPyConnection, batch_id: str) -> tuple[int, int, int]:
    """Insert the batch's good, new support messages and their gold intents (task ``intent``)."""
    good = _count(con, "SELECT count(*) FROM b_good")
    first = _first_per_key(con, "message_id")
    inserted = _count(
        con,
        f"""INSERT INTO support_messages (message_id, source, source_message_id, channel, customer_id,
                                          created_at, text, lang, meta, batch_id, ingested_at)
            SELECT g.message_id, g.source, g.source_message_id, g.channel, g.customer_id, g.created_at,
                   g.text, g.lang, g.meta, $batch_id, now()
            FROM {first} g ANTI JOIN support_messages m USING (message_id)""",
        {"batch_id": batch_id},
    )
    # As for news: labels ride on good rows, also when the message itself was already known.
    _replace_changed_labels(con, batch_id, """
        SELECT dataset, message_id AS item, 'intent' AS task, label, NULL::VARCHAR[] AS label_set FROM (
          SELECT *, row_number() OVER (PARTITION BY dataset, message_id ORDER BY record_no) AS k
          FROM b_good WHERE label IS NOT NULL) WHERE k = 1""")
    labels = _count(
        con,
        """INSERT INTO labels (dataset, item, task, label, label_set, split, batch_id, created_at)
           SELECT dataset, message_id, 'intent', label, NULL, split, $batch_id, now()
           FROM (SELECT *, row_number() OVER (PARTITION BY dataset, message_id ORDER BY record_no) AS k
                 FROM b_good WHERE label IS NOT NULL) WHERE k = 1
           ON CONFLICT DO NOTHING""",
        {"batch_id": batch_id},
    )
    return inserted, good - inserted, labels


def commit_batch(
    con: duckdb.DuckDBPyConnection, batch_dir: Path, *, cleanup: bool = True, tables: tuple[str, str] | None = None
) -> BatchSummary:
    """Load a staged + validated batch folder into the warehouse atomically.

    ``tables``: the batch's (rows, failures) tables on ``con`` when they are not in the folder's
    Parquet files (the one-pass ingest of :mod:`warehouse.direct`).
    """
    manifest = Manifest.read(batch_dir)
    previous = _existing(con, manifest.batch_id)
    if previous is not None:
        if cleanup:
            shutil.rmtree(batch_dir, ignore_errors=True)
        return previous
    report = ValidationReport.from_json((batch_dir / "validation.json").read_text(encoding="utf-8"))
    con.execute("BEGIN TRANSACTION")
    try:
        _load_batch(con, batch_dir, tables)
        if manifest.target == "articles":
            inserted, duplicate, labels = _commit_articles(con, manifest.batch_id)
            time_col = "published_at"
        elif manifest.target == "support_messages":
            inserted, duplicate, labels = _commit_support(con, manifest.batch_id)
            time_col = "created_at"
        else:
            inserted, duplicate, labels = _commit_behaviors(con, manifest.batch_id)
            time_col = '"time"'
        quarantined = _count(con, "SELECT count(*) FROM b_fail")
        con.execute(
            """INSERT INTO quarantine (batch_id, record_no, source, target_table, raw, reasons, quarantined_at)
               SELECT $batch_id, r.record_no, r.source, $target, r.raw, f.reasons, now()
               FROM b_rows r JOIN b_fail f USING (record_no)""",
            {"batch_id": manifest.batch_id, "target": manifest.target},
        )
        con.executemany(
            "INSERT INTO validation_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
            [
                [manifest.batch_id, report.suite, o.expectation_no, o.expectation, o.column_name,
                 o.severity, o.success, o.element_count, o.unexpected_count, json.dumps(o.kwargs)]
                for o in report.outcomes
            ],
        )
        status = "failed_validation" if report.batch_errors else "succeeded"
        notes = list(manifest.notes) + report.batch_errors
        watermark = con.execute(f"SELECT max({time_col}) FROM b_good").fetchall()[0][0]
        con.execute(
            """INSERT INTO ingest_batches VALUES ($batch_id, $source, $target, $input, $flow_run_id,
                   $started_at::TIMESTAMPTZ, now(), $read, $inserted, $duplicate, $quarantined, $labels,
                   $watermark, $status, $message)""",
            {
                "batch_id": manifest.batch_id, "source": manifest.source, "target": manifest.target,
                "input": manifest.input, "flow_run_id": manifest.flow_run_id,
                "started_at": manifest.started_at, "read": manifest.rows, "inserted": inserted,
                "duplicate": duplicate, "quarantined": quarantined, "labels": labels,
                "watermark": watermark, "status": status, "message": "; ".join(notes) or None,
            },
        )
        if manifest.fingerprint:
            fp = manifest.fingerprint
            con.execute(
                "INSERT INTO ingested_files VALUES (?, ?, ?, ?, ?, now()) ON CONFLICT DO NOTHING",
                [manifest.source, fp["path"], fp["size"], fp["mtime_ns"], manifest.batch_id],
            )
        http = manifest.http_validators or {}
        con.execute(
            """INSERT INTO source_state (source, watermark, etag, last_modified, updated_at)
               VALUES ($s, $w, $etag, $lm, now())
               ON CONFLICT (source) DO UPDATE SET
                   watermark = greatest(source_state.watermark, EXCLUDED.watermark),
                   etag = coalesce(EXCLUDED.etag, source_state.etag),
                   last_modified = coalesce(EXCLUDED.last_modified, source_state.last_modified),
                   updated_at = now()""",
            {"s": manifest.source, "w": watermark, "etag": http.get("etag"), "lm": http.get("last_modified")},
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    if cleanup:
        shutil.rmtree(batch_dir, ignore_errors=True)
    summary = _existing(con, manifest.batch_id)
    assert summary is not None
    return summary


def source_state(con: duckdb.DuckDBPyConnection, source: str) -> dict | None:
    """The stored watermark and HTTP validators of ``source`` (None if never ingested)."""
    rows = fetch_dicts(con, "SELECT * FROM source_state WHERE source = ?", [source])
    return rows[0] if rows else None


def already_ingested(con: duckdb.DuckDBPyConnection, source: str, fingerprint: dict) -> str | None:
    """The batch id that already ingested this exact file version for ``source``, if any."""
    rows = con.execute(
        "SELECT batch_id FROM ingested_files WHERE source = ? AND path = ? AND size = ? AND mtime_ns = ?",
        [source, fingerprint["path"], fingerprint["size"], fingerprint["mtime_ns"]],
    ).fetchall()
    return rows[0][0] if rows else None
