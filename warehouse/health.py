"""The warehouse side of the model health checks: what they read, where they store, drift alerts.

Reads the served model's predictions per UTC day (``scores`` + ``articles`` + ``embeddings``,
timed like the sentiment monitor: :func:`warehouse.monitor.monitor_time_sql`), stores one
``model_health`` row per day and key (overall ``*`` and each source), and turns drifting days into
``alerts`` rows (dimension ``drift``, metric ``model_drift``) with the alerts table's dedup key and
the monitor's cooldown: consecutive drifting days of a key are one episode. The statistics
themselves are ``models/health.py``'s (the task in ``tasks/health.py`` joins the two); nothing here
imports Prefect or ``models``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from warehouse import alerts as db_alerts
from warehouse.connection import transaction
from warehouse.monitor import LIVE_LAG_H, monitor_time_sql

STATE_PREFIX = "health:"
DIMENSION = "drift"
METRIC = "model_drift"
DAY_US = 86_400_000_000
COLUMNS = ("label_psi", "label_p", "mean_confidence", "ref_mean_confidence", "low_conf_share", "ref_low_conf_share",
           "embedding_auc", "embedding_p", "novel_share", "ref_novel_share", "length_psi", "mean_tokens", "ref_mean_tokens", "unknown_rate",
           "ref_unknown_rate", "disagreement", "ref_disagreement")


def _served(version: str, live_lag_h: float) -> str:
    """SQL of the version's predictions with their monitor time and UTC day number ``d``."""
    return f"""
        SELECT s.article_id, {monitor_time_sql(live_lag_h)} AS ts, a.source, s.sentiment_label AS label,
               greatest(s.sentiment_p_negative, s.sentiment_p_neutral, s.sentiment_p_positive) AS confidence,
               s.n_tokens, s.committed_at, concat_ws(' ', a.title, a.body) AS text
        FROM scores s JOIN articles a USING (article_id) LEFT JOIN ingest_batches b ON b.batch_id = a.batch_id
        WHERE s.model_version = '{version.replace("'", "''")}'"""


def state(con: duckdb.DuckDBPyConnection, version: str, live_lag_h: float = LIVE_LAG_H) -> dict[str, Any]:
    """The days (UTC day numbers) with predictions committed after the health watermark, the next
    watermark and the score count (a clock that went back recomputes every day, like the monitor)."""
    row = con.execute("SELECT committed_until, n_scores FROM monitor_state WHERE model_version = ?",
                      [STATE_PREFIX + version]).fetchall()
    until, seen = row[0] if row else (None, None)
    got = con.execute(f"""
        WITH m AS ({_served(version, live_lag_h)})
        SELECT list(DISTINCT epoch_us(ts) // {DAY_US}) FILTER (ts IS NOT NULL AND ($u IS NULL OR committed_at > $u)),
               max(committed_at), count(*), count(*) FILTER ($u IS NULL OR committed_at > $u),
               list(DISTINCT epoch_us(ts) // {DAY_US}) FILTER (ts IS NOT NULL)
        FROM m""", {"u": until}).fetchall()[0]
    fresh, total = int(got[3]), int(got[2])
    clock_back = until is not None and seen is not None and total - int(seen) > fresh
    days = sorted(got[4] or []) if clock_back else sorted(got[0] or [])
    return {"days": [int(d) for d in days], "until": max(got[1], until) if got[1] and until else got[1] or until,
            "n_scores": total, "all_days": sorted(int(d) for d in got[4] or [])}


def set_state(con: duckdb.DuckDBPyConnection, version: str, st: dict[str, Any]) -> None:
    con.execute("INSERT OR REPLACE INTO monitor_state (model_version, committed_until, updated_at, n_scores) "
                "VALUES (?, ?, now(), ?)", [STATE_PREFIX + version, st["until"], st["n_scores"]])


def day_start(d: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=int(d))


def _embeddings(col: Any) -> list[np.ndarray | None]:
    return [np.asarray(v, dtype=np.float32) if isinstance(v, (list, tuple, np.ndarray)) else None for v in col]


