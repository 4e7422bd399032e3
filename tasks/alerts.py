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
from datetime import UTC, datetime, timedelta
from contextlib import nullcontext
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from core.settings import Settings
from tasks.warehouse import writer_slot
from warehouse import alerts as db_alerts
from warehouse.connection import connect

EVENT = "newspulse.sentiment.spike"
DRIFT_EVENT = "newspulse.model.drift"  # issue 17: alerts with metric 'model_drift' (warehouse/health.py)
EVENTS = (EVENT, DRIFT_EVENT)
_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_EVENT_NS = uuid.UUID("6f1c2f0e-3d7a-4c55-9a51-5e2b8c1d0a77")


AUTOMATION = "newspulse-sentiment-spike"


def save_webhook_block(settings: Settings) -> str | None:
    """Create or update the webhook block named by ``alert_block`` from ``alert_webhook_url``.

    The URL may carry a token, so it goes into the block's ``secrets`` (shown masked in the UI)
    and the block's ``url`` is only the ``{{webhook_url}}`` template. Only a custom-webhook block
    with a URL configured is managed here; it is written only when it differs. Returns
    'created', 'updated', or None when nothing was written.
    """
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    slug, _, name = settings.alert_block.partition("/")
    if settings.alert_webhook_url is None or not name or slug != CustomWebhookNotificationBlock.get_block_type_slug():
        return None
    wanted = CustomWebhookNotificationBlock(
        name="newspulse", url="{{webhook_url}}", method="POST",
        secrets={"webhook_url": settings.alert_webhook_url.get_secret_value()},
        json_data={"subject": "{{subject}}", "text": "{{body}}", "source": "{{name}}"},
        allow_private_urls=settings.alert_allow_private_urls, timeout=10.0,
    )
    try:
        current = CustomWebhookNotificationBlock.load(name)
    except (ValueError, KeyError):
        current = None
    if current is not None and _block_fields(current) == _block_fields(wanted):
        return None
    wanted.save(name, overwrite=True)
    return "created" if current is None else "updated"


def _block_fields(block: Any) -> dict[str, Any]:
    """A webhook block's settings with its secrets revealed, for comparison only (never logged)."""
    data = block.model_dump(include=set(type(block).model_fields) - {"block_type_slug", "secrets"})
    data["secrets"] = block.secrets.get_secret_value() if block.secrets is not None else None
    return data


def load_alert_block(settings: Settings, save: bool = True) -> tuple[Any, str | None]:
    """``(block, None)`` for the configured notification block, or ``(None, why not)``.

    With ``save`` the webhook block is first brought in line with the settings (see
    :func:`save_webhook_block`).
    """
    from prefect.blocks.abstract import NotificationBlock
    from prefect.blocks.core import Block

    slug, _, name = settings.alert_block.partition("/")
    if not slug or not name:
        return None, "NEWSPULSE_ALERT_BLOCK must look like <block-type-slug>/<name>"
    if save:
        save_webhook_block(settings)
    try:
        block = Block.load(settings.alert_block)
    except (ValueError, KeyError) as exc:
        return None, f"notification block {settings.alert_block!r} not found ({type(exc).__name__})"
    if not isinstance(block, NotificationBlock):
        return None, f"block {settings.alert_block!r} is a {type(block).__name__}, not a notification block"
    return block, None


def ensure_alert_block(settings: Settings):
    """The configured notification block (saved from the webhook URL first if one is set), or None.

    When None, the reason is logged and alerts wait as 'pending'.
    """
    block, why = load_alert_block(settings)
    if block is None:
        get_run_logger().warning("%s: alerts stay pending", why)
    return block


