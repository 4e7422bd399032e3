"""Triage the support inbox: intent, sentiment, queue, urgency, and a reply draft or a person.

Every 5 minutes (``triage-every-5-min``, cpu pool):

1. migrate the warehouse;
2. plan: check the routing table and approved answers (a broken row fails the run, naming it),
   resolve the intent model (alias ``intent-champion``; none yet: log one line, stop) and the
   sentiment model (``cpu-champion``; none: sentiment stays empty), and stage the messages the
   intent model has not triaged as Parquet batches;
3. triage each batch as one task (never one per message): score, route, decide auto-answer vs a
   person, draft replies for the auto-answered (``models/triage_batch.py``);
4. commit every finished batch in one idempotent transaction (``support_scores``, ``reply_drafts``);
5. publish the run summary as a markdown artifact: counts per queue, urgent, auto-answered,
   coverage, intents the routing table misses.

A crash anywhere is safe: uncommitted messages are selected again by the next run and the commit
skips rows already there. A failed batch is logged, the others are committed, then the run fails.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from core.settings import get_settings
from tasks.triage import commit_triage_task, plan_triage, publish_triage_report, triage_batch_task
from tasks.warehouse import migrate_warehouse


def _run_name() -> str:
    return f"triage-{datetime.now(UTC):%Y%m%d-%H%M}"


@flow(name="triage", flow_run_name=_run_name, task_runner=ThreadPoolTaskRunner(max_workers=1))
def triage_flow(limit: int | None = None, batch_size: int | None = None) -> dict[str, Any]:
    """Triage the messages the intent-champion has not triaged yet (at most ``limit``, newest first;
    default ``triage_max_rows_per_run``), ``batch_size`` (default ``triage_batch_size``) per task."""
    settings = get_settings()
    migrate_warehouse(settings)
    plan = plan_triage(settings, batch_size or settings.triage_batch_size, limit or settings.triage_max_rows_per_run)
    if not plan["inputs"]:
        return {"triage_run_id": plan["triage_run_id"], "model_version": plan["model_version"],
                "rows_inserted": 0, "reason": plan["reason"], "missing_intents": plan["missing_intents"]}

    futures = [triage_batch_task.submit(settings, plan, path) for path in plan["inputs"]]
    stats, failed = [], 0
    for future in futures:
        try:
            stats.append(future.result())
        except Exception as exc:  # keep the finished batches: commit them, then fail the run
            failed += 1
            get_run_logger().error("triage batch failed: %s", exc)

    summary = commit_triage_task(settings, plan, stats)
    publish_triage_report(summary)
    if failed:
        raise RuntimeError(f"{failed} of {len(futures)} triage batch(es) failed; the others were committed "
                           "and the failed batches' messages are picked up by the next run")
    return summary
