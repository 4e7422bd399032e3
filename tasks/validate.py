"""Validation task: run the Great Expectations suite on one staged batch and report it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from core.settings import Settings
from warehouse.connection import connect_memory
from warehouse.staging import Manifest
from warehouse.validation import validate_batch, validation_summary


@task(name="run-expectations", cache_policy=NO_CACHE)
def run_expectations(settings: Settings, batch_dir: str) -> dict[str, Any]:
    """Validate a staged batch with GX; writes its failures next to the data, returns a summary."""
    folder = Path(batch_dir)
    manifest = Manifest.read(folder)
    with connect_memory(settings) as mem:
        report = validate_batch(mem, folder, manifest.target, settings)
    logger = get_run_logger()
    logger.info("%s: %d of %d rows fail the %s suite", manifest.batch_id, report.rows_failed, report.rows, report.suite)
    for err in report.batch_errors:
        logger.warning("%s: batch-level: %s", manifest.batch_id, err)
    return validation_summary(manifest, report)


@task(name="publish-validation", cache_policy=NO_CACHE)
def publish_validation(summary: dict[str, Any]) -> str:
    """A table artifact with one row per expectation of this batch."""
    table = [
        {
            "expectation": o["expectation"],
            "column": o["column_name"] or "",
            "severity": o["severity"],
            "success": o["success"],
            "unexpected": o["unexpected_count"] if o["unexpected_count"] is not None else "",
        }
        for o in summary["outcomes"]
    ]
    key = "validation-" + "".join(c if c.isalnum() else "-" for c in summary["source"].lower()).strip("-")
    return str(
        create_table_artifact(
            key=key[:60] or "validation",
            table=table,
            description=f"GX suite {summary['suite']} on batch {summary['batch_id']}: "
            f"{summary['rows_failed']} of {summary['rows']} rows quarantined",
        )
    )
