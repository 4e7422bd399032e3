"""Alert delivery: a Prefect event per alert, and a message through a notification block.

Events (``newspulse.sentiment.spike``, resource ``newspulse.<dimension>.<key>``) are what Prefect
automations match on. The message goes through the block named by ``Settings.alert_block``
(``<block-type-slug>/<name>``: a custom webhook by default; ``slack-webhook/...`` or an e-mail
block by configuration). Each pending alert is tried ``alert_delivery_attempts`` times with
exponential backoff; one that still fails stays 'pending' and the next monitor run tries again.
A delivered alert is marked 'open' at once, so it is never sent twice.
"""

from __future__ import annotations

import re
import time
import uuid
from contextlib import nullcontext
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from newspulse.settings import Settings
from tasks.warehouse import writer_slot
from warehouse import alerts as db_alerts
from warehouse.connection import connect

EVENT = "newspulse.sentiment.spike"
_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_EVENT_NS = uuid.UUID("6f1c2f0e-3d7a-4c55-9a51-5e2b8c1d0a77")


def ensure_alert_block(settings: Settings):
    """Load the configured notification block; create the webhook block from the URL if set.

    Returns the block, or None when it does not exist (alerts then wait as 'pending').
    """
    from prefect.blocks.core import Block
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    if not settings.alert_block:
        return None
    slug, _, name = settings.alert_block.partition("/")
    if settings.alert_webhook_url is not None and slug == CustomWebhookNotificationBlock.get_block_type_slug():
        # The URL may carry a token: it is stored in the block and never logged.
        CustomWebhookNotificationBlock(
            name="newspulse", url=settings.alert_webhook_url.get_secret_value(), method="POST",
            json_data={"subject": "{{subject}}", "text": "{{body}}", "source": "{{name}}"},
            allow_private_urls=True, timeout=10.0,
        ).save(name, overwrite=True)
    try:
        return Block.load(settings.alert_block)
    except (ValueError, KeyError) as exc:
        get_run_logger().warning("notification block %r not found (%s): alerts stay pending", settings.alert_block,
                                 type(exc).__name__)
        return None


def alert_message(alert: dict[str, Any]) -> tuple[str, str]:
    """Subject and body of the notification (plain text, readable in Slack and e-mail)."""
    subject = (f"[{alert['severity'].upper()}] Negative sentiment spike: {alert['dimension']} {alert['key']}")
    lines = [
        f"{alert['n_negative']} of {alert['n_articles']} articles negative "
        f"({alert['observed']:.0%} vs baseline {alert['baseline']:.0%}, p={alert['p_value']:.1e})",
        f"window {alert['window_start']:%Y-%m-%d %H:%M} to {alert['window_end']:%H:%M} UTC ({alert['granularity']})",
        "most negative headlines:",
        *[f"  - {e.get('title')} ({e.get('source')}, score {e.get('score')})" for e in alert.get("evidence") or []],
        f"alert_id: {alert['alert_id']}",
    ]
    return subject, "\n".join(lines)


def _emit(alert: dict[str, Any]) -> str | None:
    from prefect.events import emit_event

    event = emit_event(
        event=EVENT,
        resource={"prefect.resource.id": f"newspulse.{alert['dimension']}.{alert['key']}",
                  "prefect.resource.name": f"{alert['dimension']} {alert['key']}",
                  "newspulse.dimension": alert["dimension"], "newspulse.key": alert["key"]},
        payload={"alert_id": alert["alert_id"], "severity": alert["severity"], "observed": alert["observed"],
                 "baseline": alert["baseline"], "n_articles": alert["n_articles"], "n_negative": alert["n_negative"],
                 "p_value": alert["p_value"], "granularity": alert["granularity"],
                 "window_start": str(alert["window_start"]), "window_end": str(alert["window_end"])},
        # The same alert always gets the same event id, so a retried run does not double it.
        id=uuid.uuid5(_EVENT_NS, alert["alert_id"]),
    )
    return str(event.id) if event is not None else None


@task(name="notify-alerts", cache_policy=NO_CACHE)
def notify_alerts(settings: Settings) -> dict[str, Any]:
    """Emit events for new alerts and deliver every pending one; returns counts."""
    log = get_run_logger()
    with writer_slot(settings), connect(settings) as con:
        no_event = db_alerts.alerts_without_event(con)
        pending = db_alerts.pending_alerts(con)
    emitted = {}
    for alert in no_event:
        event_id = _emit(alert)
        if event_id:
            emitted[alert["alert_id"]] = event_id
    if emitted:
        with writer_slot(settings), connect(settings) as con:
            for aid, eid in emitted.items():
                db_alerts.mark_event(con, aid, eid)
    delivered, failed = [], []
    if pending and not settings.alert_block:
        # Delivery switched off on purpose (NEWSPULSE_ALERT_BLOCK=""): the alerts are open for
        # people reading the report and `newspulse alerts list`, not waiting for a receiver.
        with writer_slot(settings), connect(settings) as con:
            for alert in pending:
                db_alerts.mark_delivered(con, alert["alert_id"], "none", 0)
        return {"events": len(emitted), "delivered": [], "failed": [], "pending": 0}
    block = ensure_alert_block(settings) if pending else None
    for alert in pending if block is not None else []:
        subject, body = alert_message(alert)
        error, attempt = None, 0
        for attempt in range(1, settings.alert_delivery_attempts + 1):
            try:
                # Apprise-based blocks (Slack, e-mail) only raise inside raise_on_failure().
                with block.raise_on_failure() if hasattr(block, "raise_on_failure") else nullcontext():
                    block.notify(body=body, subject=subject)
                error = None
                break
            except Exception as exc:  # any transport or HTTP error: back off and try again
                # Error texts can quote the URL, which may carry a token: never store or log it.
                error = _URL.sub("<url>", f"{type(exc).__name__}: {exc}")
                if attempt < settings.alert_delivery_attempts:
                    time.sleep(settings.alert_retry_backoff_s * 2 ** (attempt - 1))
        with writer_slot(settings), connect(settings) as con:
            if error is None:
                db_alerts.mark_delivered(con, alert["alert_id"], settings.alert_block, attempt)
                delivered.append(alert["alert_id"])
            else:
                db_alerts.mark_failed(con, alert["alert_id"], attempt, error)
                failed.append(alert["alert_id"])
                log.warning("alert %s not delivered after %d attempt(s): %s", alert["alert_id"], attempt, error)
    if delivered:
        log.info("delivered %d alert(s) through %s", len(delivered), settings.alert_block)
    return {"events": len(emitted), "delivered": delivered, "failed": failed,
            "pending": len(pending) - len(delivered)}