def alert_message(alert: dict[str, Any]) -> tuple[str, str]:
    """Subject and body of the notification (plain text, readable in Slack and e-mail)."""
    if alert.get("metric") == "intent_share" or alert.get("dimension") == "intent":
        return _intent_message(alert)
    if alert.get("metric") == "model_drift":
        return _drift_message(alert)
    drift = [e for e in alert.get("evidence") or [] if e.get("kind") == "model_drift"]
    subject = (f"[{alert['severity'].upper()}] Negative sentiment spike: {alert['dimension']} {alert['key']}")
    lines = [
        f"{alert['n_negative']} of {alert['n_articles']} articles negative "
        f"({alert['observed']:.0%} vs baseline {alert['baseline']:.0%}, p={alert['p_value']:.1e})",
        f"window {alert['window_start']:%Y-%m-%d %H:%M} to {alert['window_end']:%H:%M} UTC "
        f"({alert['granularity']} window{', the most significant length ending then' if alert.get('detector') == 'scan' else ''})",
        *([f"explained by the {alert['explained_by']} alert"] if alert.get("explained_by") else []),
        *[f"MODEL DRIFT: {e.get('scope')} was drifting on {e.get('day')} ({', '.join(e.get('checks_fired') or [])}): "
          "the spike may be the model misreading new text" for e in drift],
        "most negative headlines:",
        *[f"  - {e.get('title')} ({e.get('source')}, score {e.get('score')})" for e in alert.get("evidence") or []
          if e.get("kind") != "model_drift"],
        f"alert_id: {alert['alert_id']}",
    ]
    return subject, "\n".join(lines)


_LENGTH_WORDS = {"15m": "15 minutes", "30m": "30 minutes", "1h": "hour", "2h": "2 hours", "4h": "4 hours",
                 "6h": "6 hours", "8h": "8 hours", "12h": "12 hours", "1d": "day"}


def _intent_message(alert: dict[str, Any]) -> tuple[str, str]:
    """An incident spike on the support inbox: one intent's share of all support messages surged
    (``n_negative`` holds the intent's messages, ``n_articles`` every message of the window)."""
    span = _LENGTH_WORDS.get(str(alert["granularity"]), str(alert["granularity"]))
    subject = f"[{alert['severity'].upper()}] Incident spike: support intent {alert['key']}"
    lines = [
        f"{alert['key']}: {alert['observed']:.0%} of support messages in the last {span} vs "
        f"{alert['baseline']:.0%} usual ({alert['n_negative']} of {alert['n_articles']} messages, "
        f"p={alert['p_value']:.1e})",
        f"window {alert['window_start']:%Y-%m-%d %H:%M} to {alert['window_end']:%H:%M} UTC "
        "(intent surge: the most significant window length ending then)",
        "most confident messages:",
        *[f"  - {e.get('text')} ({e.get('channel') or 'inbox'}, confidence {e.get('confidence')})"
          for e in alert.get("evidence") or []],
        f"alert_id: {alert['alert_id']}",
    ]
    return subject, "\n".join(lines)


_CHECK_WORDS = {"label_psi": "prediction mix shifted", "low_conf": "more low-confidence predictions",
                "embedding_auc": "embeddings unlike the reference", "length_psi": "text length shifted",
                "unknown_rate": "more unknown words", "disagreement": "disagrees with the TF-IDF baseline"}


def _drift_message(alert: dict[str, Any]) -> tuple[str, str]:
    """A model drift alert: the served model's inputs or outputs no longer look like its reference."""
    ev = next((e for e in alert.get("evidence") or [] if e.get("kind") == "model_drift"), {})
    scope = "overall" if alert["key"] == "*" else f"source {alert['key']}"
    fired = ev.get("checks_fired") or []
    subject = f"[{alert['severity'].upper()}] Model drift: {scope}"

    def pair(name: str, ref: str, fmt: str = ".2f") -> str | None:
        if ev.get(name) is None:
            return None
        return f"{name} {ev[name]:{fmt}}" + (f" (reference {ev[ref]:{fmt}})" if ev.get(ref) is not None else "")

    measures = [m for m in (pair("embedding_auc", "", ".2f"), pair("label_psi", "", ".2f"),
                            pair("low_conf_share", "ref_low_conf_share"), pair("unknown_rate", "ref_unknown_rate"),
                            pair("disagreement", "ref_disagreement"), pair("length_psi", "", ".2f"),
                            pair("mean_tokens", "ref_mean_tokens", ".1f")) if m]
    lines = [f"{len(fired)} of {len(_CHECK_WORDS)} health checks fired on {ev.get('day', alert['window_start'])} "
             f"({alert['n_articles']} articles): " + "; ".join(_CHECK_WORDS.get(c, c) for c in fired),
             f"window {alert['window_start']:%Y-%m-%d} (UTC day); reference: {ev.get('reference')}",
             "measures: " + ", ".join(measures),
             "sentiment alerts on this scope may be the model misreading new text: check before acting",
             f"alert_id: {alert['alert_id']}"]
    return subject, "\n".join(lines)


