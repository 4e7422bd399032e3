"""Ingest tasks: plan inputs, stage each batch, commit it. One task per file, feed or dataset file.

Each stage task reads one input into a staging folder (see :mod:`warehouse.staging`) and returns
the folder path; :func:`commit_staged` loads a validated folder under the writer slot.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from core.settings import Settings
from sources.datasets import DATASETS, DatasetSpec, dataset_files, read_dataset_file
from sources.feeds import fetch_feed, parse_feed
from sources.files import expand_globs, file_fingerprint, read_csv_records
from sources.records import read_or_quarantine, records_frame
from sources.support import SUPPORT_DATASETS, read_support_file, read_support_or_quarantine
from tasks.warehouse import writer_slot
from warehouse.commit import BatchSummary, already_ingested, commit_batch, source_state
from warehouse.connection import connect, connect_memory
from warehouse.direct import ingest_direct
from warehouse.staging import Manifest, new_batch, stage_frame, stage_jsonl, stage_parquet
from warehouse.validation import validation_summary

FileFormat = Literal["csv", "jsonl", "parquet", "mind_behaviors"]
_SUFFIX_FORMATS: dict[str, FileFormat] = {
    ".csv": "csv", ".tsv": "csv", ".txt": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl",
    ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet",
}


def detect_format(path: Path, fmt: str | None) -> FileFormat:
    """The file format to read ``path`` with: ``fmt`` if given, else from the suffix."""
    if fmt:
        if fmt not in ("csv", "jsonl", "parquet", "mind_behaviors"):
            raise ValueError(f"unknown format {fmt!r}; use csv, jsonl, parquet or mind_behaviors")
        return fmt  # type: ignore[return-value]
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz",)]
    for suffix in reversed(suffixes):
        if suffix in _SUFFIX_FORMATS:
            return _SUFFIX_FORMATS[suffix]
    raise ValueError(f"cannot tell the format of {path.name}; pass format=csv|jsonl|parquet")


def dataset_spec(name: str) -> DatasetSpec:
    """The registered news or support dataset ``name``; ValueError (one line) when unknown."""
    spec = DATASETS.get(name) or SUPPORT_DATASETS.get(name)
    if spec is None:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join([*DATASETS, *SUPPORT_DATASETS])}")
    return spec


def _run_id() -> str | None:
    run_id = flow_run.get_id()
    return str(run_id) if run_id else None


@task(name="plan-files", cache_policy=NO_CACHE)
def plan_files(settings: Settings, patterns: list[str], source: str) -> list[str]:
    """Expand globs and drop files whose exact version (path, size, mtime) was already ingested."""
    logger = get_run_logger()
    files, unmatched = expand_globs(patterns)
    for pattern in unmatched:
        logger.warning("pattern %r matched no file", pattern)
    todo: list[str] = []
    with writer_slot(settings), connect(settings) as con:
        for path in files:
            done = already_ingested(con, source, file_fingerprint(path))
            if done:
                logger.info("skip %s: this version was ingested by batch %s", path, done)
            else:
                todo.append(str(path))
    return todo


@task(name="stage-file", cache_policy=NO_CACHE, retries=1, task_run_name="stage-{source}-{path}")
def stage_file(
    settings: Settings,
    path: str,
    source: str,
    fmt: str | None = None,
    column_map: dict[str, str] | None = None,
    defaults: dict[str, str] | None = None,
    encoding: str = "utf-8",
    label_map: dict[str, str] | None = None,
    target: str = "articles",
) -> str:
    """Read one CSV / JSONL / Parquet / MIND-behaviors file into a staging folder; returns its path.

    ``target="support_messages"``: the file is a support export (:mod:`sources.support`).
    """
    batch_dir, manifest, stage = _file_batch(settings, path, source, fmt, column_map, defaults, encoding, label_map,
                                             target)
    with connect_memory(settings) as mem:
        stage(mem, True)
    get_run_logger().info("staged %s rows from %s as batch %s", manifest.rows, Path(path).name, manifest.batch_id)
    return str(batch_dir)


def _file_batch(
    settings: Settings,
    path: str,
    source: str,
    fmt: str | None,
    column_map: dict[str, str] | None,
    defaults: dict[str, str] | None,
    encoding: str,
    label_map: dict[str, str] | None,
    target: str,
) -> tuple[Path, Manifest, Callable[[Any, bool], Manifest]]:
    """A new batch for one file and the call that stages it: ``stage(con, write_parquet)``."""
    file = Path(path)
    kind = detect_format(file, fmt)
    if target not in ("articles", "support_messages"):
        raise ValueError(f"unknown target {target!r}; use articles or support_messages")
    if kind == "mind_behaviors":
        target = "behaviors"
    batch_dir, manifest = new_batch(settings.staging_dir, source, target, str(file))  # type: ignore[arg-type]
    manifest.fingerprint, manifest.flow_run_id = file_fingerprint(file), _run_id()
    manifest.label_map = label_map

    def stage(mem: Any, write_parquet: bool) -> Manifest:
        if target == "support_messages":
            frame = read_support_or_quarantine(lambda: read_support_file(
                file, kind, source=source, column_map=column_map, defaults=defaults, encoding=encoding), str(file))
            return stage_frame(mem, batch_dir, manifest, frame, write_parquet=write_parquet)
        if kind == "jsonl":
            return stage_jsonl(mem, batch_dir, manifest, file, column_map=column_map, defaults=defaults,
                               write_parquet=write_parquet)
        if kind == "parquet":
            return stage_parquet(mem, batch_dir, manifest, file, column_map=column_map, defaults=defaults,
                                 write_parquet=write_parquet)
        if kind == "csv":
            frame = read_or_quarantine(lambda: read_csv_records(
                file, source=source, encoding=encoding, column_map=column_map, defaults=defaults,
                delimiter="\t" if file.suffix.lower() == ".tsv" else None,
            ), str(file))
            return stage_frame(mem, batch_dir, manifest, frame, write_parquet=write_parquet)
        from sources.datasets import read_mind_behaviors

        frame = read_or_quarantine(lambda: read_mind_behaviors(file), str(file), behaviors=True)
        frame["source"] = source
        return stage_frame(mem, batch_dir, manifest, frame, write_parquet=write_parquet)

    return batch_dir, manifest, stage


@task(name="ingest-file", cache_policy=NO_CACHE, retries=1, task_run_name="ingest-{source}-{path}")
def ingest_file(
    settings: Settings,
    path: str,
    source: str,
    fmt: str | None = None,
    column_map: dict[str, str] | None = None,
    defaults: dict[str, str] | None = None,
    encoding: str = "utf-8",
    label_map: dict[str, str] | None = None,
    target: str = "articles",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Stage, validate (GX) and commit one file in one pass (:mod:`warehouse.direct`): the rows
    never leave the staging DuckDB, and the writer slot is held for the commit only.

    Returns (the batch summary, the validation summary :func:`tasks.validate.run_expectations`
    gives for a staged folder). A retry after a commit returns that commit's batch.
    """
    batch_dir, manifest, stage = _file_batch(settings, path, source, fmt, column_map, defaults, encoding, label_map,
                                             target)
    result = ingest_direct(settings, batch_dir, manifest, lambda mem: stage(mem, False),
                           writer=lambda: writer_slot(settings))
    logger = get_run_logger()
    report, summary = result.report, result.summary
    logger.info("%s: %d of %d rows fail the %s suite", manifest.batch_id, report.rows_failed, report.rows, report.suite)
    for err in report.batch_errors:
        logger.warning("%s: batch-level: %s", manifest.batch_id, err)
    _log_summary(summary)
    return summary.as_dict(), validation_summary(manifest, report)


