"""Watch sentiment: windows per topic, ticker and source, spike alerts, notifications, report.

Every 15 minutes: recompute the windows touched by newly scored articles and scan every window
length ending at each slot (15 min to 1 day) of every key against its own expected share
(``monitor_detector='scan'``; 'windows' is the old per-window test) -> store one alert per episode,
marking broad alerts a narrower one explains -> emit a Prefect event per new alert and deliver
every pending alert through the notification block -> publish the report (picture of expected
share, band, volume and the window that fired + open alerts). The support inbox is watched the same
way: a surge of one intent's share of support messages (an outage: ``card_not_working``) is an
'intent' alert through the same table, events and delivery. Model health (issue 17, inside
detect-spikes, before the spikes): label-free checks per day and source (``model_health``); a
drifting day opens a 'drift' alert (event ``newspulse.model.drift``) delivered the same way. Alerts whose delivery failed stay pending and are retried by
the next run, so a receiver that is down loses nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow

from core.settings import get_settings
from tasks.alerts import notify_alerts
from tasks.label_queue import fill_label_queue
from tasks.monitor import detect_intent_spikes, detect_spikes, publish_monitor_report
from tasks.warehouse import migrate_warehouse


def _run_name() -> str:
    return f"monitor-{datetime.now(UTC):%Y%m%d-%H%M}"


@flow(name="monitor", flow_run_name=_run_name)
def monitor_flow(full_recompute: bool = False, notify_backfill: bool = False) -> dict[str, Any]:
    """Windows, spike detection, alerts and their delivery for the scores of ``cpu-champion``
    (what the hourly scorer serves: the distilled student, else the champion; see v_serving).

    ``notify_backfill`` also sends alerts about windows older than ``alert_max_age_h`` (a replay
    such as the demo); otherwise those are opened without paging anyone.
    """
    settings = get_settings()
    migrate_warehouse(settings)
    summary = detect_spikes(settings, full_recompute)  # model health first, then spikes (summary["health"])
    # Incident spikes on the support inbox: the same alerts, cooldown and delivery (no-op without support scores).
    summary["intent"] = detect_intent_spikes(settings, full_recompute)
    # Delivery runs even when nothing new was scored: it retries alerts still pending.
    summary.update(notify_alerts(settings, notify_backfill))
    summary["report_png"] = publish_monitor_report(settings, summary)
    summary["label_queue"] = fill_label_queue(settings)  # last: what people should label next (issue 17)
    return summary
