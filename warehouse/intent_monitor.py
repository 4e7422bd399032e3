"""Incident spikes on the support inbox (issue 16 item 5): intent as a monitor dimension.

A surge of one intent (``card_not_working``, ``declined_transfer`` ...) is an incident: an outage
shows up in the inbox before anyone files a ticket about it. The count tested is an intent's
**share of all support messages** (k = messages the intent model gave that intent in the window,
n = every scored message in the window), against that intent's own trailing share, with the same
scan (every window length 15 min..1 day ending at each 15-minute slot, beta-binomial tail,
Bonferroni over lengths) and the same episodes, cooldown, ``alerts`` rows, events and delivery as
the news sentiment monitor. Only the count source differs (:func:`intent_slot_counts` in place of
``warehouse.monitor.slot_counts``) and the knobs (:func:`intent_scan_params`):

- no volume test (n is already every message: the share is the volume);
- the prior share of an intent with no history is 1 / (number of intents), not the overall share;
- a larger baseline cap than news (an intent's share of a bank's inbox is steadier than a
  ticker's negative share, and a 2 % intent must be able to page within the hour);
- a smaller minimum lift (2 % -> 10 % is an incident; news needs 15 points).
- alpha: the news scan's (``monitor_intent_alpha`` overrides it; measured in bench/intent_outage.py).

Message time is ``coalesce(created_at, ingested_at)`` (labelled messages without a time are a
training corpus such as BANKING77, not traffic, and are left out); the scores are the intent model's rows of
``support_scores`` (table of the triage flow; the ``intent-champion`` alias, else the newest
version scored). A warehouse without that table or without rows makes everything here a no-op.
No Prefect import (the task in ``tasks/monitor.py`` wraps :func:`run_intent_monitor`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import duckdb

from warehouse import alerts as db_alerts
from warehouse.connection import sql_literal
from warehouse.monitor import SLOT_US, day_cutoff, group_episodes, severity
from warehouse.scan import Confusion, ScanParams
from warehouse.scan_alerts import detect

DIMENSION = "intent"
METRIC = "intent_share"
STATE_PREFIX = "intent:"  # monitor_state row of the intent model (a multi-head model may serve news too)
SOURCE = "support_input"


def intent_scan_params(settings: Any | None = None, n_intents: int | None = None) -> ScanParams:
    """The scan's knobs for intent shares (see the module doc); alpha, baseline hours, history and
    prior strength are the monitor's own settings. The prior share is 1 / ``n_intents`` (None:
    :func:`run_intent_monitor` counts the intents in the data)."""
    base = ScanParams.from_settings(settings) if settings is not None else ScanParams()
    return replace(base, volume=False, prior_share=1.0 / max(n_intents, 2) if n_intents else None,
                   alpha=getattr(settings, "monitor_intent_alpha", None) or base.alpha,
                   min_lift=getattr(settings, "monitor_intent_min_lift", 0.05),
                   baseline_cap=getattr(settings, "monitor_intent_baseline_cap", 1000.0),
                   min_articles=8, min_negative=5)


def has_support_scores(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the warehouse has a ``support_scores`` table with rows (else: nothing to watch)."""
    exists = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'support_scores' "
                         "AND NOT temporary").fetchall()[0][0]
    return bool(exists) and bool(con.execute("SELECT count(*) FROM (SELECT 1 FROM support_scores LIMIT 1)").fetchall()[0][0])


def intent_model_version(con: duckdb.DuckDBPyConnection, version: str | None = None) -> str | None:
    """The intent model whose labels are counted: ``version`` when given (an alias resolves), else
    the ``intent-champion`` alias when the registry knows it, else the newest version in
    ``support_scores`` (by commit time). None: no support scores."""
    if not has_support_scores(con):
        return None
    from warehouse import registry as db_registry

    wanted = version or "intent-champion"
    try:
        row = db_registry.get_model(con, wanted) if wanted in getattr(db_registry, "ALIASES", ()) else None
    except (ValueError, KeyError, duckdb.Error):
        row = None
    if row is not None:
        return str(row["model_version"])
    if version and version != "intent-champion":
        return version
    got = con.execute("SELECT arg_max(model_version, committed_at) FROM support_scores").fetchall()[0][0]
    return str(got) if got is not None else None