@task(
    name="stage-feed", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[5, 30, 120],
    task_run_name="stage-feed-{source}",
)
def stage_feed(settings: Settings, url: str, source: str) -> str | None:
    """Fetch an RSS/Atom feed (conditional GET) and stage its entries; None when unchanged."""
    logger = get_run_logger()
    with writer_slot(settings), connect(settings) as con:
        state = source_state(con, source) or {}
    response = fetch_feed(
        url, timeout_s=settings.http_timeout_s, max_bytes=settings.http_max_bytes,
        user_agent=settings.user_agent, etag=state.get("etag"), last_modified=state.get("last_modified"),
    )
    if response.not_modified or response.body is None:
        logger.info("feed %s not modified since the last pull", url)
        return None
    # Not a feed, or unsafe XML: one quarantined record with the reason (fetching again will not help).
    frame = read_or_quarantine(lambda: parse_feed(response.body, source=source, feed_url=url), url)
    batch_dir, manifest = new_batch(settings.staging_dir, source, "articles", url)
    manifest.http_validators = {"etag": response.etag, "last_modified": response.last_modified}
    manifest.flow_run_id = _run_id()
    with connect_memory(settings) as mem:
        stage_frame(mem, batch_dir, manifest, frame)
    logger.info("staged %s entries from %s", manifest.rows, url)
    return str(batch_dir)


@task(name="plan-dataset", cache_policy=NO_CACHE)
def plan_dataset(settings: Settings, dataset: str, data_dir: str) -> list[str]:
    """Inputs of a public dataset not yet ingested in this exact version."""
    spec = dataset_spec(dataset)
    todo: list[str] = []
    with writer_slot(settings), connect(settings) as con:
        for path in dataset_files(spec, data_dir):
            if not already_ingested(con, dataset, _dataset_fingerprint(path)):
                todo.append(str(path))
    return todo