def day_frame(con: duckdb.DuckDBPyConnection, version: str, days: list[int], sample: int,
              live_lag_h: float = LIVE_LAG_H, past: list[int] | None = None, past_sample: int | None = None
              ) -> pd.DataFrame:
    """Every prediction of ``days`` (and of the reference days ``past``): article_id, d, source,
    label, confidence, n_tokens, sampled, and for the sampled rows (``sample`` per day and source,
    ``past_sample`` on the reference days, by a hash of the id: deterministic) text, embedding
    (None where the version stored none) and the cached ``baseline_label`` / ``unknown_rate``
    (``health_items``; NaN/None where not computed yet)."""
    cols = ["article_id", "d", "source", "label", "confidence", "n_tokens", "sampled", "text", "embedding",
            "baseline_label", "unknown_rate", "cached"]
    every = sorted(set(days) | set(past or []))
    if not every:
        return pd.DataFrame(columns=cols)
    cur = set(days)
    con.register("health_days_df", pd.DataFrame({"d": np.array(every, dtype=np.int64),
                                                 "current": [d in cur for d in every]}))
    con.execute("CREATE OR REPLACE TEMP TABLE health_days AS SELECT * FROM health_days_df")
    con.unregister("health_days_df")
    df = con.execute(f"""
        WITH m AS (SELECT *, epoch_us(ts) // {DAY_US} AS d FROM ({_served(version, live_lag_h)}) WHERE ts IS NOT NULL),
        k AS (SELECT m.*, row_number() OVER (PARTITION BY m.d, m.source ORDER BY hash(m.article_id), m.article_id)
                          <= CASE WHEN h.current THEN {int(sample)} ELSE {int(past_sample or sample)} END AS sampled
              FROM m JOIN health_days h ON h.d = m.d)
        SELECT k.article_id, k.d, k.ts, k.source, k.label, k.confidence, k.n_tokens, k.sampled,
               CASE WHEN k.sampled THEN k.text END AS text, CASE WHEN k.sampled THEN e.embedding END AS embedding,
               i.baseline_label, i.unknown_rate, i.article_id IS NOT NULL AS cached
        FROM k LEFT JOIN embeddings e ON k.sampled AND e.article_id = k.article_id AND e.model_version = $v
        LEFT JOIN health_items i ON k.sampled AND i.article_id = k.article_id AND i.model_version = $v
        ORDER BY k.d, k.source, k.article_id""", {"v": version}).df()
    con.execute("DROP TABLE IF EXISTS health_days")
    df["embedding"] = _embeddings(df["embedding"])
    return df


def cache_items(con: duckdb.DuckDBPyConnection, version: str, items: pd.DataFrame) -> int:
    """Remember per-article baseline labels and unknown-word shares (``article_id, baseline_label,
    unknown_rate``) so later runs do not compute them again."""
    if not len(items):
        return 0
    frame = items[["article_id", "baseline_label", "unknown_rate"]].assign(model_version=version)
    frame["unknown_rate"] = pd.to_numeric(frame["unknown_rate"], errors="coerce").astype(float)
    con.register("new_items", frame)
    try:
        con.execute("INSERT OR IGNORE INTO health_items BY NAME SELECT * FROM new_items")
    finally:
        con.unregister("new_items")
    return len(frame)


def reference_frame(con: duckdb.DuckDBPyConnection, version: str, *, datasets: list[str] | None = None,
                    first_days: int | None = None, limit: int = 2000,
                    live_lag_h: float = LIVE_LAG_H) -> tuple[pd.DataFrame, str | None]:
    """Rows to build a reference from the warehouse, and where they come from.

    ``datasets``: the version's own scores of the validation and test rows of its training data sets
    (its registered data); ``first_days``: its scores of the first ``first_days`` days of its stream.
    Returns (frame with label, confidence, n_tokens, text, embedding; origin) or (empty, None).
    """
    cols = "m.label, m.confidence, m.n_tokens, m.text, e.embedding"
    join = "LEFT JOIN embeddings e ON e.article_id = m.article_id AND e.model_version = $v"
    if datasets:
        df = con.execute(f"""
            WITH m AS ({_served(version, live_lag_h)})
            SELECT {cols} FROM m {join}
            WHERE m.article_id IN (SELECT item FROM labels WHERE task = 'sentiment' AND list_contains($ds, dataset)
                                   AND split IN ('validation', 'test'))
            ORDER BY hash(m.article_id), m.article_id LIMIT {int(limit)}""", {"v": version, "ds": datasets}).df()
        origin = f"registered data: its scores of the validation/test rows of {', '.join(datasets)}"
    else:
        df = con.execute(f"""
            WITH m AS ({_served(version, live_lag_h)}),
            f AS (SELECT min(epoch_us(ts) // {DAY_US}) AS d0 FROM m WHERE ts IS NOT NULL)
            SELECT {cols} FROM m {join}, f
            WHERE m.ts IS NOT NULL AND epoch_us(m.ts) // {DAY_US} < f.d0 + {int(first_days or 7)}
            ORDER BY hash(m.article_id), m.article_id LIMIT {int(limit)}""", {"v": version}).df()
        origin = f"the first {int(first_days or 7)} day(s) of its own scores"
    df["embedding"] = _embeddings(df["embedding"])
    return df, (origin if len(df) else None)


