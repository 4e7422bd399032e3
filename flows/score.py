"""Score every article the champion has not scored yet: all heads and the embedding in one pass.

Plan (one short write-locked export of unscored article ids into Parquet shards) -> score each
shard as its own task (anywhere: the scorer never opens DuckDB) -> commit all shards in one
idempotent transaction -> publish throughput. A run with nothing new stops after the plan.
A crash at any point is safe: uncommitted articles are simply selected again by the next run,
and the commit skips rows already present, so there are no duplicates and no gaps.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from newspulse.settings import get_settings
from tasks.score import commit_score_shards, plan_score_shards, publish_score_report, score_shard_task
from tasks.warehouse import migrate_warehouse


@flow(name="score", flow_run_name="score-{model_version}",
      # One shard at a time by default: each shard already uses every core through torch.
      # Swap in a distributed runner (issue 6) to spread shards over workers.
      task_runner=ThreadPoolTaskRunner(max_workers=1))
def score_flow(model_version: str = "champion", shard_size: int | None = None, limit: int | None = None,
               batch_size: int | None = None, all_unscored: bool = False) -> dict[str, Any]:
    """Score unscored articles with ``model_version`` (default: the champion) into ``scores``.

    At most ``limit`` (default ``score_max_rows_per_run``) articles per run, newest first;
    ``all_unscored`` lifts the cap (the recommend flow needs every clicked item embedded).
    """
    settings = get_settings()
    migrate_warehouse(settings)
    plan = plan_score_shards(settings, model_version, shard_size or settings.score_shard_size,
                             None if all_unscored else limit or settings.score_max_rows_per_run)
    if not plan["inputs"]:
        return {"score_run_id": plan["score_run_id"], "model_version": plan["model_version"],
                "rows_inserted": 0, "rows_selected": 0, "reason": plan.get("reason") or "nothing new to score"}

    # Shards run as separate tasks; the progress artifact moves as each one finishes.
    progress = create_progress_artifact(progress=0.0, description=f"Scoring {len(plan['inputs'])} shard(s)")
    futures = [score_shard_task.submit(settings, plan, path, batch_size or settings.score_batch_size)
               for path in plan["inputs"]]
    stats, failed = [], 0
    for done, future in enumerate(as_completed(futures), start=1):
        try:
            stats.append(future.result())
        except Exception as exc:  # keep the finished shards: commit them, then fail the run
            failed += 1
            get_run_logger().error("shard failed: %s", exc)
        update_progress_artifact(artifact_id=progress, progress=100.0 * done / len(futures))

    summary = commit_score_shards(settings, plan, stats)
    publish_score_report(summary)
    if failed:
        raise RuntimeError(f"{failed} of {len(futures)} shard(s) failed; the others were committed")
    return summary
