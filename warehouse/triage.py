"""``support_scores`` and ``reply_drafts``: what to triage, staged batches in, one idempotent commit.

Like scoring (``warehouse/scores.py``), triage never writes DuckDB from the model code:

1. :func:`export_untriaged` (writer slot, short): messages the intent model version has not
   triaged yet, newest first, cut into batches -> ``input-NNNNN.parquet``.
2. each batch is triaged anywhere (``models.triage_batch.triage_file``) into ``scores-NNNNN`` and
   ``drafts-NNNNN.parquet``; a batch is complete when its scores file exists.
3. :func:`commit_triage` (writer slot, one transaction): every complete batch's rows are inserted
   with an anti-join on ``(message_id, model_version)``, drafts only for messages whose score is
   inserted too. Committing twice, or after a crash, never duplicates and never loses a message:
   an uncommitted message is selected again by the next run.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from warehouse import registry
from warehouse.connection import fetch_dicts, parquet_list, scalar, transaction
from warehouse.staging import export_parts

INTENT_ALIAS = "intent-champion"
SENTIMENT_ALIAS = "cpu-champion"
# Written into reasons by models.routing.route for an intent the routing table has no row for.
UNROUTED_REASON = "not in routing table"

SCORE_COLUMNS = [
    "message_id", "model_version", "intent_label", "intent_confidence", "intent_top3", "sentiment_label",
    "sentiment_score", "sentiment_model_version", "queue", "priority", "urgent", "decision", "reasons", "lang",
    "scored_at", "triage_run_id", "flow_run_id",
]
DRAFT_COLUMNS = [
    "message_id", "model_version", "template_id", "template_version", "draft_text", "rewritten",
    "rewrite_rejected", "facts", "status", "triage_run_id",
]


@dataclass
class TriageCommit:
    """What one commit wrote."""

    rows_staged: int
    rows_inserted: int
    rows_duplicate: int
    drafts_inserted: int


def resolve_alias(con: duckdb.DuckDBPyConnection, alias: str) -> dict[str, Any] | None:
    """The registry row serving ``alias``, or None (no such model yet, or a registry that does not
    know the alias yet)."""
    try:
        return registry.resolve(con, alias)
    except ValueError:
        return None


def export_untriaged(con: duckdb.DuckDBPyConnection, model_version: str, out_dir: Path, batch_size: int,
                     limit: int | None = None) -> list[str]:
    """Write the messages ``model_version`` has not triaged into Parquet batches; returns their paths.

    Newest first (by ``coalesce(created_at, ingested_at)``), at most ``limit`` messages, so a new
    intent model's backlog reaches fresh messages first. Labelled messages without a time (a
    training corpus such as BANKING77) are not tickets and are never triaged. Batches are consecutive ranges of
    ``message_id`` within the selection, so the same warehouse gives the same batches.
    """
    out_dir = Path(out_dir)
    limit_sql = f"LIMIT {int(limit)}" if limit else ""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE to_triage AS "
        f"SELECT message_id, text, lang, (row_number() OVER (ORDER BY message_id) - 1) // {int(batch_size)} AS part "
        "FROM (SELECT m.message_id, m.text, m.lang FROM support_messages m "
        "      WHERE NOT EXISTS (SELECT 1 FROM support_scores s WHERE s.message_id = m.message_id "
        "                        AND s.model_version = $model) "
        # A labelled message without a time is a training corpus (BANKING77, the demo's templates),
        # not a ticket: it would flood the queues and the drafts. Inbox exports carry times.
        "        AND NOT (m.created_at IS NULL AND EXISTS (SELECT 1 FROM labels l WHERE l.item = m.message_id "
        "                                                  AND l.task = 'intent')) "
        f"     ORDER BY coalesce(m.created_at, m.ingested_at) DESC NULLS LAST, m.message_id {limit_sql})",
        {"model": model_version},
    )
    return export_parts(con, "to_triage", "message_id", "message_id, text, lang", out_dir)


def staged_batches(run_dir: Path) -> list[tuple[str, str]]:
    """``(scores, drafts)`` file pairs of the complete batches in a run folder."""
    out = []
    for scores in sorted(glob.glob(str(Path(run_dir) / "scores-*.parquet"))):
        drafts = scores.replace("scores-", "drafts-")
        out.append((scores, drafts))
    return out


def commit_triage(con: duckdb.DuckDBPyConnection, run_dir: Path, model_version: str) -> TriageCommit:
    """Insert every complete staged batch into ``support_scores`` and ``reply_drafts`` (one transaction).

    Rows already present for ``(message_id, model_version)`` are skipped, and so are their drafts:
    a message's score and draft always come from the same run.
    """
    pairs = [(s, d) for s, d in staged_batches(run_dir) if Path(d).exists()]
    if not pairs:
        return TriageCommit(0, 0, 0, 0)
    scores = parquet_list([s for s, _ in pairs])
    drafts = parquet_list([d for _, d in pairs])
    con.execute(f"CREATE OR REPLACE TEMP VIEW staged_triage AS SELECT * FROM read_parquet({scores})")
    con.execute(f"CREATE OR REPLACE TEMP VIEW staged_drafts AS SELECT * FROM read_parquet({drafts}, union_by_name = true)")
    staged = int(scalar(con, "SELECT count(*) FROM staged_triage"))
    cols = ", ".join(SCORE_COLUMNS)
    select = ", ".join(
        "$model" if c == "model_version" else "CAST(st.intent_top3 AS JSON)" if c == "intent_top3" else f"st.{c}"
        for c in SCORE_COLUMNS
    )
    draft_cols = ", ".join(DRAFT_COLUMNS)
    draft_select = ", ".join(
        "$model" if c == "model_version" else "'draft'" if c == "status" else
        "CAST(d.facts AS JSON)" if c == "facts" else "n.triage_run_id" if c == "triage_run_id" else f"d.{c}"
        for c in DRAFT_COLUMNS
    )
    try:
        with transaction(con):
            con.execute(
                "CREATE OR REPLACE TEMP TABLE new_triage AS SELECT st.* FROM "
                "(SELECT DISTINCT ON (message_id) * FROM staged_triage ORDER BY message_id, scored_at) st "
                "WHERE NOT EXISTS (SELECT 1 FROM support_scores s WHERE s.message_id = st.message_id "
                "                  AND s.model_version = $model)",
                {"model": model_version},
            )
            inserted = int(scalar(con, "SELECT count(*) FROM new_triage"))
            con.execute(f"INSERT INTO support_scores ({cols}) SELECT {select} FROM new_triage st",
                        {"model": model_version})
            n_drafts = 0
            if int(scalar(con, "SELECT count(*) FROM staged_drafts")):
                n_drafts = con.execute(
                    f"INSERT INTO reply_drafts ({draft_cols}) SELECT {draft_select} FROM "
                    "(SELECT DISTINCT ON (message_id) * FROM staged_drafts ORDER BY message_id) d "
                    "JOIN new_triage n ON n.message_id = d.message_id AND n.decision = 'auto_answer' "
                    "WHERE NOT EXISTS (SELECT 1 FROM reply_drafts r WHERE r.message_id = d.message_id "
                    "                  AND r.model_version = $model)",
                    {"model": model_version},
                ).fetchall()[0][0]
            con.execute("DROP TABLE new_triage")
    finally:
        con.execute("DROP VIEW IF EXISTS staged_triage")
        con.execute("DROP VIEW IF EXISTS staged_drafts")
    return TriageCommit(staged, inserted, staged - inserted, int(n_drafts))


def run_summary(con: duckdb.DuckDBPyConnection, triage_run_id: str) -> dict[str, Any]:
    """Counts of one run's committed rows: per queue (with urgent and auto-answered), and totals."""
    queues = fetch_dicts(con, """
        SELECT queue, count(*) AS messages, count(*) FILTER (WHERE urgent) AS urgent,
               count(*) FILTER (WHERE decision = 'auto_answer') AS auto_answered,
               count(*) FILTER (WHERE decision = 'human') AS human
        FROM support_scores WHERE triage_run_id = ? GROUP BY 1 ORDER BY 1""", [triage_run_id])
    total = sum(q["messages"] for q in queues)
    auto = sum(q["auto_answered"] for q in queues)
    return {"queues": queues, "messages": total, "urgent": sum(q["urgent"] for q in queues),
            "auto_answered": auto, "coverage": round(auto / total, 4) if total else 0.0}


def unrouted_intents(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Intents whose messages went to the default queue because the routing table had no row for
    them, with how many messages and when last (from each message's current triage)."""
    return fetch_dicts(con, f"""
        SELECT intent_label AS intent, count(*) AS messages, max(scored_at) AS last_seen
        FROM v_support_triage WHERE intent_label IS NOT NULL AND reasons LIKE '%{UNROUTED_REASON}%'
        GROUP BY 1 ORDER BY 2 DESC, 1""")