def _dataset_fingerprint(path: Path) -> dict[str, Any]:
    """Fingerprint of a dataset input; a folder input uses its newest file and total size."""
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file()]
        return {
            "path": str(path.resolve()),
            "size": sum(p.stat().st_size for p in files),
            "mtime_ns": max((p.stat().st_mtime_ns for p in files), default=0),
        }
    return file_fingerprint(path)


@task(name="stage-dataset-file", cache_policy=NO_CACHE, task_run_name="stage-{dataset}-{path}")
def stage_dataset_file(settings: Settings, dataset: str, path: str) -> str:
    """Read one input of a public dataset with its own reader and stage it."""
    spec = dataset_spec(dataset)
    file = Path(path)
    batch_dir, manifest = new_batch(settings.staging_dir, dataset, spec.target, str(file))
    manifest.fingerprint, manifest.flow_run_id = _dataset_fingerprint(file), _run_id()
    if spec.target == "support_messages":
        frame = read_support_or_quarantine(lambda: read_dataset_file(spec, file), str(file))
    else:
        frame = read_or_quarantine(lambda: read_dataset_file(spec, file), str(file),
                                   behaviors=spec.target == "behaviors")
    with connect_memory(settings) as mem:
        stage_frame(mem, batch_dir, manifest, frame)
    get_run_logger().info("staged %s rows of %s from %s", manifest.rows, dataset, file.name)
    return str(batch_dir)


@task(name="stage-records", cache_policy=NO_CACHE)
def stage_records(settings: Settings, records: list[dict[str, Any]], source: str) -> str:
    """Stage records given inline (small pushes from an API or a test)."""
    batch_dir, manifest = new_batch(settings.staging_dir, source, "articles", "inline records")
    manifest.flow_run_id = _run_id()
    with connect_memory(settings) as mem:
        stage_frame(mem, batch_dir, manifest, records_frame(records))
    return str(batch_dir)


@task(name="commit-batch", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def commit_staged(settings: Settings, batch_dir: str) -> dict[str, Any]:
    """Commit one validated staging folder under the writer slot; idempotent on retry."""
    with writer_slot(settings), connect(settings) as con:
        summary = commit_batch(con, Path(batch_dir))
    _log_summary(summary)
    return summary.as_dict()


def _log_summary(summary: BatchSummary) -> None:
    # A labels file's rows name articles already in the warehouse: they count as duplicate rows while
    # their labels are the news, so the labels get their own number (not "inserted 0" alone).
    get_run_logger().info(
        "batch %s: read %d = inserted %d + already known %d + quarantined %d; labels inserted %d (%s)",
        summary.batch_id, summary.rows_read, summary.rows_inserted, summary.rows_duplicate,
        summary.rows_quarantined, summary.labels_inserted, summary.status,
    )


@task(name="publish-ingest-report", cache_policy=NO_CACHE)
def publish_ingest_report(summaries: list[dict[str, Any]]) -> str:
    """Table artifact of every batch of the run plus a short markdown summary."""
    columns = ["batch_id", "source", "input", "rows_read", "rows_inserted", "rows_duplicate",
               "rows_quarantined", "labels_inserted", "status", "message"]
    table = [{k: s.get(k) for k in columns} for s in summaries]
    create_table_artifact(key="ingest-batches", table=table, description="Batches of this ingest run")
    total = {k: sum(int(s.get(k) or 0) for s in summaries)
             for k in ("rows_read", "rows_inserted", "rows_duplicate", "rows_quarantined", "labels_inserted")}
    failed = [s["batch_id"] for s in summaries if s["status"] != "succeeded"]
    md = (
        f"# Ingest: {len(summaries)} batch(es)\n\n"
        f"| read | inserted | duplicate | quarantined | labels inserted |\n|---:|---:|---:|---:|---:|\n"
        f"| {total['rows_read']} | {total['rows_inserted']} | {total['rows_duplicate']} | {total['rows_quarantined']} "
        f"| {total['labels_inserted']} |\n\n"
        + (f"**Failed validation:** {', '.join(failed)}\n" if failed else "All batches passed validation.\n")
        + "\nQuarantined rows: `SELECT * FROM v_quarantine ORDER BY quarantined_at DESC`\n"
    )
    return str(create_markdown_artifact(key="ingest-summary", markdown=md, description="Ingest summary"))


__all__ = [
    "BatchSummary", "commit_staged", "dataset_spec", "detect_format", "ingest_file", "plan_dataset", "plan_files",
    "publish_ingest_report", "stage_dataset_file", "stage_feed", "stage_file", "stage_records",
]
