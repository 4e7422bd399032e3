"""Watch sentiment: windows per topic, ticker and source, spike alerts, notifications, report.

Every 15 minutes: recompute the windows touched by newly scored articles and test them against
each key's own trailing baseline -> store one alert per episode -> emit a Prefect event per new
alert and deliver every pending alert through the notification block -> publish the report
(timeline picture + open alerts). Alerts whose delivery failed stay pending and are retried by
the next run, so a receiver that is down loses nothing.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from newspulse.settings import get_settings
from tasks.alerts import notify_alerts
from tasks.monitor import detect_spikes, publish_monitor_report
from tasks.warehouse import migrate_warehouse


@flow(name="monitor", flow_run_name="monitor-{model_version}")
def monitor_flow(model_version: str = "champion", full_recompute: bool = False) -> dict[str, Any]:
    """Windows, spike detection, alerts and their delivery for ``model_version``'s scores."""
    settings = get_settings()
    migrate_warehouse(settings)
    summary = detect_spikes(settings, model_version, full_recompute)
    # Delivery runs even when nothing new was scored: it retries alerts still pending.
    summary.update(notify_alerts(settings))
    summary["report_png"] = publish_monitor_report(settings, summary)
    return summary
