"""The ``alerts`` table: one row per episode, and its life from 'pending' to 'resolved'.

- **pending**: detected, not yet delivered (delivery failed or not tried yet; retried next run);
- **delivering**: claimed by one monitor run that is sending it (a claim older than
  ``stale_after_s`` is taken over, so a crashed run cannot strand an alert);
- **open**: delivered through the notification block (``notified_at`` set), waiting for a person;
- **acked** / **resolved**: set by ``newspulse alerts ack|resolve``.

An alert is keyed by ``alert_id`` and deduplicated by ``dedup_key`` (dimension, key and the
first significant window), so re-running the monitor over the same scores never adds a row.
Runs claim pending alerts under the writer slot before sending, so two concurrent monitor runs
never send the same alert, and delivery is recorded right after the notification call returns.
The only remaining duplicate is a crash between a receiver's 200 and that update: the
``alert_id`` travels in the message as an idempotency key for receivers that care.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

import duckdb

from warehouse.connection import fetch_dicts

OPEN_STATUSES = "('pending', 'delivering', 'open', 'acked')"  # SQL list: not resolved


def dedup_key(alert: dict[str, Any]) -> str:
    """``dimension:key:first window start`` (ISO, UTC)."""
    start = alert["window_start"]
    return f"{alert['dimension']}:{alert['key']}:{start.isoformat() if isinstance(start, datetime) else start}"


def alert_id(dedup: str) -> str:
    """A short stable id from the dedup key (the same episode always gets the same id)."""
    return "a" + hashlib.sha256(dedup.encode("utf-8")).hexdigest()[:15]


def last_alert_ends(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], tuple[str, datetime]]:
    """(dimension, key) -> (alert_id, last_window_end) of the key's newest unresolved alert.

    These anchor the cooldown. A resolved alert anchors nothing: once a person closed an episode,
    a new spike on the key is news again.
    """
    rows = con.execute(
        "SELECT dimension, key, arg_max(alert_id, last_window_end), max(last_window_end) FROM alerts "
        "WHERE status <> 'resolved' GROUP BY ALL").fetchall()
    return {(d, k): (aid, end) for d, k, aid, end in rows}


def known_alerts(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Unresolved alerts as ``warehouse.scan_alerts.explain`` reads them (window, span, counts)."""
    return fetch_dicts(con, "SELECT alert_id, dimension, key, window_start, window_end, last_window_end, "
                            "n_articles AS n, n_negative AS n_neg, baseline, explained_by "
                            f"FROM alerts WHERE status IN {OPEN_STATUSES}")


def set_explained(con: duckdb.DuckDBPyConnection, explained: dict[str, str]) -> int:
    """Record ``alert_id -> 'dimension:key'`` of the narrower alert that explains a stored one."""
    for aid, by in explained.items():
        con.execute("UPDATE alerts SET explained_by = ? WHERE alert_id = ? AND explained_by IS NULL", [by, aid])
    return len(explained)


def insert_alerts(con: duckdb.DuckDBPyConnection, alerts: list[dict[str, Any]], *, model_version: str | None,
                  flow_run_id: str | None) -> list[str]:
    """Insert new alerts as 'pending' in one statement; existing dedup keys are skipped.

    Each alert dict carries the spike fields (see ``warehouse.monitor.spike_windows``) plus
    ``last_window_end``, ``severity`` and ``evidence``, and optionally ``detector`` and
    ``explained_by``: an explained alert is stored 'open' without being sent (the narrower alert
    that explains it pages instead). Returns the ids actually inserted.
    """
    if not alerts:
        return []
    rows = []
    for a in alerts:
        dk = dedup_key(a)
        rows.append({"alert_id": alert_id(dk), "dedup_key": dk, "dimension": a["dimension"], "key": a["key"],
                     "granularity": a["granularity"], "window_start": a["window_start"],
                     "window_end": a["window_end"], "last_window_end": a["last_window_end"],
                     "metric": a.get("metric", "negative_share"), "observed": float(a["observed"]), "baseline": float(a["baseline"]),
                     "n_articles": int(a["n"]), "n_negative": int(a["n_neg"]), "p_value": float(a["p_value"]),
                     "severity": a["severity"], "evidence": json.dumps(a.get("evidence", []), default=str),
                     "model_version": model_version, "flow_run_id": flow_run_id,
                     "explained_by": a.get("explained_by"), "detector": a.get("detector", "windows")})
    import pandas as pd

    frame = pd.DataFrame(rows)
    con.register("new_alerts", frame)
    try:
        inserted = con.execute("""
            INSERT INTO alerts BY NAME
            SELECT n.* EXCLUDE (evidence), n.evidence::JSON AS evidence,
                   -- an explained alert is for the record and the report: the narrower one pages
                   CASE WHEN n.explained_by IS NULL THEN 'pending' ELSE 'open' END AS status,
                   CASE WHEN n.explained_by IS NULL THEN NULL ELSE 'not sent (explained by ' || n.explained_by || ')'
                   END AS delivery_channel, now() AS created_at, 0 AS delivery_attempts
            FROM new_alerts n WHERE NOT EXISTS (SELECT 1 FROM alerts a WHERE a.dedup_key = n.dedup_key)
            RETURNING alert_id
        """).fetchall()
    finally:
        con.unregister("new_alerts")
    return [r[0] for r in inserted]


def extend_alerts(con: duckdb.DuckDBPyConnection, extended: dict[str, datetime]) -> int:
    """Move ``last_window_end`` of the given alerts (``alert_id -> end``) forward: the episode goes on."""
    for aid, end in extended.items():
        con.execute("UPDATE alerts SET last_window_end = greatest(last_window_end, ?) WHERE alert_id = ?", [end, aid])
    return len(extended)


