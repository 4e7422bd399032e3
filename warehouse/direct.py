"""One-pass ingest: stage, validate (Great Expectations) and commit a batch in one in-memory DuckDB.

The three-step path (``stage_*`` writes ``normalized.parquet``, :func:`validation.validate_batch`
reads it back, :func:`commit.commit_batch` reads it again) hands every row between tasks through
Parquet: for a big file that costs more than the load itself (bench/README.md, ``ingest.py``).
Here the batch stays in the staging connection:

1. stage into table ``batch`` (``write_parquet=False``); ``raw`` is rendered only for the rows
   that end in quarantine;
2. run the same GX suite on ``batch`` (``failures`` with the same reasons; ``validation.json``
   and ``failures.parquet`` are written to the batch folder as before);
3. under the caller's writer slot, attach the warehouse to the same connection and run the same
   :func:`commit.commit_batch` on the in-memory tables: one transaction, the same batch identity,
   quarantine, validation_runs, fingerprint and watermark rows; detaching checkpoints it.

No warehouse lock is held while staging and validating. A run killed before the commit's
transaction leaves the warehouse as it was and its folder to ``prune_staging``; after it, the
file's fingerprint makes the re-run skip it. Re-committing a file version that is already
ingested (a retried task) returns the stored batch instead of adding a batch of duplicates.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from core.settings import Settings
from warehouse.commit import BatchSummary, _existing, already_ingested, commit_batch
from warehouse.connection import WarehouseInUse, attach_warehouse, connect, connect_memory, scalar
from warehouse.staging import Manifest
from warehouse.validation import ValidationReport, validate_table

Stage = Callable[[duckdb.DuckDBPyConnection], Manifest]


@dataclass
class DirectResult:
    """What one pass did: the committed batch, its validation report and seconds per phase."""

    summary: BatchSummary
    report: ValidationReport
    timings: dict[str, float] = field(default_factory=dict)


def _raw_for_failures(con: duckdb.DuckDBPyConnection) -> None:
    """Fill ``batch.raw`` of the failed rows from ``staged`` (the record as received)."""
    if not scalar(con, "SELECT count(*) FROM failures"):
        return
    con.execute(
        """CREATE OR REPLACE TEMP TABLE failed_raw AS
           SELECT record_no, raw FROM staged WHERE record_no IN (SELECT record_no FROM failures)"""
    )
    con.execute("UPDATE batch SET raw = f.raw FROM failed_raw f WHERE batch.record_no = f.record_no")
    con.execute("DROP TABLE failed_raw")


def ingest_direct(
    settings: Settings,
    batch_dir: Path,
    manifest: Manifest,
    stage: Stage,
    *,
    writer: Callable[[], AbstractContextManager[object]] = nullcontext,
    on_phase: Callable[[str], None] | None = None,
) -> DirectResult:
    """Stage with ``stage(con)`` (a ``stage_*`` call with ``write_parquet=False``), validate and
    commit one batch; ``writer()`` is held around the commit only (the tasks pass the Prefect
    writer slot). ``on_phase`` hears "staged", "validated" and "committed"."""
    timings: dict[str, float] = {}
    mark = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        timings[f"{name}_s"] = now - mark
        mark = now
        if on_phase:
            on_phase(name)

    try:
        with connect_memory(settings) as mem:
            stage(mem)
            phase("staged")
            report = validate_table(mem, batch_dir, manifest.target, settings)
            _raw_for_failures(mem)
            phase("validated")
            with writer():
                summary = _commit(settings, mem, batch_dir, manifest)
            phase("committed")
    except BaseException:
        shutil.rmtree(batch_dir, ignore_errors=True)  # no other step could use what is there
        raise
    return DirectResult(summary, report, timings)


def _commit(settings: Settings, mem: duckdb.DuckDBPyConnection, batch_dir: Path, manifest: Manifest) -> BatchSummary:
    # Order-free inserts run in parallel (2x faster here); rows carry their own ids and times.
    mem.execute("SET preserve_insertion_order = false")
    try:
        with attach_warehouse(mem, settings) as home:
            done = manifest.fingerprint and already_ingested(mem, manifest.source, manifest.fingerprint)
            previous = _existing(mem, done) if done else None
            if previous is not None:
                shutil.rmtree(batch_dir, ignore_errors=True)
                return previous
            return commit_batch(mem, batch_dir, tables=(f"{home}.main.batch", f"{home}.main.failures"))
    except WarehouseInUse:
        # This process has the warehouse open elsewhere (same instance through connect()): hand
        # the batch over in the folder, as the three-step path does.
        mem.execute(
            f"COPY batch TO '{batch_dir / 'normalized.parquet'}' (FORMAT parquet, DICTIONARY_SIZE_LIMIT 4096)"
        )
        with connect(settings) as con:
            return commit_batch(con, batch_dir)
