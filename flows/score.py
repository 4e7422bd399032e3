"""Score every article a served model has not scored yet: all heads and the embedding in one pass.

Who scores what: ``score-hourly`` (cpu pool) serves ``cpu-champion``, normally the distilled
student (the champion while no model holds it); ``score-gpu`` (gpu pool) serves ``champion``, the
big model. ``scores`` rows keep ``model_version``, so both models' scores coexist; v_scores shows
the resolved cpu-champion's (``v_serving``, ``v_scores_by_model``: migration 007).

Plan (one short write-locked export of unscored article ids into Parquet shards) -> score each
shard as its own task (anywhere: the scorer never opens DuckDB) -> commit all shards in one
idempotent transaction -> publish throughput. A run with nothing new stops after the plan.
A crash at any point is safe: uncommitted articles are simply selected again by the next run,
and the commit skips rows already present, so there are no duplicates and no gaps.

Where shards run is a parameter (issue 6). ``task_runner="threads"`` scores one shard at a time
in the flow's own process, torch on every core. ``task_runner="dask"`` hands them to a Dask
cluster through ``prefect_dask.DaskTaskRunner``: a ``LocalCluster`` of ``workers`` processes
started for the run, or the existing cluster whose scheduler is at ``dask_address``. A flow's
task runner is fixed when it is decorated, so the shards run in the nested flow
:func:`score_shards`, called ``.with_options(task_runner=...)``; planning and the commit stay in
this flow, which remains the single DuckDB writer.

Why Dask (prefect-dask) and not Ray: it is pure pip (dask + distributed), a LocalCluster starts in
seconds, and the same runner connects by address to any existing Dask cluster (dask-kubernetes,
dask-jobqueue on a batch scheduler, a GPU cluster); Prefect maintains it. prefect-ray measured
slower per task here (520 vs 384 ms/task, ../shared/docs/STACK_NOTES.md 1.6) and brings a much
heavier runtime. Dask workers are spawned processes: a script that calls this flow with
``task_runner="dask"`` must do so under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from core.settings import Settings, get_settings
from tasks.score import commit_score_shards, plan_score_shards, publish_score_report, score_shard_task
from tasks.warehouse import migrate_warehouse


def shard_runner(kind: str, workers: int, address: str | None) -> tuple[TaskRunner, int | None, str]:
    """``(task runner, torch threads per scorer process or None for the default, label)`` for ``kind``.

    ``threads``: one shard at a time (each shard already uses every core through torch). ``dask``
    with an ``address``: that cluster's workers (their torch threads: ``NEWSPULSE_TORCH_THREADS`` as
    set where the flow runs, else every core of the worker's machine; start one single-threaded
    worker process per machine or per GPU). ``dask`` without: a LocalCluster of ``workers``
    single-threaded processes, each limited to ``cpu_count // workers`` torch threads so they do not
    oversubscribe the cores.
    """
    if kind == "threads":
        return ThreadPoolTaskRunner(max_workers=1), None, "threads"
    if kind != "dask":
        raise ValueError(f"unknown task runner {kind!r}: use 'threads' or 'dask'")
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address), None, f"dask@{address}"
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    runner = DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                            "dashboard_address": None})
    return runner, max(1, (os.cpu_count() or 1) // workers), f"dask-local-{workers}"


@contextmanager
def api_for_workers(kind: str, address: str | None) -> Iterator[None]:
    """Let Dask workers report their task runs to the API this flow run uses.

    Task runs take the flow's Prefect settings with them. Without ``PREFECT_API_URL`` (the CLI, a
    plain script) Prefect serves a temporary API from this process and the setting is empty, so each
    worker process would start a temporary server of its own (~20 s each on 2 cores). For a local
    cluster, point the settings at this process's server while the shards run. Workers of an
    existing cluster elsewhere cannot reach it: they need a Prefect server both sides reach.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if kind != "dask" or PREFECT_API_URL.value():
        yield
        return
    if address:
        get_run_logger().warning("PREFECT_API_URL is not set: the workers at %s will each start a temporary "
                                 "Prefect server; set it to a server they can reach", address)
        yield
        return
    from prefect.client.orchestration import get_client

    with temporary_settings(updates={PREFECT_API_URL: str(get_client(sync_client=True).api_url)}):
        yield


