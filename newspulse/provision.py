"""Make a Prefect server ready for NewsPulse's deployments: pools, limits, blocks, automation.

Everything here is idempotent: each object is read first and only created when missing, or
updated when it differs from what the settings and this module define (so edits made in the UI
to these objects last until the next provision), and running it twice changes nothing
(``tests/e2e`` checks that). ``newspulse serve`` calls :func:`provision` before ``prefect deploy``;
against a shared server run ``newspulse provision`` with ``PREFECT_API_URL`` pointing at it.

- work pools ``cpu`` and ``gpu`` (process type; the gpu pool runs one flow run at a time and its
  workers live on the GPU hosts; ``deploy/k8s-gpu-job-template.json`` is the Kubernetes variant);
- the global concurrency limit that serialises DuckDB writers (``Settings.writer_limit``, 1 slot);
- the alert notification block when a webhook URL is configured (its URL kept in the block's
  secrets);
- the automation ``newspulse-sentiment-spike``: ``newspulse.sentiment.spike`` events that should
  page someone -> ``SendNotification`` through that block. It is enabled only when
  ``alert_delivery='automation'``; otherwise the monitor flow sends alerts itself and the
  automation stays paused, so nobody is paged twice;
- the automation ``newspulse-reschedule-lost-runs``: a run of a NewsPulse deployment (tag
  ``newspulse``) that stops sending heartbeats without reaching a final state lost its worker or
  machine (``kill -9``, OOM, a reboot); it is put back to Scheduled ("AwaitingRetry") so the next
  worker re-runs it. Every flow is safe to re-run (no duplicates, nothing lost), which is what
  makes this automatic retry sound.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from core.settings import Settings
from tasks.alerts import AUTOMATION, EVENT, EVENTS, load_alert_block, save_webhook_block

LOST_RUNS = "newspulse-reschedule-lost-runs"

POOLS: dict[str, str] = {
    "cpu": "Ingest, validation, monitoring, recommendations and CPU scoring (process workers).",
    "gpu": "Pretraining, fine-tuning and GPU scoring: run its workers on the GPU hosts.",
}


def provision(settings: Settings) -> dict[str, str]:
    """Create or update every server-side object; returns ``{object: 'created'|'updated'|'ok'|why}``."""
    from prefect import get_client

    report: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        for name, description in POOLS.items():
            limit = settings.serve_gpu_pool_limit if name == "gpu" else None
            report[f"work-pool/{name}"] = _ensure_pool(client, name, description, limit)
        report[f"concurrency-limit/{settings.writer_limit}"] = _ensure_limit(client, settings.writer_limit, 1)
    report[f"block/{settings.alert_block}"], block_id = _ensure_block(settings)
    # Without a block the automation is still created, paused, its description saying how to connect
    # one: the product's main alert is where a user looks for it (the UI's Automations page).
    spike = _ensure_automation(automation_spec(settings, block_id))
    report[f"automation/{AUTOMATION}"] = spike if block_id else f"{spike}, paused: no notification block to route to"
    report[f"automation/{LOST_RUNS}"] = _ensure_automation(lost_run_spec(settings))
    return report


def _ensure_pool(client: Any, name: str, description: str, limit: int | None) -> str:
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        pool = client.read_work_pool(name)
    except ObjectNotFound:
        client.create_work_pool(WorkPoolCreate(
            name=name, type="process", description=description, concurrency_limit=limit,
            base_job_template=ProcessWorker.get_default_base_job_template()))
        return "created"
    if pool.type != "process":  # e.g. a Kubernetes gpu pool made from deploy/k8s-gpu-job-template.json
        return f"kept: a {pool.type} pool (its own workers; no process worker started here)"
    if pool.concurrency_limit == limit and pool.description == description:
        return "ok"
    client.update_work_pool(name, WorkPoolUpdate(description=description, concurrency_limit=limit))
    return "updated"


def _ensure_limit(client: Any, name: str, limit: int) -> str:
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    try:
        current = client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
        return "created"
    if current.limit == limit and current.active:
        return "ok"
    client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=limit, active=True))
    return "updated"


def _ensure_block(settings: Settings) -> tuple[str, Any]:
    """The notification block (saved from the webhook URL when one is set); returns (status, id)."""
    if not settings.alert_block:
        return "alert delivery switched off (NEWSPULSE_ALERT_BLOCK is empty)", None
    saved = save_webhook_block(settings)
    block, why = load_alert_block(settings, save=False)
    if block is None:
        return f"missing: {why}; create it in the UI (Blocks) or set NEWSPULSE_ALERT_WEBHOOK_URL", None
    return saved or "ok", block._block_document_id


def automation_spec(settings: Settings, block_id: Any) -> Any:
    """The spike automation: page-worthy spike events -> the notification block, one per event.

    With no block yet (``block_id`` None) it is paused and does nothing; its description says how to
    connect one, and the next provision (``make serve``) fills the action in.
    """
    from prefect.automations import AutomationCore, DoNothing, EventTrigger, Posture, SendNotification

    if block_id is None:
        description = (f"PAUSED: no notification block yet, so {EVENT} events (negative-sentiment spikes) and "
                       f"{EVENTS[1]} events (model drift) go "
                       f"nowhere. To connect one, set NEWSPULSE_ALERT_WEBHOOK_URL and run `make serve` again (or "
                       f"`.venv/bin/newspulse provision`), or create the notification block "
                       f"{settings.alert_block or 'custom-webhook/newspulse-alerts'} (type/name) under Blocks and provision again.")
        actions: list[Any] = [DoNothing()]
    else:
        description = f"Routes {' and '.join(EVENTS)} events that should page someone to {settings.alert_block}."
        actions = [SendNotification(block_document_id=block_id, subject="{{ event.payload.subject }}",
                                    body="{{ event.payload.body }}")]
    return AutomationCore(
        name=AUTOMATION,
        description=description,
        enabled=block_id is not None and settings.alert_delivery == "automation",
        trigger=EventTrigger(
            expect=set(EVENTS),
            match={"prefect.resource.id": "newspulse.*", "newspulse.notify": "true"},
            posture=Posture.Reactive, threshold=1, within=timedelta(0),
        ),
        actions=actions,
    )


def lost_run_spec(settings: Settings) -> Any:
    """Reschedule a NewsPulse run whose heartbeats stopped before it reached a final state."""
    from prefect.automations import AutomationCore, ChangeFlowRunState, EventTrigger, Posture
    from prefect.client.schemas.objects import StateType

    final = [f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Cancelled", "Crashed", "Cancelling")]
    return AutomationCore(
        name=LOST_RUNS,
        description=f"Runs of deployments tagged 'newspulse' silent for {settings.serve_lost_run_after_s:.0f} s "
                    "(worker or machine lost) go back to Scheduled for the next worker.",
        enabled=True,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *final},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.id": "prefect.tag.newspulse"},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive, threshold=1,
            within=timedelta(seconds=settings.serve_lost_run_after_s),
        ),
        actions=[ChangeFlowRunState(state=StateType.SCHEDULED, name="AwaitingRetry", force=True,
                                    message="no heartbeat: its worker was lost; rescheduled by "
                                            f"{LOST_RUNS}")],
    )


def _ensure_automation(spec: Any) -> str:
    """Create the automation named ``spec.name``, or update it when it differs."""
    from prefect import get_client
    from prefect.automations import AutomationCore

    with get_client(sync_client=True) as client:
        found = client.read_automations_by_name(spec.name)
        if not found:
            client.create_automation(spec)
            return "created"
        current = found[0]
        for extra in found[1:]:  # a name should mean one automation
            client.delete_automation(extra.id)
        same = AutomationCore.model_validate(current.model_dump(include=set(AutomationCore.model_fields)))
        if _without_ids(same.model_dump(mode="json")) == _without_ids(spec.model_dump(mode="json")):
            return "ok"
        client.update_automation(current.id, spec)
        return "updated"



def _without_ids(value: Any) -> Any:
    """A model dump without its generated ``id`` fields (each new trigger gets a fresh one)."""
    if isinstance(value, dict):
        return {k: _without_ids(v) for k, v in value.items() if k != "id"}
    if isinstance(value, list):  # sets (expect, after) come back in any order
        items = [_without_ids(v) for v in value]
        return sorted(items) if all(isinstance(v, str) for v in items) else items
    return value