def _alerts(con: duckdb.DuckDBPyConnection, where: str, params: list[Any], order: str = "window_end DESC, alert_id",
            limit: int | None = None) -> list[dict[str, Any]]:
    """Alert rows matching ``where``, with the ``evidence`` JSON decoded."""
    limit_sql = f" LIMIT {int(limit)}" if limit else ""
    rows = fetch_dicts(con, f"SELECT * FROM alerts WHERE {where} ORDER BY {order}{limit_sql}", params)
    for r in rows:
        if isinstance(r.get("evidence"), str):
            r["evidence"] = json.loads(r["evidence"])
    return rows


def list_alerts(con: duckdb.DuckDBPyConnection, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Alerts, newest first; ``status`` filters ('open' means pending, delivering, open or acked)."""
    if status == "open":
        return _alerts(con, f"status IN {OPEN_STATUSES}", [], limit=limit)
    return _alerts(con, "status = ?" if status else "true", [status] if status else [], limit=limit)


def get_alert(con: duckdb.DuckDBPyConnection, alert: str) -> dict[str, Any] | None:
    """One alert by id (or a unique id prefix)."""
    rows = _alerts(con, "starts_with(alert_id, ?)", [alert]) if alert else []
    if len(rows) > 1:
        raise ValueError(f"alert id prefix {alert!r} is ambiguous ({len(rows)} alerts)")
    return rows[0] if rows else None


def set_status(con: duckdb.DuckDBPyConnection, alert: str, status: str, note: str | None = None) -> dict[str, Any]:
    """Ack or resolve an alert (by id or unique prefix); returns the updated row."""
    if status not in ("acked", "resolved"):
        raise ValueError("status must be 'acked' or 'resolved'")
    row = get_alert(con, alert)
    if row is None:
        raise KeyError(f"no alert {alert!r}")
    if row["status"] == "resolved":
        raise ValueError(f"alert {row['alert_id']} is already resolved")
    stamp = "acked_at" if status == "acked" else "resolved_at"
    con.execute(f"UPDATE alerts SET status = ?, {stamp} = now(), note = coalesce(?, note) WHERE alert_id = ?",
                [status, note, row["alert_id"]])
    return get_alert(con, row["alert_id"])  # type: ignore[return-value]


def claim_pending(con: duckdb.DuckDBPyConnection, claimer: str, stale_after_s: float = 600.0) -> list[dict[str, Any]]:
    """Mark pending alerts (and claims older than ``stale_after_s``) as 'delivering' for ``claimer``.

    Call under the writer slot: one statement, so two runs never claim the same alert. Returns the
    claimed alerts, oldest first.
    """
    con.execute(
        "UPDATE alerts SET status = 'delivering', claimed_by = ?, claimed_at = now() WHERE status = 'pending' "
        "OR (status = 'delivering' AND claimed_at < now() - to_seconds(?))", [claimer, float(stale_after_s)])
    return _alerts(con, "status = 'delivering' AND claimed_by = ?", [claimer], order="window_end, alert_id")


def pending_alerts(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Alerts waiting for delivery, oldest first."""
    return _alerts(con, "status = 'pending'", [], order="window_end, alert_id")


def alerts_without_event(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Alerts whose Prefect event has not been emitted yet (read every 15 minutes: filtered in SQL)."""
    return _alerts(con, "event_id IS NULL", [], order="window_end, alert_id")


def mark_event(con: duckdb.DuckDBPyConnection, alert: str, event_id: str) -> None:
    """Record the id of the Prefect event emitted for ``alert``."""
    con.execute("UPDATE alerts SET event_id = ? WHERE alert_id = ?", [event_id, alert])


def mark_delivered(con: duckdb.DuckDBPyConnection, alert: str, channel: str, attempts: int) -> None:
    """Record a delivery: 'pending'/'delivering' -> 'open'; an alert acked meanwhile keeps its status.

    A second call changes nothing (``notified_at`` is only set once).
    """
    con.execute(
        "UPDATE alerts SET status = CASE WHEN status IN ('pending', 'delivering') THEN 'open' ELSE status END, "
        "notified_at = now(), delivery_channel = ?, delivery_attempts = delivery_attempts + ?, last_error = NULL, "
        "claimed_by = NULL WHERE alert_id = ? AND notified_at IS NULL",
        [channel, attempts, alert],
    )


def mark_failed(con: duckdb.DuckDBPyConnection, alert: str, attempts: int, error: str) -> None:
    """Count failed tries and release the claim: the alert is 'pending' again for the next run."""
    con.execute(
        "UPDATE alerts SET delivery_attempts = delivery_attempts + ?, last_error = ?, claimed_by = NULL, "
        "status = CASE WHEN status = 'delivering' THEN 'pending' ELSE status END WHERE alert_id = ?",
        [attempts, error[:500], alert])


def release_claims(con: duckdb.DuckDBPyConnection, claimer: str) -> None:
    """Give back alerts a run claimed but did not try (it stopped early): 'pending' again."""
    con.execute("UPDATE alerts SET status = 'pending', claimed_by = NULL WHERE status = 'delivering' "
                "AND claimed_by = ?", [claimer])


def mark_not_sent(con: duckdb.DuckDBPyConnection, alert_ids: list[str], channel: str) -> None:
    """Open alerts without sending them (delivery switched off, or too old to page anyone about)."""
    for aid in alert_ids:
        con.execute("UPDATE alerts SET status = 'open', delivery_channel = ?, claimed_by = NULL "
                    "WHERE alert_id = ? AND status IN ('pending', 'delivering')", [channel, aid])
