"""Monitoring tasks: sentiment windows + spike detection -> alerts, and the report artifact.

The windowing runs inside DuckDB (``warehouse.monitor``) under the writer slot: it replaces the
windows touched by newly scored articles and stores new alerts in the same short session.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from core.settings import Settings
from tasks.health import model_health_step
from tasks.warehouse import writer_slot
from warehouse import alerts as db_alerts
from warehouse import health as db_health
from warehouse import health_report, intent_monitor, monitor, reports, scan, scan_alerts, scan_report
from warehouse import registry as db_registry
from warehouse.connection import connect


def _since(con, model_version: str, live_lag_h: float = monitor.LIVE_LAG_H) -> dict[str, Any]:
    """What is new for ``model_version``: ``since`` (earliest article time among scores not yet
    windowed; None: everything), ``until`` (newest committed_at, the next watermark), ``new``
    (anything to do), ``n_scores`` and ``clock_back``.

    The watermark is the commit time, not the scoring time: a shard scored early but committed
    late must still count as new (commits and this read are serialised by the writer slot). If
    the clock went back, rows commit *below* the watermark and would never be seen; the score
    count catches that (more rows than last time, but fewer above the watermark), and the run
    recomputes everything instead (logged; old windows are opened without paging anyone).
    """
    state = con.execute("SELECT committed_until, n_scores FROM monitor_state WHERE model_version = ?",
                        [model_version]).fetchall()
    until, seen = state[0] if state else (None, None)
    ts = monitor.monitor_time_sql(live_lag_h)  # NULL for undated rows of non-live batches (left out)
    row = con.execute(
        f"SELECT min({ts}) FILTER (s.committed_at > ?), max(s.committed_at), "
        "count(*) FILTER (? IS NULL OR s.committed_at > ?), count(*), max(" + ts + ") FROM scores s "
        "JOIN articles a USING (article_id) LEFT JOIN ingest_batches b ON b.batch_id = a.batch_id "
        "WHERE s.model_version = ?", [until, until, until, model_version]).fetchall()[0]
    fresh, total = int(row[2]), int(row[3])
    clock_back = until is not None and seen is not None and total - int(seen) > fresh
    # Fresh rows that are all left out of the windows (undated, not live): re-test the newest day
    # only, never everything (None would mean a full recompute).
    since = None if until is None or clock_back else row[0] if row[0] is not None or not fresh else row[4]
    return {"since": since, "until": max(row[1], until) if row[1] and until else row[1] or until,
            "previous": until, "new": bool(fresh) or clock_back, "n_scores": total, "clock_back": clock_back}


def _touched(con, model_version: str, after: datetime) -> str:
    """TEMP TABLE ``mon_touched``: the keys (dimension, key) of scores committed after ``after``;
    the scan re-tests only these (the overall key is always among them)."""
    con.execute("""
        CREATE OR REPLACE TEMP TABLE mon_touched AS
        WITH n AS (SELECT a.source, s.topic_label AS topic, a.tickers FROM scores s JOIN articles a USING (article_id)
                   WHERE s.model_version = ? AND s.committed_at > ?)
        SELECT 'overall' AS dimension, '*' AS key
        UNION SELECT 'source', source FROM n WHERE source IS NOT NULL
        UNION SELECT 'topic', topic FROM n WHERE topic IS NOT NULL
        UNION SELECT 'ticker', t FROM (SELECT unnest(tickers) AS t FROM n) WHERE t IS NOT NULL
    """, [model_version, after])
    return "mon_touched"


def _detect(con, settings: Settings, model: dict[str, Any], since: datetime | None,
            touched: str | None = None) -> tuple[datetime | None, list, dict]:
    """Windows for the views plus the configured detector's significant windows from the cutoff
    (the scan only for the ``touched`` keys when given)."""
    params = monitor.MonitorParams.from_settings(settings)
    if settings.monitor_detector == "windows":
        cutoff = monitor.compute_windows(con, params, since)
        return cutoff, monitor.spike_windows(con, cutoff) if cutoff else [], {"detector": "windows"}
    sp = scan.ScanParams.from_settings(settings)
    cutoff = monitor.day_cutoff(con, since)
    if cutoff is None:
        return None, [], {"detector": "scan"}
    # One pass over the scores feeds both: the tumbling windows the analyst views show (no test
    # on them) and the scan, which reads a day further back (its longest window + baseline).
    monitor.compute_windows(con, params, cutoff, spike_test=False, keep_slots=True, slots_from=cutoff - sp.lookback)
    conf = scan.confusion_from_model(model)
    spikes = scan_alerts.detect(con, sp, cutoff, conf, slots_ready=True, touched=touched)
    keys = con.execute("SELECT count(*) FROM mon_keys").fetchall()[0][0]
    return cutoff, spikes, {"detector": "scan", "confusion": conf.source, "keys_scanned": keys}


@task(name="detect-spikes", cache_policy=NO_CACHE)
def detect_spikes(settings: Settings, full: bool = False) -> dict[str, Any]:
    """Recompute windows touched by new scores, test them, store new alerts (deduplicated).

    Always the scores of the model the hourly scorer serves, ``cpu-champion`` resolved (the
    distilled student, or the champion while none holds it): it scores every fresh article
    within the hour, and one model's labels keep the baselines consistent. ``sentiment_windows``
    and the alerts are the desk's view, and another model must not overwrite them (a new
    cpu-champion's first run recomputes everything from its own scores).
    ``full`` recomputes every window (after a parameter change, or to replay history). The
    detector is ``monitor_detector``: 'scan' (default) or the old tumbling 'windows'.
    """
    log = get_run_logger()
    run_id = str(flow_run.get_id()) if flow_run.get_id() else None
    empty = {"windows": 0, "spikes": 0, "new_alerts": [], "extended": 0, "detector": settings.monitor_detector}
    with writer_slot(settings), connect(settings) as con:
        t0 = time.perf_counter()  # the detector's own cost, without waiting for the writer slot
        model = db_registry.get_model(con, db_registry.CPU_CHAMPION)  # falls back to the champion
        if model is None:
            log.warning("no champion yet: nothing to monitor")
            return {"model_version": None, **empty}
        version = model["model_version"]
        # Label-free model health first (its own watermark): a spike on a drifting source says so.
        health = model_health_step(con, settings, model, full, run_id)
        empty["health"] = health
        t0 = time.perf_counter()  # detect_s: the spike detector's own cost (health_s is the health step's)
        state = _since(con, version, settings.monitor_live_lag_h)
        if state["clock_back"]:
            log.warning("scores committed below the watermark (the clock went back?): recomputing every window")
        # The windows on display are another model's (cpu-champion moved, or was rolled back to a
        # model whose watermark is current): recompute them all from this one's scores.
        shown = con.execute("SELECT model_version FROM sentiment_windows ORDER BY computed_at DESC LIMIT 1").fetchall()
        if shown and shown[0][0] != version and not full:
            log.info("the windows are %s's: recomputing every window from %s's scores", shown[0][0], version)
            full = True
        if not state["new"] and not full:
            log.info("no new scores since the last run")
            return {"model_version": version, **empty, "clock_back": False}
        monitor.create_monitor_input(con, version, settings.monitor_live_lag_h)
        incremental = not full and state["since"] is not None
        touched = _touched(con, version, state["previous"]) if incremental else None
        cutoff, spikes, info = _detect(con, settings, model, state["since"] if incremental else None, touched)
        if cutoff is None:
            return {"model_version": version, **empty}
        anchors = db_alerts.last_alert_ends(con)  # (dimension, key) -> (alert_id, last_window_end)
        horizon = con.execute("SELECT max(ts) FROM monitor_input").fetchall()[0][0]
        new, extended = monitor.group_episodes(spikes, {k: end for k, (_, end) in anchors.items()},
                                               timedelta(hours=settings.monitor_cooldown_h), horizon)
        alpha = settings.monitor_scan_alpha if info["detector"] == "scan" else settings.monitor_alpha
        for a in new:
            a["severity"] = monitor.severity(a["p_value"], a["observed"], a["baseline"], alpha)
            a["evidence"] = monitor.evidence(con, a)
            a["detector"] = info["detector"]
            # The model was drifting on this source (or overall) then: the reader must know.
            a["evidence"] += db_health.drift_notes(con, version, a)
        explained, later = 0, {}
        if info["detector"] == "scan":
            known = db_alerts.known_alerts(con)
            explained = scan_alerts.explain(con, new, known)
            # A broad alert stored earlier that this run's narrower alert explains: it already
            # paged, but its record (and the report) should say what it was about.
            broad = [k for k in known if k["dimension"] in scan_alerts.NARROWER and not k["explained_by"]]
            scan_alerts.explain(con, broad, [a for a in new if not a.get("explained_by")], known_first=False)
            later = {k["alert_id"]: k["explained_by"] for k in broad if k.get("explained_by")}
        stored = monitor.store_windows(con, cutoff, version)
        if info["detector"] == "scan":
            scan_alerts.store_scan(con, cutoff, version)
        # Alerts and the watermark commit together: a crash before this point leaves the
        # watermark behind, so the next run recomputes the same windows and inserts the alerts.
        con.execute("BEGIN TRANSACTION")
        try:
            db_alerts.extend_alerts(con, {anchors[k][0]: end for k, end in extended.items()})
            db_alerts.set_explained(con, later)
            inserted = db_alerts.insert_alerts(con, new, model_version=version, flow_run_id=run_id)
            con.execute("INSERT OR REPLACE INTO monitor_state (model_version, committed_until, updated_at, n_scores) "
                        "VALUES (?, ?, now(), ?)", [version, state["until"], state["n_scores"]])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        info["detect_s"] = round(time.perf_counter() - t0, 3)
    log.info("%s: %d windows from %s, %d significant -> %d new alert(s) (%d explained by a narrower one), "
             "%d extended", info["detector"], stored, cutoff, len(spikes), len(inserted), explained, len(extended))
    return {"model_version": version, "cutoff": str(cutoff), "windows": stored, "spikes": len(spikes), "health": health,
            "new_alerts": inserted, "extended": len(extended), "explained": explained,
            "clock_back": state["clock_back"], **info}


@task(name="detect-intent-spikes", cache_policy=NO_CACHE)
def detect_intent_spikes(settings: Settings, full: bool = False, model_version: str | None = None) -> dict[str, Any]:
    """Incident spikes on the support inbox: surges of one intent's share of support messages
    (``warehouse.intent_monitor``), stored as ``alerts`` (dimension 'intent') that the same
    delivery step sends. A warehouse without scored support messages makes this a no-op."""
    log = get_run_logger()
    run_id = str(flow_run.get_id()) if flow_run.get_id() else None
    with writer_slot(settings), connect(settings) as con:
        t0 = time.perf_counter()
        out = intent_monitor.run_intent_monitor(
            con, intent_monitor.intent_scan_params(settings), cooldown=timedelta(hours=settings.monitor_cooldown_h),
            model_version=model_version, full=full, flow_run_id=run_id)
    out["detect_s"] = round(time.perf_counter() - t0, 3)
    if out["model_version"] is None:
        log.info("no scored support messages: no intent monitoring")
    else:
        log.info("intents (%s): %d significant -> %d new alert(s), %d extended", out["model_version"],
                 out["spikes"], len(out["new_alerts"]), out["extended"])
    return out


@task(name="publish-monitor-report", cache_policy=NO_CACHE)
def publish_monitor_report(settings: Settings, summary: dict[str, Any]) -> str:
    """Markdown artifact: the timeline PNG of the alerted keys and the open alerts table."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    with writer_slot(settings), connect(settings) as con:
        keys = reports.report_keys(con, summary.get("new_alerts", []))
        out = settings.reports_dir / f"monitor-{stamp}.png"
        if settings.monitor_detector == "scan":  # expected share + band + the window that fired
            png = scan_report.plot_scan_timelines(con, keys, out)
            extra = scan_report.explained_lines(con)
        else:
            png, extra = reports.plot_timelines(con, keys, out), []
        rows = reports.open_alerts_table(con)
        health = db_health.health_timeline(con, (summary.get("health") or {}).get("model_version"))
    reports.prune_reports(settings.reports_dir)
    extra += health_report.health_markdown(health, summary.get("health") or {},
                                           settings.reports_dir / f"health-{stamp}.png")
    reports.prune_reports(settings.reports_dir, keep=50, pattern="health-*.png")
    markdown = reports.markdown_report(summary, rows, png) + "\n".join(extra)
    create_markdown_artifact(key="sentiment-monitor", markdown=markdown,
                             description=f"{len(summary.get('new_alerts', []))} new alert(s), {len(rows)} open")
    return str(png) if png else ""