def stream_days(con: duckdb.DuckDBPyConnection, version: str, live_lag_h: float = LIVE_LAG_H) -> tuple[int | None, int | None]:
    """First and last UTC day number of the version's timed predictions (None, None: none)."""
    row = con.execute(f"SELECT min(epoch_us(ts) // {DAY_US}), max(epoch_us(ts) // {DAY_US}) "
                      f"FROM ({_served(version, live_lag_h)}) WHERE ts IS NOT NULL").fetchall()[0]
    return (None if row[0] is None else int(row[0]), None if row[1] is None else int(row[1]))


def store(con: duckdb.DuckDBPyConnection, version: str, rows: list[dict[str, Any]], days: list[int]) -> int:
    """Replace the version's ``model_health`` rows of ``days`` with ``rows`` (one transaction)."""
    frame = pd.DataFrame([{**{c: r.get(c) for c in COLUMNS}, "window_start": day_start(r["d"]),
                           "window_end": day_start(r["d"] + 1), "dimension": r["dimension"], "key": r["key"],
                           "model_version": version, "n_articles": int(r["n_articles"]),
                           "checks_fired": list(r.get("fired") or []), "drifting": bool(r.get("drifting")),
                           "reference": r["reference"], "note": r.get("note")} for r in rows])
    with transaction(con):
        con.execute("DELETE FROM model_health WHERE model_version = ? AND window_start IN "
                    "(SELECT unnest(?::TIMESTAMPTZ[]))", [version, [day_start(d) for d in days]])
        if not len(frame):
            return 0
        for c in COLUMNS:
            frame[c] = pd.to_numeric(frame[c], errors="coerce").astype(float)
        con.register("new_health", frame)
        try:
            con.execute("INSERT INTO model_health BY NAME SELECT *, now() AS computed_at FROM new_health")
        finally:
            con.unregister("new_health")
    return len(frame)


def drift_alerts(rows: list[dict[str, Any]], anchors: dict[tuple[str, str], tuple[str, datetime]],
                 cooldown: timedelta, horizon: datetime | None, min_checks: int
                 ) -> tuple[list[dict[str, Any]], dict[str, datetime]]:
    """Alerts for drifting days: one per episode and key (``*`` = overall, else the source).

    A drifting day that starts within ``cooldown`` of the key's last unresolved drift alert (or of
    the previous drifting day in ``rows``) extends that alert; any other opens one. Returns the new
    alerts (``insert_alerts`` rows) and ``alert_id -> last_window_end`` of stored alerts extended.
    ``horizon`` (the newest prediction time) caps every end: today's window is still filling.
    """
    ends = {k: end for k, (_, end) in anchors.items()}
    opened: dict[tuple[str, str], dict[str, Any]] = {}
    extended: dict[str, datetime] = {}
    new: list[dict[str, Any]] = []
    for r in sorted((r for r in rows if r.get("drifting")), key=lambda r: (r["d"], r["dimension"] != "overall", r["key"])):
        k = (DIMENSION, r["key"])
        start, end = day_start(r["d"]), day_start(r["d"] + 1)
        end_c = min(end, horizon) if horizon is not None else end
        prev = ends.get(k)
        if prev is not None and start <= prev + cooldown:
            ends[k] = max(prev, end_c)
            if k in opened:
                opened[k]["last_window_end"] = ends[k]
            elif k in anchors:
                extended[anchors[k][0]] = ends[k]
            continue
        ps = [p for p in (r.get("label_p"), r.get("embedding_p")) if p is not None and np.isfinite(p)]
        alert = {"dimension": DIMENSION, "key": r["key"], "granularity": "1d", "window_start": start,
                 "window_end": end, "last_window_end": end_c, "metric": METRIC, "observed": float(len(r["fired"])),
                 "baseline": float(min_checks), "n": int(r["n_articles"]), "n_neg": len(r["fired"]),
                 "p_value": float(min(ps)) if ps else 1.0, "detector": "health",
                 "severity": "high" if len(r["fired"]) >= min_checks + 2 else "medium",
                 "evidence": [evidence_entry(r)]}
        new.append(alert)
        opened[k] = alert
        ends[k] = end_c
    return new, extended