def create_support_input(con: duckdb.DuckDBPyConnection, model_version: str) -> None:
    """TEMP VIEW ``support_input``: one row per message scored by ``model_version`` (message_id,
    ts, intent, confidence, text, channel), leaving out labelled messages without a time (training
    corpora, not traffic)."""
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {SOURCE} AS "
        "SELECT s.message_id, coalesce(m.created_at, m.ingested_at) AS ts, s.intent_label AS intent, "
        "s.intent_confidence AS confidence, m.text, m.channel "
        "FROM support_scores s JOIN support_messages m USING (message_id) "
        f"WHERE s.model_version = {sql_literal(model_version)} AND s.intent_label IS NOT NULL "
        # A labelled corpus without message times (BANKING77, the demo's training templates) is
        # training data, not inbox traffic: thousands of rows at one ingest instant would read as
        # a surge of every intent. Inbox exports with agent tags have times and are kept.
        "AND NOT (m.created_at IS NULL AND EXISTS (SELECT 1 FROM labels l WHERE l.task = 'intent' "
        "AND l.item = m.message_id))"
    )


def intent_slot_counts(con: duckdb.DuckDBPyConnection, lo: datetime, source: str = SOURCE,
                       measures: bool = False) -> None:
    """TEMP TABLE ``mon_g1`` (s, dimension, key, n, n_neg) for the scan, from ``source`` rows at or
    after ``lo``: per 15-minute slot with messages, the 'overall' key (n = messages, n_neg = 0:
    it only carries the history the warm-up rule reads) and one 'intent' row per intent seen in
    the period (n = *all* messages of the slot, n_neg = messages of that intent; 0 where it had
    none, since the share's denominator must count every message). ``measures`` is accepted for
    the count-source signature and ignored (shares have no sentiment score)."""
    del measures
    slot = f"epoch_us(ts) // {SLOT_US}"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE mon_st AS
        SELECT {slot} AS s, intent, count(*) AS n FROM {source} WHERE ts >= $lo GROUP BY ALL
    """, {"lo": lo})
    con.execute("""
        CREATE OR REPLACE TEMP TABLE mon_g1 AS
        WITH slots AS (SELECT s, sum(n) AS n FROM mon_st GROUP BY s),
             intents AS (SELECT DISTINCT intent FROM mon_st)
        SELECT s, 'overall' AS dimension, '*' AS key, n, 0::BIGINT AS n_neg FROM slots
        UNION ALL
        SELECT sl.s, 'intent', i.intent, sl.n, coalesce(st.n, 0)::BIGINT
        FROM slots sl CROSS JOIN intents i LEFT JOIN mon_st st ON st.s = sl.s AND st.intent = i.intent
    """)
    con.execute("DROP TABLE IF EXISTS mon_st")


def intent_evidence(con: duckdb.DuckDBPyConnection, spike: dict[str, Any], limit: int = 5,
                    source: str = SOURCE) -> list[dict[str, Any]]:
    """The window's messages of the intent, most confident first (what the on-call reads)."""
    cur = con.execute(
        f"SELECT message_id, text, channel, ts, round(confidence::DOUBLE, 3) AS confidence FROM {source} "
        f"WHERE ts >= $start AND ts < $end AND intent = $key "
        f"ORDER BY confidence DESC NULLS LAST, ts, message_id LIMIT {int(limit)}",
        {"key": spike["key"], "start": spike["window_start"], "end": spike["window_end"]})
    cols = [d[0] for d in cur.description]
    return [{**dict(zip(cols, row, strict=True)), "ts": str(row[3])} for row in cur.fetchall()]


