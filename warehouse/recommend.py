"""The recommendation tables: export what the recommender needs, commit its output in one go.

Like scoring, the heavy part (click model, per-user ranking) never opens DuckDB. The flow:

1. :func:`export_rec_inputs` (writer slot, short): one click-log source's recent impressions as
   flat *events* (history and shown items, mapped from the log's item ids to ``article_id``) and
   the *items* they touch plus the fresh articles that may be recommended, with the champion's
   embedding, topic and sentiment -> two Parquet files.
2. the recommender reads those files and writes per-shard ``recs-NNNNN.parquet`` and
   ``profiles-NNNNN.parquet`` (``models.recommend``).
3. :func:`commit_recommendations` (writer slot, one transaction): each user's rows are replaced
   by the new snapshot, so a re-run, or a run after a crash, never duplicates and never mixes two
   runs' rankings for one user.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from warehouse.connection import parquet_list, scalar, sql_literal, transaction
from warehouse.staging import claim

REC_COLUMNS = [
    "source", "user_id", "article_id", "model_version", "score", "rank", "click_prob", "similarity",
    "topic_affinity", "recency_h", "popularity", "sentiment", "cold_start", "rec_run_id", "as_of",
]
PROFILE_COLUMNS = [
    "source", "user_id", "model_version", "n_clicks", "last_seen_at", "profile", "topic_affinity",
    "sentiment_affinity", "rec_run_id", "as_of",
]


def click_log_sources(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Every ``behaviors.source`` with at least one impression, sorted."""
    return [r[0] for r in con.execute("SELECT DISTINCT source FROM behaviors ORDER BY 1").fetchall()]


def newest_impression(con: duckdb.DuckDBPyConnection, source: str) -> datetime | None:
    """Time of the source's newest impression (the default ``as_of`` of a run over a replayed log)."""
    return scalar(con, "SELECT max(time) FROM behaviors WHERE source = ?", [source])


def export_rec_inputs(con: duckdb.DuckDBPyConnection, *, source: str, model_version: str, as_of: datetime,
                      history_days: float, candidate_hours: float, out_dir: Path) -> dict[str, Any]:
    """Write ``events.parquet`` and ``items.parquet`` for one click-log source into ``out_dir``.

    events: ``impression_id, user_id, time, kind ('history' | 'shown'), pos, article_id, clicked``
    for impressions in ``(as_of - history_days, as_of]``. A log item id becomes the article with
    that ``source_id``, preferring the log's own source; ids with no article are counted in
    ``events_unmapped`` (they have no text to embed) and left out.

    items: every article the events touch plus the articles published in
    ``(as_of - candidate_hours, as_of]``, with ``item_time`` (published, else first shown, else
    ingested), the champion's ``embedding`` (NULL until the score flow has embedded it),
    ``topic_label`` and ``sentiment_score``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    claim(out_dir)  # a killed run's folder is pruned by the next flow (staging.prune_staging)
    params = {"source": source, "as_of": as_of, "hist_s": int(history_days * 86400)}
    con.execute(
        "CREATE OR REPLACE TEMP TABLE rec_beh AS SELECT impression_id, user_id, time, history, impressions "
        "FROM behaviors WHERE source = $source AND time <= $as_of AND time > $as_of - to_seconds($hist_s)",
        params)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE rec_ev AS
        SELECT impression_id, user_id, time, 'history' AS kind, pos, item, NULL::BOOLEAN AS clicked
        FROM (SELECT impression_id, user_id, time, unnest(history) AS item,
                     generate_subscripts(history, 1) AS pos FROM rec_beh)
        UNION ALL
        SELECT impression_id, user_id, time, 'shown', pos, imp.item, imp.clicked
        FROM (SELECT impression_id, user_id, time, unnest(impressions) AS imp,
                     generate_subscripts(impressions, 1) AS pos FROM rec_beh)""")
    # One article per log item id: the log's own source first, then the oldest copy.
    con.execute("""
        CREATE OR REPLACE TEMP TABLE rec_map AS
        SELECT DISTINCT ON (k.item) k.item, a.article_id
        FROM (SELECT DISTINCT item FROM rec_ev) k JOIN articles a ON a.source_id = k.item
        ORDER BY k.item, (a.source = $source) DESC, a.ingested_at, a.article_id""", {"source": source})
    events_path, items_path = out_dir / "events.parquet", out_dir / "items.parquet"
    con.execute(
        "CREATE OR REPLACE TEMP TABLE rec_ev_mapped AS SELECT e.impression_id, e.user_id, e.time, e.kind, e.pos, "
        "m.article_id, e.clicked FROM rec_ev e JOIN rec_map m USING (item)")
    con.execute(f"COPY (SELECT * FROM rec_ev_mapped ORDER BY time, impression_id, kind, pos) "
                f"TO {sql_literal(events_path)} (FORMAT parquet)")
    con.execute(f"""
        COPY (
            WITH first_shown AS (SELECT article_id, min(time) AS first_shown FROM rec_ev_mapped
                                 WHERE kind = 'shown' GROUP BY 1),
                 ids AS (SELECT DISTINCT article_id FROM rec_ev_mapped
                         UNION
                         SELECT article_id FROM articles
                         WHERE published_at > $as_of - to_seconds($cand_s) AND published_at <= $as_of)
            SELECT i.article_id, coalesce(a.published_at, f.first_shown, a.ingested_at) AS item_time,
                   CAST(e.embedding AS FLOAT[]) AS embedding, s.topic_label, s.sentiment_score
            FROM ids i
            JOIN (SELECT DISTINCT ON (article_id) * FROM articles ORDER BY article_id, ingested_at) a USING (article_id)
            LEFT JOIN first_shown f USING (article_id)
            LEFT JOIN embeddings e ON e.article_id = i.article_id AND e.model_version = $model
            LEFT JOIN scores s ON s.article_id = i.article_id AND s.model_version = $model
            ORDER BY i.article_id
        ) TO {sql_literal(items_path)} (FORMAT parquet)""",
        {"as_of": as_of, "cand_s": int(candidate_hours * 3600), "model": model_version})
    counts = con.execute(
        "SELECT (SELECT count(*) FROM rec_beh), (SELECT count(DISTINCT user_id) FROM rec_beh), "
        "(SELECT count(*) FROM rec_ev_mapped), (SELECT count(*) FROM rec_ev) - (SELECT count(*) FROM rec_ev_mapped), "
        "(SELECT count(*) FROM read_parquet(?)), (SELECT count(*) FROM read_parquet(?) WHERE embedding IS NULL)",
        [str(items_path), str(items_path)]).fetchone()
    for name in ("rec_beh", "rec_ev", "rec_map", "rec_ev_mapped"):
        con.execute(f"DROP TABLE IF EXISTS {name}")
    keys = ("impressions", "users", "events", "events_unmapped", "items", "items_without_embedding")
    return {"events_path": str(events_path), "items_path": str(items_path), **dict(zip(keys, map(int, counts)))}


