"""Scoring tasks: plan shards, score a shard, commit every shard, publish the run summary.

Only paths, ids and small dicts travel between tasks. The shard scorer loads the model itself
(once per process) and never touches DuckDB, so shards can run on any worker; the commit is the
single writer (DESIGN.md).
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from core.settings import Settings
from tasks.warehouse import writer_slot
from warehouse import registry as db_registry
from warehouse.connection import connect
from warehouse.scores import commit_scores, export_unscored, record_score_run, staged_outputs

_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()


def served_model(artifact_path: str, precision: str | None = None):
    """The model version at ``artifact_path``, loaded once per process (shards share it).

    Only the latest version is kept: a long-lived worker that sees a new champion frees the old one.
    """
    from models.serving import ServedModel

    key = f"{artifact_path}|{precision}"
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS.clear()
            _MODELS[key] = ServedModel(Path(artifact_path), precision=precision)
        return _MODELS[key]


def score_precision(settings: Settings) -> str:
    """bf16, fp32 or int8 for this worker's scoring device (``score_precision``, else ``precision``;
    'auto' probes the CPU once)."""
    from models.precision import SCORE_PRECISIONS, resolve_precision

    return resolve_precision(settings.score_precision or settings.precision, settings.score_device,
                             settings.precision_cache, allowed=SCORE_PRECISIONS)


@task(name="plan-score-shards", cache_policy=NO_CACHE)
def plan_score_shards(settings: Settings, model_version: str, shard_size: int, limit: int | None = None) -> dict[str, Any]:
    """Resolve the model and stage the articles it has not scored as Parquet shards.

    ``model_version`` is a version or an alias: ``champion`` (what ``score-gpu`` serves) or
    ``cpu-champion`` (what ``score-hourly`` serves: the distilled student, else the champion).
    Returns ``{score_run_id, model_version, artifact_path, run_dir, inputs, started_at, flow_run_id}``
    with the resolved version; ``inputs`` is empty when there is nothing to score (or no champion
    yet, with ``reason`` set).
    """
    started = datetime.now(UTC)
    run_id = f"s{started:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    run_dir = settings.staging_dir / f"score-{run_id}"
    with writer_slot(settings), connect(settings) as con:
        row = db_registry.get_model(con, model_version)
        if row is None:
            reason = "no champion yet: run the finetune flow first" if model_version in db_registry.ALIASES \
                else f"no model version {model_version!r}"
            get_run_logger().warning("nothing to score: %s", reason)
            return {"score_run_id": run_id, "model_version": None, "inputs": [], "reason": reason,
                    "started_at": started.isoformat()}
        inputs = export_unscored(con, row["model_version"], run_dir, shard_size, limit)
    get_run_logger().info("%s: %d shard(s) to score with %s%s", run_id, len(inputs), row["model_version"],
                          f" ({model_version})" if model_version != row["model_version"] else "")
    return {"score_run_id": run_id, "model_version": row["model_version"], "artifact_path": row["artifact_path"],
            "run_dir": str(run_dir), "inputs": inputs, "started_at": started.isoformat(), "reason": None,
            "flow_run_id": str(flow_run.get_id()) if flow_run.get_id() else None}


@task(name="score-shard", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def score_shard_task(settings: Settings, plan: dict[str, Any], input_path: str, batch_size: int = 64,
                     torch_threads: int | None = None) -> dict[str, Any]:
    """Score one staged shard with every head (one forward pass) into ``output-NNNNN.parquet``.

    ``torch_threads`` (default ``settings.torch_threads``, else every core) caps torch's intra-op
    threads in this process: several scorer processes on one machine each get their share. The
    returned stats name the process (``host``, ``pid``) that scored the shard.
    """
    import torch

    from models.serving import score_shard

    threads = torch_threads or settings.torch_threads or os.cpu_count() or 1
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    where = {"host": socket.gethostname(), "pid": os.getpid(), "torch_threads": threads}
    out = Path(input_path).with_name(Path(input_path).name.replace("input-", "output-"))
    if out.exists():  # a retried or resumed task: the shard is already scored
        return {"path": str(out), "rows": None, "seconds": 0.0, "tokens": 0, "skipped": True, **where}
    # Lineage names the score flow run that planned the shard, whichever (sub)flow or worker scores it.
    run_id = plan.get("flow_run_id") or (str(flow_run.get_id()) if flow_run.get_id() else None)
    extra = {"scored_at": datetime.now(UTC), "score_run_id": plan["score_run_id"], "flow_run_id": run_id}
    stats = score_shard(served_model(plan["artifact_path"], score_precision(settings)), Path(input_path), out,
                        batch_size=batch_size,
                        device=settings.score_device, extra=extra)
    return {"path": str(out), **stats, "skipped": False, **where}


@task(name="commit-scores", cache_policy=NO_CACHE)
def commit_score_shards(settings: Settings, plan: dict[str, Any], shard_stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Insert every scored shard into ``scores``/``embeddings`` (one transaction) and log the run."""
    import shutil

    outputs = staged_outputs(Path(plan["run_dir"]))
    seconds = sum(s.get("seconds") or 0.0 for s in shard_stats) or None
    selected = sum(_rows(p) for p in plan["inputs"])
    with writer_slot(settings), connect(settings) as con:
        result = commit_scores(con, outputs, plan["model_version"])
        record_score_run(con, score_run_id=plan["score_run_id"], model_version=plan["model_version"],
                         flow_run_id=str(flow_run.get_id()) if flow_run.get_id() else None,
                         started_at=datetime.fromisoformat(plan["started_at"]), n_shards=len(plan["inputs"]),
                         rows_selected=selected, result=result, score_seconds=seconds)
    if len(outputs) == len(plan["inputs"]):
        shutil.rmtree(plan["run_dir"], ignore_errors=True)  # everything is in the warehouse now
    summary = {"score_run_id": plan["score_run_id"], "model_version": plan["model_version"],
               "shards": len(plan["inputs"]), "shards_committed": len(outputs), "rows_selected": selected,
               "rows_inserted": result.rows_inserted, "rows_duplicate": result.rows_duplicate,
               "embeddings_inserted": result.embeddings_inserted, "score_seconds": round(seconds or 0.0, 3),
               "docs_per_s": round(result.rows_staged / seconds, 1) if seconds else None,
               "tokens": sum(s.get("tokens") or 0 for s in shard_stats)}
    get_run_logger().info("committed %d scores (%d already there) from %d/%d shard(s), %s docs/s",
                          result.rows_inserted, result.rows_duplicate, len(outputs), len(plan["inputs"]),
                          summary["docs_per_s"])
    return summary


def _rows(path: str) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


@task(name="publish-score-report", cache_policy=NO_CACHE)
def publish_score_report(summary: dict[str, Any]) -> None:
    """A table artifact with the run's throughput, rows and model version (Prefect UI)."""
    create_table_artifact(key="score-run", table=[{k: summary.get(k) for k in (
        "score_run_id", "model_version", "shards", "rows_selected", "rows_inserted", "rows_duplicate",
        "docs_per_s", "tokens", "score_seconds")}], description=f"Scoring run {summary.get('score_run_id')}")
