"""The analyst SQL path: read-only, sandboxed queries against the warehouse.

Connections here are opened ``read_only`` with external access disabled and the configuration
locked, so a query can read the warehouse's tables and views but cannot write, COPY to a file,
ATTACH another database, read arbitrary files (``read_csv('/etc/passwd')``) or install extensions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.settings import Settings
from warehouse.connection import connect_readonly


@dataclass
class QueryResult:
    """Columns, rows (at most ``limit``) and whether more rows were cut off."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool


def run_readonly(settings: Settings, sql: str, limit: int | None = 1000,
                 params: list[Any] | None = None) -> QueryResult:
    """Run one analyst query on a sandboxed read-only connection; waits out a busy writer.

    ``params`` binds ``?`` placeholders (values typed by a user never go into the SQL text).
    """
    with connect_readonly(settings, sandboxed=True) as con:
        cur = con.execute(sql, params or [])
        if cur.description is None:
            cur.fetchall()
            return QueryResult([], [], False)
        columns = [d[0] for d in cur.description]
        if limit is None:
            return QueryResult(columns, cur.fetchall(), False)
        rows = cur.fetchmany(limit + 1)
        truncated = len(rows) > limit
        cur.fetchall()  # drain the rest (DuckDB 2.0: results own the connection)
        return QueryResult(columns, rows[:limit], truncated)


def table_counts(settings: Settings, tables: list[str]) -> dict[str, int]:
    """Row counts of ``tables`` (missing tables count as 0)."""
    out: dict[str, int] = {}
    with connect_readonly(settings, sandboxed=True) as con:
        existing = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        for table in tables:
            out[table] = con.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0] if table in existing else 0
    return out
