"""The README's example queries ("SQL for analysts") run on the analyst connection (issue 18, "Docs").

Fast: every query binds against the migrated schema (views and columns exist). Slow: on an ingested
demo stream, the queries that need only ingested data return rows. The queries on scores, windows,
alerts and recommendations need a trained model; `newspulse demo` builds that warehouse.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from warehouse.connection import connect
from warehouse.migrate import migrate
from warehouse.query import run_readonly

README = Path(__file__).resolve().parents[2] / "README.md"
INGEST_ONLY = ("what was rejected today", "articles per source and day", "gold labels available for training")


def readme_queries() -> dict[str, str]:
    """``{comment: query}`` of the ```sql block under "SQL for analysts"."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## SQL for analysts"):]
    block = re.search(r"```sql\n(.*?)```", section, re.S).group(1)
    out: dict[str, str] = {}
    for chunk in re.split(r"^-- ", block, flags=re.M)[1:]:
        comment, _, sql = chunk.partition("\n")
        out[comment.strip()] = sql.strip().rstrip(";")
    return out


def test_readme_has_queries() -> None:
    queries = readme_queries()
    assert len(queries) >= 10 and all(q.upper().startswith("SELECT") for q in queries.values())
    assert all(any(key in c for c in queries) for key in INGEST_ONLY)


@pytest.mark.parametrize("comment", list(readme_queries()))
def test_readme_query_binds_on_the_schema(settings, comment: str) -> None:
    with connect(settings) as con:
        migrate(con)
    run_readonly(settings, readme_queries()[comment], limit=1)  # raises on an unknown view or column


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_ingest_queries_return_rows_on_the_demo_stream(settings) -> None:
    from flows.pipeline import pipeline_flow

    pipeline_flow(seed=3, days=3, articles_per_day=120, n_users=20, train=False)
    for comment, sql in readme_queries().items():
        if any(key in comment for key in INGEST_ONLY):
            assert run_readonly(settings, sql, limit=5).rows, comment
