"""Monitoring tasks: sentiment windows + spike detection -> alerts, and the report artifact.

The windowing runs inside DuckDB (``warehouse.monitor``) under the writer slot: it replaces the
windows touched by newly scored articles and stores new alerts in the same short session.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from newspulse.settings import Settings
from tasks.warehouse import writer_slot
from warehouse import alerts as db_alerts
from warehouse import monitor, reports
from warehouse import registry as db_registry
from warehouse.connection import connect


def _since(con, model_version: str) -> tuple[datetime | None, datetime | None, datetime | None, bool]:
    """(earliest article time among scores not yet windowed, newest committed_at, the stored
    watermark, anything new?).

    The watermark is the commit time, not the scoring time: a shard scored early but committed
    late must still count as new (commits and this read are serialised by the writer slot).
    """
    state = con.execute("SELECT committed_until FROM monitor_state WHERE model_version = ?", [model_version]).fetchall()
    until = state[0][0] if state else None
    row = con.execute(
        "SELECT min(coalesce(a.published_at, a.ingested_at)), max(s.committed_at), count(*) FROM scores s "
        "JOIN articles a USING (article_id) WHERE s.model_version = ? AND (? IS NULL OR s.committed_at > ?)",
        [model_version, until, until]).fetchall()[0]
    return (None if until is None else row[0]), row[1], until, bool(row[2])


@task(name="detect-spikes", cache_policy=NO_CACHE)
def detect_spikes(settings: Settings, full: bool = False) -> dict[str, Any]:
    """Recompute windows touched by new scores, test them, store new alerts (deduplicated).

    Always the champion's scores: ``sentiment_windows`` and the alerts are the desk's view, and a
    candidate must not overwrite them (a new champion's first run recomputes everything).
    ``full`` recomputes every window (after a parameter change, or to replay history).
    """
    log = get_run_logger()
    params = monitor.MonitorParams.from_settings(settings)
    run_id = str(flow_run.get_id()) if flow_run.get_id() else None
    with writer_slot(settings), connect(settings) as con:
        model = db_registry.champion(con)
        if model is None:
            log.warning("no champion yet: nothing to monitor")
            return {"model_version": None, "windows": 0, "spikes": 0, "new_alerts": [], "extended": 0}
        version = model["model_version"]
        since, committed_until, previous, anything = _since(con, version)
        if not anything and not full:
            log.info("no new scores since the last run")
            return {"model_version": version, "windows": 0, "spikes": 0, "new_alerts": [], "extended": 0}
        monitor.create_monitor_input(con, version)
        cutoff = monitor.compute_windows(con, params, None if full else since)
        if cutoff is None:
            return {"model_version": version, "windows": 0, "spikes": 0, "new_alerts": [], "extended": 0}
        spikes = monitor.spike_windows(con, cutoff)
        anchors = db_alerts.last_alert_ends(con)  # (dimension, key) -> (alert_id, last_window_end)
        horizon = con.execute("SELECT max(ts) FROM monitor_input").fetchall()[0][0]
        new, extended = monitor.group_episodes(spikes, {k: end for k, (_, end) in anchors.items()},
                                               timedelta(hours=settings.monitor_cooldown_h), horizon)
        for a in new:
            a["severity"] = monitor.severity(a["p_value"], a["observed"], a["baseline"], params.alpha)
            a["evidence"] = monitor.evidence(con, a)
        stored = monitor.store_windows(con, cutoff, version)
        # Alerts and the watermark commit together: a crash before this point leaves the
        # watermark behind, so the next run recomputes the same windows and inserts the alerts.
        con.execute("BEGIN TRANSACTION")
        try:
            db_alerts.extend_alerts(con, {anchors[k][0]: end for k, end in extended.items()})
            inserted = db_alerts.insert_alerts(con, new, model_version=version, flow_run_id=run_id)
            con.execute("INSERT OR REPLACE INTO monitor_state VALUES (?, ?, now())",
                        [version, committed_until or previous])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    log.info("%d windows from %s, %d significant -> %d new alert(s), %d extended",
             stored, cutoff, len(spikes), len(inserted), len(extended))
    return {"model_version": version, "cutoff": str(cutoff), "windows": stored, "spikes": len(spikes),
            "new_alerts": inserted, "extended": len(extended)}


@task(name="publish-monitor-report", cache_policy=NO_CACHE)
def publish_monitor_report(settings: Settings, summary: dict[str, Any]) -> str:
    """Markdown artifact: the timeline PNG of the alerted keys and the open alerts table."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    with writer_slot(settings), connect(settings) as con:
        keys = reports.report_keys(con, summary.get("new_alerts", []))
        png = reports.plot_timelines(con, keys, settings.reports_dir / f"monitor-{stamp}.png")
        rows = reports.open_alerts_table(con)
    reports.prune_reports(settings.reports_dir)
    markdown = reports.markdown_report(summary, rows, png)
    create_markdown_artifact(key="sentiment-monitor", markdown=markdown,
                             description=f"{len(summary.get('new_alerts', []))} new alert(s), {len(rows)} open")
    return str(png) if png else ""
