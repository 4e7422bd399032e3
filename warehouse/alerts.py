"""The ``alerts`` table: one row per episode, and its life from 'pending' to 'resolved'.

- **pending**: detected, not yet delivered (delivery failed or not tried yet; retried next run);
- **open**: delivered through the notification block (``notified_at`` set), waiting for a person;
- **acked** / **resolved**: set by ``newspulse alerts ack|resolve``.

An alert is keyed by ``alert_id`` and deduplicated by ``dedup_key`` (dimension, key and the
first significant window), so re-running the monitor over the same scores never adds a row.
Delivery is recorded per alert right after the notification call returns, so an alert that was
delivered is never sent again; the ``alert_id`` travels in the message as an idempotency key for
the rare crash between a receiver's 200 and that update.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

import duckdb

from warehouse.connection import fetch_dicts

STATUSES = ("pending", "open", "acked", "resolved")


def dedup_key(alert: dict[str, Any]) -> str:
    """``dimension:key:first window start`` (ISO, UTC)."""
    start = alert["window_start"]
    return f"{alert['dimension']}:{alert['key']}:{start.isoformat() if isinstance(start, datetime) else start}"


def alert_id(dedup: str) -> str:
    """A short stable id from the dedup key (the same episode always gets the same id)."""
    return "a" + hashlib.sha256(dedup.encode("utf-8")).hexdigest()[:15]


def last_alert_ends(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], datetime]:
    """(dimension, key) -> ``last_window_end`` of that key's newest alert (cooldown anchors)."""
    rows = con.execute("SELECT dimension, key, max(last_window_end) FROM alerts GROUP BY ALL").fetchall()
    return {(d, k): end for d, k, end in rows}


def insert_alerts(con: duckdb.DuckDBPyConnection, alerts: list[dict[str, Any]], *, model_version: str | None,
                  flow_run_id: str | None) -> list[str]:
    """Insert new alerts as 'pending' in one statement; existing dedup keys are skipped.

    Each alert dict carries the spike fields (see ``warehouse.monitor.spike_windows``) plus
    ``last_window_end``, ``severity`` and ``evidence``. Returns the ids actually inserted.
    """
    if not alerts:
        return []
    rows = []
    for a in alerts:
        dk = dedup_key(a)
        rows.append({"alert_id": alert_id(dk), "dedup_key": dk, "dimension": a["dimension"], "key": a["key"],
                     "granularity": a["granularity"], "window_start": a["window_start"],
                     "window_end": a["window_end"], "last_window_end": a["last_window_end"],
                     "metric": "negative_share", "observed": float(a["observed"]), "baseline": float(a["baseline"]),
                     "n_articles": int(a["n"]), "n_negative": int(a["n_neg"]), "p_value": float(a["p_value"]),
                     "severity": a["severity"], "evidence": json.dumps(a.get("evidence", []), default=str),
                     "model_version": model_version, "flow_run_id": flow_run_id})
    import pandas as pd

    frame = pd.DataFrame(rows)
    con.register("new_alerts", frame)
    try:
        inserted = con.execute("""
            INSERT INTO alerts BY NAME
            SELECT n.* EXCLUDE (evidence), n.evidence::JSON AS evidence, 'pending' AS status, now() AS created_at,
                   0 AS delivery_attempts
            FROM new_alerts n WHERE NOT EXISTS (SELECT 1 FROM alerts a WHERE a.dedup_key = n.dedup_key)
            RETURNING alert_id
        """).fetchall()
    finally:
        con.unregister("new_alerts")
    return [r[0] for r in inserted]


def extend_alerts(con: duckdb.DuckDBPyConnection, extended: dict[tuple[str, str], datetime]) -> int:
    """Move ``last_window_end`` of each key's newest alert forward (the episode goes on)."""
    for (dim, key), end in extended.items():
        con.execute(
            "UPDATE alerts SET last_window_end = greatest(last_window_end, ?) WHERE alert_id = "
            "(SELECT alert_id FROM alerts WHERE dimension = ? AND key = ? ORDER BY last_window_end DESC LIMIT 1)",
            [end, dim, key],
        )
    return len(extended)


def list_alerts(con: duckdb.DuckDBPyConnection, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Alerts, newest first; ``status`` filters ('open' means pending, open or acked)."""
    if status == "open":
        where, params = "WHERE status IN ('pending', 'open', 'acked')", []
    elif status:
        where, params = "WHERE status = ?", [status]
    else:
        where, params = "", []
    rows = fetch_dicts(con, f"SELECT * FROM alerts {where} ORDER BY window_end DESC, alert_id LIMIT {int(limit)}", params)
    for r in rows:
        if isinstance(r.get("evidence"), str):
            r["evidence"] = json.loads(r["evidence"])
    return rows


def get_alert(con: duckdb.DuckDBPyConnection, alert: str) -> dict[str, Any] | None:
    """One alert by id (or a unique id prefix)."""
    rows = fetch_dicts(con, "SELECT * FROM alerts WHERE alert_id LIKE ? || '%'", [alert])
    if len(rows) > 1:
        raise ValueError(f"alert id prefix {alert!r} is ambiguous ({len(rows)} alerts)")
    if rows and isinstance(rows[0].get("evidence"), str):
        rows[0]["evidence"] = json.loads(rows[0]["evidence"])
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


def pending_alerts(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Alerts waiting for delivery, oldest first."""
    return list(reversed(list_alerts(con, "pending", limit=10_000)))


def alerts_without_event(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Alerts whose Prefect event has not been emitted yet."""
    return [a for a in list_alerts(con, None, limit=10_000) if a["event_id"] is None]


def mark_event(con: duckdb.DuckDBPyConnection, alert: str, event_id: str) -> None:
    """Record the id of the Prefect event emitted for ``alert``."""
    con.execute("UPDATE alerts SET event_id = ? WHERE alert_id = ?", [event_id, alert])


def mark_delivered(con: duckdb.DuckDBPyConnection, alert: str, channel: str, attempts: int) -> None:
    """'pending' -> 'open' with ``notified_at`` (only from 'pending': never twice)."""
    con.execute(
        "UPDATE alerts SET status = 'open', notified_at = now(), delivery_channel = ?, "
        "delivery_attempts = delivery_attempts + ?, last_error = NULL WHERE alert_id = ? AND status = 'pending'",
        [channel, attempts, alert],
    )


def mark_failed(con: duckdb.DuckDBPyConnection, alert: str, attempts: int, error: str) -> None:
    """Count failed tries; the alert stays 'pending' for the next run."""
    con.execute("UPDATE alerts SET delivery_attempts = delivery_attempts + ?, last_error = ? WHERE alert_id = ?",
                [attempts, error[:500], alert])