def commit_recommendations(con: duckdb.DuckDBPyConnection, rec_paths: list[str], profile_paths: list[str], *,
                           source: str, model_version: str) -> dict[str, int]:
    """Replace the staged users' rows in ``rec_features`` and ``user_profiles`` (one transaction).

    Each user's recommendations are a snapshot: the rows of the users in the staged profiles are
    deleted and the staged ones inserted, so committing the same files twice, or a newer run over
    an older one, leaves exactly one ranking per user. Missing files are skipped.
    """
    recs = [p for p in rec_paths if Path(p).exists()]
    profiles = [p for p in profile_paths if Path(p).exists()]
    if not profiles:
        return {"users": 0, "rows_inserted": 0, "rows_replaced": 0}
    con.execute(f"CREATE OR REPLACE TEMP VIEW staged_profiles AS SELECT * FROM read_parquet({parquet_list(profiles)})")
    rec_source = f"read_parquet({parquet_list(recs)})" if recs else \
        "(SELECT * FROM rec_features WHERE false)"  # every staged user is new and has no candidates
    con.execute(f"CREATE OR REPLACE TEMP VIEW staged_recs AS SELECT * FROM {rec_source}")
    params = {"source": source, "model": model_version}
    users_sql = "SELECT DISTINCT user_id FROM staged_profiles"
    try:
        with transaction(con):
            replaced = con.execute(
                f"DELETE FROM rec_features WHERE source = $source AND model_version = $model AND user_id IN ({users_sql})",
                params).fetchall()[0][0]
            inserted = con.execute(
                f"INSERT INTO rec_features ({', '.join(REC_COLUMNS)}) SELECT {', '.join(REC_COLUMNS)} FROM staged_recs"
            ).fetchall()[0][0]
            con.execute(
                f"DELETE FROM user_profiles WHERE source = $source AND model_version = $model AND user_id IN ({users_sql})",
                params)
            users = con.execute(
                f"INSERT INTO user_profiles ({', '.join(PROFILE_COLUMNS)}) SELECT "
                + ", ".join("CAST(profile AS FLOAT[])" if c == "profile" else c for c in PROFILE_COLUMNS)
                + " FROM staged_profiles").fetchall()[0][0]
    finally:
        con.execute("DROP VIEW IF EXISTS staged_recs")
        con.execute("DROP VIEW IF EXISTS staged_profiles")
    return {"users": int(users), "rows_inserted": int(inserted), "rows_replaced": int(replaced)}


def record_rec_run(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> None:
    """One ``rec_runs`` row (re-recording the same run id replaces it); ``metrics`` is stored as JSON."""
    cols = ["rec_run_id", "source", "model_version", "click_model", "flow_run_id", "as_of", "started_at",
            "finished_at", "users", "cold_start_users", "candidates", "rows_written", "events_unmapped",
            "items_without_embedding", "metrics"]
    values = [json.dumps(row.get("metrics") or {}, default=str) if c == "metrics" else row.get(c) for c in cols]
    con.execute("DELETE FROM rec_runs WHERE rec_run_id = ?", [row["rec_run_id"]])
    con.execute(f"INSERT INTO rec_runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", values)
