"""The ingest flow: files, feeds and public datasets -> validated rows in the warehouse.

Read it top to bottom: make sure the warehouse exists, work out what is new, then for every
input stage it (one task per file, feed or dataset file), validate it with Great Expectations
(the ``validate`` sub-flow) and commit it under the single-writer limit. A file does all three
in one task (``ingest-file``, :mod:`warehouse.direct`), so its rows are not handed between tasks
through Parquet; its validation table is published the same way. Bad rows land in
``quarantine`` with their reasons; the run fails only when a batch breaks a batch-level rule
(see ``warehouse/validation.py``), and only after every batch has been committed.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from core.settings import Settings, get_settings
from tasks.ingest import (
    commit_staged,
    ingest_file,
    plan_dataset,
    plan_files,
    publish_ingest_report,
    stage_dataset_file,
    stage_feed,
)
from tasks.validate import publish_validation, run_expectations
from tasks.warehouse import migrate_warehouse


class BatchValidationFailed(RuntimeError):
    """Raised at the end of a run in which a batch broke a batch-level validation rule."""


@flow(name="validate", flow_run_name="validate-{batch_dir}", log_prints=True)
def validate_flow(batch_dir: str, settings: Settings | None = None) -> dict[str, Any]:
    """Run the GX suite on one staged batch and publish its results as a table artifact."""
    settings = settings or get_settings()
    summary = run_expectations(settings, batch_dir)
    publish_validation(summary)
    return summary


def _validate_and_commit(settings: Settings, batch_dir: str) -> dict[str, Any]:
    # Sub-flow call with the folder name shortened for the UI.
    validate_flow.with_options(flow_run_name=f"validate-{batch_dir.rsplit('/', 1)[-1]}")(batch_dir, settings)
    return commit_staged(settings, batch_dir)


def _run_name() -> str:
    """``ingest-<what>-<UTC time>``: the source of the files, or the datasets, and when."""
    from datetime import UTC, datetime

    from prefect.runtime import flow_run

    params = flow_run.parameters or {}
    what = "+".join(params.get("datasets") or []) or params.get("source") or "files"
    if params.get("feeds"):
        what = "feeds-" + "+".join(params["feeds"])
    return f"ingest-{what[:60]}-{datetime.now(UTC):%Y%m%d-%H%M}"


@flow(name="ingest", flow_run_name=_run_name, log_prints=True)
def ingest_flow(
    files: list[str] | None = None,
    source: str = "files",
    file_format: str | None = None,
    column_map: dict[str, str] | None = None,
    defaults: dict[str, str] | None = None,
    encoding: str = "utf-8",
    feeds: dict[str, str] | None = None,
    datasets: list[str] | None = None,
    data_dir: str | None = None,
    fail_on_invalid_batch: bool = True,
    label_map: dict[str, str] | None = None,
    target: str = "articles",
) -> list[dict[str, Any]]:
    """Ingest local files (globs), RSS/Atom feeds (``{source: url}``) and public datasets.

    ``label_map`` renames labels of labelled files before validation (``{"bearish": "negative"}``).
    ``target="support_messages"`` reads ``files`` as support-inbox exports (message id, channel,
    customer id, created time, text, optional gold ``intent``) into ``support_messages``; datasets
    know their own target (``banking77`` is support messages).
    Re-running with the same inputs inserts nothing: file versions already ingested are skipped,
    feeds use conditional GETs, and every row is keyed by a stable ``article_id``.
    Returns one summary dict per committed batch (``ingest_batches`` rows).
    """
    settings = get_settings()
    logger = get_run_logger()
    migrate_warehouse(settings)

    # 1. Plan: what is new since the last run (per-source watermarks and file fingerprints).
    work: list[tuple[str, Any]] = []
    if files:
        work += [("file", path) for path in plan_files(settings, files, source)]
    for feed_source, url in (feeds or {}).items():
        work.append(("feed", (feed_source, url)))
    if datasets:
        root = data_dir or (str(settings.data_dir) if settings.data_dir else None)
        if not root:
            raise ValueError("datasets need data_dir (or NEWSPULSE_DATA_DIR)")
        for name in datasets:
            work += [("dataset", (name, path)) for path in plan_dataset(settings, name, root)]
    if not work:
        logger.info("nothing new to ingest")
        return []

    # 2. Stage, validate and commit every input; progress shows in the UI for long runs.
    progress = create_progress_artifact(progress=0.0, key="ingest-progress", description="Inputs done")
    summaries: list[dict[str, Any]] = []
    for done, (kind, item) in enumerate(work, start=1):
        if kind == "file":
            # One pass (stage, GX, commit) in one task: a file's rows never leave its staging DuckDB.
            summary, validation = ingest_file(settings, item, source, file_format, column_map, defaults, encoding,
                                              label_map, target)
            publish_validation(validation)
            summaries.append(summary)
            batch_dir = None
        elif kind == "feed":
            batch_dir = stage_feed(settings, item[1], item[0])
        else:
            batch_dir = stage_dataset_file(settings, item[0], item[1])
        if batch_dir is not None:  # None: a file (committed above), or a feed unchanged since the last pull
            summaries.append(_validate_and_commit(settings, batch_dir))
        update_progress_artifact(artifact_id=progress, progress=100.0 * done / len(work))

    # 3. Report, then fail loudly if a batch broke a batch-level rule (its rows are committed).
    if summaries:
        publish_ingest_report(summaries)
    failed = [s for s in summaries if s["status"] != "succeeded"]
    if failed and fail_on_invalid_batch:
        raise BatchValidationFailed(
            "; ".join(f"{s['batch_id']}: {s['message']}" for s in failed)
        )
    return summaries


if __name__ == "__main__":
    import sys

    ingest_flow(files=sys.argv[1:])
