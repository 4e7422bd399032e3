"""The ``scores`` and ``embeddings`` tables: what to score, staged shards in, one idempotent commit.

Scoring is heavy compute that may run on other workers or machines, so it never writes DuckDB
itself (DESIGN.md, "one writer"). The flow:

1. :func:`export_unscored` (writer slot, short): articles the model has not scored yet, ordered
   by ``article_id`` and cut into shards of ``shard_size`` rows -> ``input-NNNNN.parquet``.
2. each shard is scored anywhere into ``output-NNNNN.parquet`` (``models.serving.score_shard``).
3. :func:`commit_scores` (writer slot, one transaction): every complete output file is inserted
   with an anti-join on ``(article_id, model_version)``, so committing twice, or committing
   after a crashed run left some rows behind, never duplicates and never loses a row.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from warehouse.connection import parquet_list, scalar, transaction
from warehouse.staging import export_parts

SCORE_COLUMNS = [
    "article_id", "model_version", "sentiment_label", "sentiment_p_negative", "sentiment_p_neutral",
    "sentiment_p_positive", "sentiment_score", "topic_label", "topic_confidence", "topic_probs", "n_tokens",
    "truncated", "scored_at", "score_run_id", "flow_run_id",
]


@dataclass
class CommitResult:
    """What one commit wrote."""

    rows_staged: int
    rows_inserted: int
    rows_duplicate: int
    embeddings_inserted: int


def _unscored_sql() -> str:
    return (
        "SELECT a.article_id, concat_ws(' ', a.title, a.body) AS text, "
        "coalesce(a.published_at, a.ingested_at) AS ts FROM articles a "
        "WHERE NOT EXISTS (SELECT 1 FROM scores s WHERE s.article_id = a.article_id AND s.model_version = $model) "
    )


def export_unscored(con: duckdb.DuckDBPyConnection, model_version: str, out_dir: Path, shard_size: int,
                    limit: int | None = None) -> list[str]:
    """Write the articles ``model_version`` has not scored into Parquet shards; returns their paths.

    With ``limit``, the newest articles come first (the backlog of a model newly given either
    alias, ``champion`` or ``cpu-champion``, is worked through newest first, so monitoring sees
    fresh scores soon). Shards are consecutive ranges of ``article_id`` within the selection
    (deterministic: the same warehouse gives the same shards), so a shard can be scored on any
    worker and committed in any order.
    """
    out_dir = Path(out_dir)
    limit_sql = f"ORDER BY ts DESC NULLS LAST, article_id LIMIT {int(limit)}" if limit else ""
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE to_score AS SELECT article_id, text, (row_number() OVER (ORDER BY article_id) - 1) "
        f"// {int(shard_size)} AS part FROM ({_unscored_sql()} {limit_sql})",
        {"model": model_version},
    )
    return export_parts(con, "to_score", "article_id", "article_id, text", out_dir)


def commit_scores(con: duckdb.DuckDBPyConnection, output_paths: list[str], model_version: str) -> CommitResult:
    """Insert scored shards into ``scores`` and ``embeddings`` in one transaction (idempotent).

    Only files that exist are read (a shard that was never scored is simply picked up by the next
    run's :func:`export_unscored`). Rows already in the table for this model are skipped.
    """
    files = [p for p in output_paths if Path(p).exists()]
    if not files:
        return CommitResult(0, 0, 0, 0)
    con.execute(f"CREATE OR REPLACE TEMP VIEW staged_scores AS SELECT * FROM read_parquet({parquet_list(files)})")
    staged = int(scalar(con, "SELECT count(*) FROM staged_scores"))
    cols = ", ".join(SCORE_COLUMNS)
    select = ", ".join(
        "$model AS model_version" if c == "model_version" else
        "CAST(topic_probs AS FLOAT[]) AS topic_probs" if c == "topic_probs" else f"st.{c}"
        for c in SCORE_COLUMNS
    )
    try:
        with transaction(con):
            # Within the staged files an article appears once per shard set; DISTINCT ON guards against
            # a shard file that was committed, then re-scored by a retried task and staged again.
            inserted = con.execute(
                f"INSERT INTO scores ({cols}) SELECT {select} FROM "
                f"(SELECT DISTINCT ON (article_id) * FROM staged_scores ORDER BY article_id, scored_at) st "
                f"WHERE NOT EXISTS (SELECT 1 FROM scores s WHERE s.article_id = st.article_id AND s.model_version = $model)",
                {"model": model_version},
            ).fetchall()[0][0]
            emb = con.execute(
                "INSERT INTO embeddings (article_id, model_version, embedding) "
                "SELECT st.article_id, $model, CAST(st.embedding AS FLOAT[]) FROM "
                "(SELECT DISTINCT ON (article_id) article_id, embedding FROM staged_scores ORDER BY article_id) st "
                "WHERE NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.article_id = st.article_id AND e.model_version = $model)",
                {"model": model_version},
            ).fetchall()[0][0]
    finally:
        con.execute("DROP VIEW IF EXISTS staged_scores")
    return CommitResult(staged, int(inserted), staged - int(inserted), int(emb))


def record_score_run(con: duckdb.DuckDBPyConnection, *, score_run_id: str, model_version: str,
                     flow_run_id: str | None, started_at: datetime, n_shards: int, rows_selected: int,
                     result: CommitResult, score_seconds: float | None) -> None:
    """One ``score_runs`` row (re-recording the same run id replaces it)."""
    rate = result.rows_staged / score_seconds if score_seconds else None
    con.execute("DELETE FROM score_runs WHERE score_run_id = ?", [score_run_id])
    con.execute(
        "INSERT INTO score_runs VALUES (?, ?, ?, ?, now(), ?, ?, ?, ?, ?, ?)",
        [score_run_id, model_version, flow_run_id, started_at, n_shards, rows_selected, result.rows_inserted,
         result.rows_duplicate, score_seconds, rate],
    )


def staged_outputs(run_dir: Path) -> list[str]:
    """Complete shard outputs in a run folder (``.tmp`` files of a killed scorer are ignored)."""
    return sorted(glob.glob(str(Path(run_dir) / "output-*.parquet")))