def spike_event(alert: dict[str, Any], notify: bool, handoff: bool = False):
    """The alert's event (a ``prefect.events.Event``): ``newspulse.sentiment.spike``, or
    ``newspulse.model.drift`` for a drift alert (metric ``model_drift``).

    ``newspulse.notify`` says whether the alert should page anyone (false for stale backfill); the
    automation matches on it. The payload carries the rendered subject and body, so a notification
    sent by the automation reads exactly like one the flow sends. The same alert always gets the
    same event id, so a retried run does not double it; ``handoff`` is the second event of an
    alert whose first one was not meant for the automation (see ``_handed_to_automation``).
    """
    from prefect.events import Event

    subject, body = alert_message(alert)
    return Event(
        event=DRIFT_EVENT if alert.get("metric") == "model_drift" else EVENT,
        resource={"prefect.resource.id": f"newspulse.{alert['dimension']}.{alert['key']}",
                  "prefect.resource.name": f"{alert['dimension']} {alert['key']}",
                  "newspulse.dimension": alert["dimension"], "newspulse.key": alert["key"],
                  "newspulse.notify": "true" if notify else "false"},
        payload={"alert_id": alert["alert_id"], "severity": alert["severity"], "observed": alert["observed"],
                 "baseline": alert["baseline"], "n_articles": alert["n_articles"], "n_negative": alert["n_negative"],
                 "p_value": alert["p_value"], "granularity": alert["granularity"],
                 "detector": alert.get("detector"), "explained_by": alert.get("explained_by"),
                 "metric": alert.get("metric") or "negative_share",
                 "window_start": str(alert["window_start"]), "window_end": str(alert["window_end"]),
                 "subject": subject, "body": body},
        id=uuid.uuid5(_EVENT_NS, alert["alert_id"] + (":handoff" if handoff else "")),
    )


def _emit(alert: dict[str, Any], notify: bool, handoff: bool = False) -> str | None:
    """Queue :func:`spike_event` for the Prefect API; returns its id (None without an API)."""
    from prefect.events import emit_event

    event = spike_event(alert, notify, handoff)
    sent = emit_event(event=event.event, resource=dict(event.resource), payload=event.payload, id=event.id)
    return str(sent.id) if sent is not None else None


