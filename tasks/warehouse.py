"""Warehouse plumbing for flows: the writer slot, migrations, and the analyst SQL path."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency

from core.settings import Settings
from warehouse.connection import connect
from warehouse.migrate import migrate
from warehouse.staging import prune_staging


def ensure_writer_limit(settings: Settings) -> None:
    """Create the ``duckdb-writer`` global concurrency limit (limit 1) if it does not exist."""
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(settings.writer_limit, 1)


@contextmanager
def writer_slot(settings: Settings) -> Iterator[None]:
    """Hold the single DuckDB writer slot. ``strict``: a missing limit is an error, not a no-op."""
    with concurrency(settings.writer_limit, occupy=1, timeout_seconds=settings.writer_timeout_s, strict=True):
        yield


@task(name="migrate-warehouse", cache_policy=NO_CACHE)
def migrate_warehouse(settings: Settings) -> list[int]:
    """Create the writer limit, apply pending migrations, prune stale staging folders.

    Returns the migration versions applied now.
    """
    ensure_writer_limit(settings)
    settings.ensure_dirs()
    with writer_slot(settings), connect(settings) as con:
        applied = migrate(con)
    if applied:
        get_run_logger().info("applied migrations %s to %s", applied, settings.warehouse_path)
    removed = prune_staging(settings.staging_dir, settings.staging_retention_h * 3600)
    if removed:
        get_run_logger().warning("removed %d stale staging folder(s) from crashed runs: %s", len(removed), removed)
    return applied