def evidence_entry(r: dict[str, Any]) -> dict[str, Any]:
    """The drift measures of one model_health row, as an evidence item (``kind`` 'model_drift')."""
    keep = ("label_psi", "mean_confidence", "ref_mean_confidence", "low_conf_share", "ref_low_conf_share",
            "embedding_auc", "novel_share", "length_psi", "mean_tokens", "ref_mean_tokens", "unknown_rate", "ref_unknown_rate",
            "disagreement", "ref_disagreement")
    return {"kind": "model_drift", "scope": "overall" if r["key"] == "*" else f"source {r['key']}",
            "day": str(day_start(r["d"]).date()), "checks_fired": list(r.get("fired") or []),
            "n_articles": int(r["n_articles"]), "reference": r.get("reference"),
            **{c: round(float(r[c]), 3) for c in keep if r.get(c) is not None and np.isfinite(r[c])}}


def drift_notes(con: duckdb.DuckDBPyConnection, version: str, alert: dict[str, Any]) -> list[dict[str, Any]]:
    """Evidence items for a sentiment alert whose source was drifting when it fired: for a source
    alert its source; for an overall alert the overall key; otherwise the sources of its evidence
    headlines. Empty when nothing drifted in the days the alert's window touches."""
    if alert.get("dimension") == "source":
        keys = [str(alert["key"])]
    elif alert.get("dimension") == "overall":
        keys = ["*"]
    else:
        keys = sorted({str(e.get("source")) for e in alert.get("evidence") or [] if e.get("source")})
    if not keys:
        return []
    rows = con.execute("""
        SELECT key, window_start, checks_fired, n_articles, embedding_auc FROM model_health
        WHERE model_version = ? AND drifting AND list_contains(?, key) AND window_start < ? AND window_end > ?
        ORDER BY window_start, key""", [version, keys, alert["window_end"], alert["window_start"]]).fetchall()
    return [{"kind": "model_drift", "scope": "overall" if k == "*" else f"source {k}", "day": str(ws.date()),
             "checks_fired": list(fired), "n_articles": int(n),
             "note": "the model was drifting here: the spike may be the model misreading new text, not news"}
            for k, ws, fired, n, _ in rows]


def health_timeline(con: duckdb.DuckDBPyConnection, version: str | None, days: int = 30) -> pd.DataFrame:
    """The last ``days`` days of ``model_health`` (for the report picture)."""
    if version is None:
        return pd.DataFrame()
    return con.execute("""
        SELECT window_start, dimension, key, n_articles, embedding_auc, label_psi, low_conf_share, unknown_rate,
               disagreement, length_psi, drifting, len(checks_fired) AS n_fired
        FROM model_health WHERE model_version = ? AND window_start >= (
            SELECT max(window_start) FROM model_health WHERE model_version = ?) - to_days(?)
        ORDER BY window_start, dimension, key""", [version, version, int(days)]).df()


def insert_drift_alerts(con: duckdb.DuckDBPyConnection, new: list[dict[str, Any]], extended: dict[str, datetime],
                        version: str, flow_run_id: str | None) -> list[str]:
    """Store new drift alerts and extensions (one transaction with nothing else)."""
    for a in new:
        a["evidence"] = json.loads(json.dumps(a.get("evidence", []), default=str))
    db_alerts.extend_alerts(con, extended)
    return db_alerts.insert_alerts(con, new, model_version=version, flow_run_id=flow_run_id)
