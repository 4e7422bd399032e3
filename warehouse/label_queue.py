"""The warehouse side of the relabel queue (issue 17 item 2): candidates in, picks stored.

What the monitor's last step reads (the served model's recent scores that nobody has labelled or
queued, with the alerts whose evidence names them and whether their source drifts) and where it
stores its picks (``label_queue``, migration 014). Which candidates to pick is
``models/active.build_queue``'s business; ``tasks/label_queue.py`` joins the two. No Prefect and
no ``models`` here.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

import duckdb
import pandas as pd

from warehouse.connection import transaction

TASK = "sentiment"
PROB_COLUMNS = {"p_negative": "sentiment_p_negative", "p_neutral": "sentiment_p_neutral",
                "p_positive": "sentiment_p_positive"}


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                            [name]).fetchall()[0][0])


def drifted_sources(con: duckdb.DuckDBPyConnection, version: str, since: datetime) -> list[str]:
    """Sources with a drifting day for ``version`` ending after ``since`` (``model_health``,
    migration 013); ``[]`` where the health checks have not run (no table, no rows)."""
    if not _has_table(con, "model_health"):
        return []
    rows = con.execute("SELECT DISTINCT key FROM model_health WHERE dimension = 'source' AND drifting "
                       "AND model_version = ? AND window_end > ? ORDER BY key", [version, since]).fetchall()
    return [r[0] for r in rows]


def alert_articles(con: duckdb.DuckDBPyConnection, since: datetime) -> dict[str, list[str]]:
    """Article id -> ids of the alerts (latest window after ``since``) whose evidence names it."""
    out: dict[str, list[str]] = {}
    for alert_id, evidence in con.execute(
            "SELECT alert_id, evidence::VARCHAR FROM alerts WHERE last_window_end > ? ORDER BY alert_id",
            [since]).fetchall():
        try:
            items = json.loads(evidence) if evidence else []
        except ValueError:
            continue
        for item in items if isinstance(items, list) else []:
            aid = item.get("article_id") if isinstance(item, dict) else None
            if aid:
                out.setdefault(str(aid), [])
                if alert_id not in out[str(aid)]:
                    out[str(aid)].append(alert_id)
    return out


def candidates(con: duckdb.DuckDBPyConnection, version: str, since: datetime, limit: int,
               alerts: dict[str, list[str]] | None = None, drifted: list[str] | None = None) -> pd.DataFrame:
    """Articles ``version`` scored since ``since``, not yet labelled (any dataset) nor queued.

    The ``limit`` least sure (smallest top-2 margin) come, plus every one an alert names or from a
    ``drifted`` source. Columns: ``article_id, source, title, text, p_negative, p_neutral,
    p_positive, alert_ids, drifted``.
    """
    alerts = alerts or {}
    drifted = list(drifted or [])
    df = con.execute(
        f"""WITH c AS (
              SELECT s.article_id, a.source, a.title, concat_ws(' ', a.title, a.body) AS text,
                     {', '.join(f's.{v} AS {k}' for k, v in PROB_COLUMNS.items())},
                     greatest(s.sentiment_p_negative, s.sentiment_p_neutral, s.sentiment_p_positive) AS top1,
                     s.sentiment_p_negative + s.sentiment_p_neutral + s.sentiment_p_positive - top1
                       - least(s.sentiment_p_negative, s.sentiment_p_neutral, s.sentiment_p_positive) AS top2
              FROM scores s JOIN articles a USING (article_id)
              WHERE s.model_version = $v AND s.committed_at > $since
                AND NOT EXISTS (SELECT 1 FROM label_queue q WHERE q.article_id = s.article_id AND q.task = $task)
                AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.item = s.article_id AND l.task = $task))
            SELECT * EXCLUDE (top1, top2), source IN (SELECT unnest($drifted::VARCHAR[])) AS drifted FROM c
            QUALIFY row_number() OVER (ORDER BY top1 - top2, article_id) <= $limit
                 OR article_id IN (SELECT unnest($alerted::VARCHAR[]))
                 OR source IN (SELECT unnest($drifted::VARCHAR[]))
            ORDER BY article_id""",
        {"v": version, "since": since, "task": TASK, "limit": int(limit), "alerted": list(alerts),
         "drifted": drifted}).df()
    df["alert_ids"] = df.article_id.map(lambda a: alerts.get(a, []))
    return df


def known_texts(con: duckdb.DuckDBPyConnection, since_day: date) -> list[str]:
    """Texts queued on or after ``since_day`` (new candidates that repeat them are not queued again)."""
    rows = con.execute("SELECT concat_ws(' ', a.title, a.body) FROM label_queue q JOIN articles a USING (article_id) "
                       "WHERE q.queue_day >= ? AND q.task = ? ORDER BY q.queued_at, q.article_id",
                       [since_day, TASK]).fetchall()
    return [r[0] for r in rows]


def queued_on(con: duckdb.DuckDBPyConnection, day: date) -> int:
    """Rows queued on ``day`` (what counts against the per-day cap)."""
    return int(con.execute("SELECT count(*) FROM label_queue WHERE queue_day = ?", [day]).fetchall()[0][0])


def store(con: duckdb.DuckDBPyConnection, picks: pd.DataFrame, version: str, day: date, now: datetime) -> int:
    """Insert ``picks`` (``models.active.build_queue`` output) as queued rows; returns rows inserted
    (a row already queued, e.g. by a concurrent run, is left as it is)."""
    if picks is None or picks.empty:
        return 0
    rows = picks.assign(task=TASK, queue_day=day, model_version=version, status="queued", queued_at=now)
    rows["alert_ids"] = rows.alert_ids.map(lambda v: list(v) if v is not None else [])
    rows["duplicates"] = rows.duplicates.map(lambda v: list(v) if v is not None else [])
    rows["reasons"] = rows.reasons.map(list)
    con.register("q_new", rows)
    try:
        with transaction(con):
            return int(con.execute(
                """INSERT INTO label_queue (article_id, task, queue_day, model_version, source, predicted_label,
                          baseline_label, reasons, priority, margin, entropy, disagreement, alert_ids, duplicates,
                          status, queued_at)
                   SELECT article_id, task, queue_day, model_version, source, predicted_label, baseline_label,
                          reasons::VARCHAR[], priority, margin, entropy, disagreement, alert_ids::VARCHAR[],
                          duplicates::VARCHAR[], status, queued_at FROM q_new
                   ON CONFLICT DO NOTHING""").fetchall()[0][0])
    finally:
        con.unregister("q_new")


def export_rows(con: duckdb.DuckDBPyConnection, status: str | None = "queued", day: date | None = None,
                limit: int | None = None) -> pd.DataFrame:
    """Queue rows to label, best first: ``article_id, task, queue_day, source, title, text,
    predicted_label, baseline_label, priority, reasons, duplicates`` (lists as ``;``-joined text)."""
    lim = f"LIMIT {int(limit)}" if limit else ""
    return con.execute(
        f"""SELECT q.article_id, q.task, q.queue_day, q.source, a.title, concat_ws(' ', a.title, a.body) AS text,
                   q.predicted_label, q.baseline_label, round(q.priority, 4) AS priority,
                   array_to_string(q.reasons, ';') AS reasons, array_to_string(coalesce(q.duplicates, []), ';') AS duplicates,
                   q.model_version, q.status
            FROM label_queue q LEFT JOIN articles a USING (article_id)
            WHERE ($status IS NULL OR q.status = $status) AND ($day IS NULL OR q.queue_day = $day)
            ORDER BY q.queue_day DESC, q.priority DESC, q.article_id {lim}""",
        {"status": status, "day": day}).df()


def summary(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Queued / labelled counts (for logs and the CLI)."""
    rows = con.execute("SELECT status, count(*) FROM label_queue GROUP BY 1").fetchall()
    return {k: int(v) for k, v in rows}