@flow(name="score-shards", task_runner=ThreadPoolTaskRunner(max_workers=1), validate_parameters=False)
def score_shards(settings: Settings, plan: dict[str, Any], batch_size: int,
                 torch_threads: int | None = None) -> dict[str, Any]:
    """Score every staged shard of ``plan`` as its own task on this flow's task runner.

    Returns ``{"stats": [per finished shard], "failed": n}``: a failed shard is logged and counted,
    the others still finish (the caller commits them, then fails the run). Called by
    :func:`score_flow` with the runner it chose; it never opens DuckDB.
    """
    progress = create_progress_artifact(progress=0.0, description=f"Scoring {len(plan['inputs'])} shard(s)")
    futures = [score_shard_task.submit(settings, plan, path, batch_size, torch_threads) for path in plan["inputs"]]
    stats, failed = [], 0
    for done, future in enumerate(as_completed(futures), start=1):
        try:
            stats.append(future.result())
        except Exception as exc:  # keep the finished shards: the caller commits them, then fails the run
            failed += 1
            get_run_logger().error("shard failed: %s", exc)
        update_progress_artifact(artifact_id=progress, progress=100.0 * done / len(futures))
    return {"stats": stats, "failed": failed}


@flow(name="score", flow_run_name="score-{model_version}")
def score_flow(model_version: str = "champion", shard_size: int | None = None, limit: int | None = None,
               batch_size: int | None = None, all_unscored: bool = False,
               task_runner: Literal["threads", "dask"] | None = None, workers: int | None = None,
               dask_address: str | None = None) -> dict[str, Any]:
    """Score unscored articles with ``model_version`` (default: the champion) into ``scores``.

    ``model_version`` is a registered version or an alias, resolved when the run plans:
    ``champion`` or ``cpu-champion``. At most ``limit`` (default ``score_max_rows_per_run``)
    articles per run, newest first, so a newly promoted model's backlog reaches fresh articles first;
    ``all_unscored`` lifts the cap (the recommend flow needs every clicked item embedded).
    ``task_runner`` (default ``score_task_runner``: ``threads``) says where the shards run;
    ``dask`` starts a LocalCluster of ``workers`` processes (default ``score_dask_workers``: 2), or
    uses the existing cluster at ``dask_address`` (default ``score_dask_address``; passing one implies
    ``dask``). The summary adds ``task_runner`` and ``shard_processes`` (how many processes scored).
    """
    settings = get_settings()
    address = dask_address or settings.score_dask_address
    kind = task_runner or ("dask" if dask_address else settings.score_task_runner)
    runner, threads, label = shard_runner(kind, workers or settings.score_dask_workers, address)
    migrate_warehouse(settings)
    plan = plan_score_shards(settings, model_version, shard_size or settings.score_shard_size,
                             None if all_unscored else limit or settings.score_max_rows_per_run)
    if not plan["inputs"]:
        return {"score_run_id": plan["score_run_id"], "model_version": plan["model_version"],
                "rows_inserted": 0, "rows_selected": 0, "reason": plan.get("reason") or "nothing new to score"}

    n = len(plan["inputs"])
    try:
        with api_for_workers(kind, address):
            shards = score_shards.with_options(task_runner=runner, flow_run_name=f"score-shards-{label}-{n}-shards")(
                settings, plan, batch_size or settings.score_batch_size, threads)
        error = None
    except Exception as exc:  # the runner itself failed (cluster did not start, scheduler unreachable...)
        get_run_logger().error("scoring shards on %s failed: %s", label, exc)
        shards, error = {"stats": [], "failed": n}, exc

    # Whatever finished is on disk: commit it (here, the single writer) before reporting a failure.
    summary = commit_score_shards(settings, plan, shards["stats"])
    summary["task_runner"] = label
    summary["shard_processes"] = len({(s.get("host"), s.get("pid")) for s in shards["stats"]})
    publish_score_report(summary)
    if error is not None:
        raise RuntimeError(f"scoring shards on {label} failed ({error}); {summary['shards_committed']} of {n} "
                           f"shard(s) were committed") from error
    if shards["failed"]:
        raise RuntimeError(f"{shards['failed']} of {n} shard(s) failed; the others were committed")
    return summary