@task(name="notify-alerts", cache_policy=NO_CACHE)
def notify_alerts(settings: Settings, notify_backfill: bool = False) -> dict[str, Any]:
    """Emit events for new alerts, then claim and deliver the pending ones; returns counts.

    Alerts about windows that ended more than ``alert_max_age_h`` ago (a first run over history,
    a new champion re-scoring the past) are opened without paging anyone, unless
    ``notify_backfill`` (a replay, like the demo). After an alert fails every attempt the run stops
    delivering (the receiver is down: the rest wait for the next run instead of each timing out).
    With ``alert_delivery='automation'`` the event is the delivery: the automation sends it.
    """
    log = get_run_logger()
    claimer = str(flow_run.get_id() or uuid.uuid4())
    cutoff = datetime.now(UTC) - timedelta(hours=settings.alert_max_age_h)
    with writer_slot(settings), connect(settings) as con:
        no_event = db_alerts.alerts_without_event(con)
        claimed = db_alerts.claim_pending(con, claimer, settings.alert_claim_timeout_s)
    # Explained alerts (a narrower alert pages for the episode) and old windows do not page.
    notify = {a["alert_id"]: (notify_backfill or a["window_end"] >= cutoff) and not a.get("explained_by")
              for a in no_event}
    emitted = {a["alert_id"]: eid for a in no_event if (eid := _emit(a, notify=notify[a["alert_id"]]))}
    stale = [a for a in claimed if not notify_backfill and a["window_end"] < cutoff]
    fresh = [a for a in claimed if a not in stale]
    if settings.alert_delivery == "automation":
        routed = {aid for aid in emitted if notify[aid]}
        return _handed_to_automation(settings, claimer, emitted, routed, stale, fresh)
    block = ensure_alert_block(settings) if fresh and settings.alert_block else None
    with writer_slot(settings), connect(settings) as con:
        for aid, eid in emitted.items():
            db_alerts.mark_event(con, aid, eid)
        db_alerts.mark_not_sent(con, [a["alert_id"] for a in stale], "not sent (stale)")
        if fresh and not settings.alert_block:
            # Delivery switched off on purpose (NEWSPULSE_ALERT_BLOCK=""): open for people reading
            # the report and `newspulse alerts list`, not waiting for a receiver.
            db_alerts.mark_not_sent(con, [a["alert_id"] for a in fresh], "none")
        elif block is None:
            db_alerts.release_claims(con, claimer)
    if stale:
        log.info("%d alert(s) about windows older than %.0f h opened without notification",
                 len(stale), settings.alert_max_age_h)
    delivered, failed = [], []
    for alert in fresh if block is not None else []:
        error, attempt = _deliver(block, alert, settings)
        with writer_slot(settings), connect(settings) as con:
            if error is None:
                db_alerts.mark_delivered(con, alert["alert_id"], settings.alert_block, attempt)
                delivered.append(alert["alert_id"])
                continue
            db_alerts.mark_failed(con, alert["alert_id"], attempt, error)
            db_alerts.release_claims(con, claimer)  # circuit breaker: the rest wait for the next run
        failed.append(alert["alert_id"])
        log.warning("alert %s not delivered after %d attempt(s): %s; %d more left pending for the next run",
                    alert["alert_id"], attempt, error, len(fresh) - len(delivered) - 1)
        break
    if delivered:
        log.info("delivered %d alert(s) through %s", len(delivered), settings.alert_block)
    return {"events": len(emitted), "delivered": delivered, "failed": failed, "stale": len(stale),
            "pending": len(fresh) - len(delivered) if settings.alert_block else 0}


def _handed_to_automation(settings: Settings, claimer: str, emitted: dict[str, str], routed: set[str],
                          stale: list[dict[str, Any]], fresh: list[dict[str, Any]]) -> dict[str, Any]:
    """Automation mode: a fresh alert whose page-worthy event was queued for Prefect this run is
    handed over ('open', channel ``automation:<name>``). One whose event went out earlier without
    the automation in mind (flow mode then, or marked not to notify) gets a hand-off event first;
    one with no event (no API) stays pending for the next run."""
    handed = [a["alert_id"] for a in fresh
              if a["alert_id"] in routed or _emit(a, notify=True, handoff=True)]
    with writer_slot(settings), connect(settings) as con:
        for aid, eid in emitted.items():
            db_alerts.mark_event(con, aid, eid)
        db_alerts.mark_not_sent(con, [a["alert_id"] for a in stale], "not sent (stale)")
        for aid in handed:
            db_alerts.mark_delivered(con, aid, f"automation:{AUTOMATION}", 1)
        db_alerts.release_claims(con, claimer)
    if len(handed) < len(fresh):
        get_run_logger().warning("%d alert(s) have no event yet (no Prefect API?): left pending",
                                 len(fresh) - len(handed))
    return {"events": len(emitted), "delivered": handed, "failed": [], "stale": len(stale),
            "pending": len(fresh) - len(handed)}


def _deliver(block, alert: dict[str, Any], settings: Settings) -> tuple[str | None, int]:
    """Send one alert with exponential backoff; returns (error or None, attempts made)."""
    subject, body = alert_message(alert)
    error, attempt = None, 0
    for attempt in range(1, settings.alert_delivery_attempts + 1):
        try:
            # Apprise-based blocks (Slack, e-mail) only raise inside raise_on_failure().
            with block.raise_on_failure() if hasattr(block, "raise_on_failure") else nullcontext():
                block.notify(body=body, subject=subject)
            return None, attempt
        except Exception as exc:  # any transport or HTTP error: back off and try again
            # Error texts can quote the URL, which may carry a token: never store or log it.
            error = _URL.sub("<url>", f"{type(exc).__name__}: {exc}")
            if attempt < settings.alert_delivery_attempts:
                time.sleep(settings.alert_retry_backoff_s * 2 ** (attempt - 1))
    return error, attempt