def _state(con: duckdb.DuckDBPyConnection, version: str) -> dict[str, Any]:
    """What is new for the intent model: ``since`` (earliest message time among rows committed
    after the watermark; None = everything), ``until`` (next watermark), ``new``, ``n_scores``.
    A score count that grew by more than the rows above the watermark (a clock that went back)
    recomputes everything, like the news monitor."""
    state = con.execute("SELECT committed_until, n_scores FROM monitor_state WHERE model_version = ?",
                        [STATE_PREFIX + version]).fetchall()
    until, seen = state[0] if state else (None, None)
    row = con.execute(
        f"SELECT min(ts) FILTER (s.committed_at > $u), max(s.committed_at), "
        f"count(*) FILTER ($u IS NULL OR s.committed_at > $u), count(*) FROM support_scores s "
        f"JOIN {SOURCE} i USING (message_id) WHERE s.model_version = $v", {"u": until, "v": version}).fetchall()[0]
    fresh, total = int(row[2]), int(row[3])
    clock_back = until is not None and seen is not None and total - int(seen) > fresh
    return {"since": None if until is None or clock_back else row[0],
            "until": max(row[1], until) if row[1] and until else row[1] or until,
            "new": bool(fresh) or clock_back, "n_scores": total}


def run_intent_monitor(con: duckdb.DuckDBPyConnection, params: ScanParams | None = None, *,
                       cooldown: timedelta = timedelta(hours=12), model_version: str | None = None,
                       full: bool = False, flow_run_id: str | None = None) -> dict[str, Any]:
    """Scan intent shares of newly scored support messages and store new intent alerts.

    Returns a summary: ``model_version`` (None: no support scores, nothing done), ``spikes``,
    ``new_alerts`` (ids inserted), ``extended`` and ``cutoff``. Re-running over the same scores
    adds nothing (watermark + dedup key); a spike within ``cooldown`` of the intent's last
    unresolved alert extends that alert instead of opening another. The caller holds the writer slot.
    """
    version = intent_model_version(con, model_version)
    empty = {"model_version": version, "spikes": 0, "new_alerts": [], "extended": 0, "cutoff": None}
    if version is None:
        return empty
    create_support_input(con, version)
    state = _state(con, version)
    if not state["new"] and not full:
        return empty
    n_intents = con.execute(f"SELECT count(DISTINCT intent) FROM {SOURCE}").fetchall()[0][0]
    params = params or intent_scan_params(n_intents=n_intents)
    params = replace(params, prior_share=1.0 / max(int(n_intents), 2)) if params.prior_share is None else params
    cutoff = day_cutoff(con, None if full else state["since"], SOURCE)
    spikes = [] if cutoff is None else detect(con, params, cutoff, Confusion(source="identity (intent shares)"),
                                              source=SOURCE, counts=intent_slot_counts)
    anchors = {k: v for k, v in db_alerts.last_alert_ends(con).items() if k[0] == DIMENSION}
    horizon = con.execute(f"SELECT max(ts) FROM {SOURCE}").fetchall()[0][0]
    new, extended = group_episodes(spikes, {k: end for k, (_, end) in anchors.items()}, cooldown, horizon)
    for a in new:
        a["severity"] = severity(a["p_value"], a["observed"], a["baseline"], params.alpha)
        a["evidence"] = intent_evidence(con, a)
        a["detector"] = "scan"
        a["metric"] = METRIC
    con.execute("BEGIN TRANSACTION")
    try:
        db_alerts.extend_alerts(con, {anchors[k][0]: end for k, end in extended.items()})
        inserted = db_alerts.insert_alerts(con, new, model_version=version, flow_run_id=flow_run_id)
        con.execute("INSERT OR REPLACE INTO monitor_state (model_version, committed_until, updated_at, n_scores) "
                    "VALUES (?, ?, now(), ?)", [STATE_PREFIX + version, state["until"], state["n_scores"]])
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return {"model_version": version, "spikes": len(spikes), "new_alerts": inserted, "extended": len(extended),
            "cutoff": str(cutoff) if cutoff else None}


def first_intent_alert(con: duckdb.DuckDBPyConnection, intents: list[str], after: datetime) -> dict[str, Any] | None:
    """The earliest intent alert on one of ``intents`` whose window ends after ``after`` (the
    ground-truth onset of an outage), or None: what the demo's detection delay is measured on."""
    cur = con.execute(
        "SELECT alert_id, key, window_start, window_end, granularity, observed, baseline FROM alerts "
        "WHERE dimension = ? AND list_contains(?, key) AND window_end > ? ORDER BY window_end, window_start LIMIT 1",
        [DIMENSION, intents, after])
    cols = [d[0] for d in cur.description]
    row = cur.fetchone()
    return dict(zip(cols, row, strict=True)) if row else None
