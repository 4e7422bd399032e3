"""The ``model_registry`` table: versions, the champion alias, promotions and rollbacks.

Model files live in versioned directories (``models.registry``); this module records them and
moves the ``champion`` alias. Every move is an event in ``model_promotions``, so rollback knows
what the previous champion was and the history stays auditable.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb

from warehouse.connection import fetch_dicts, transaction

COLUMNS = ["model_version", "backbone", "pretrained_from", "heads", "metrics", "val_score",
           "baseline_val_score", "served", "val_split_id", "data_snapshot", "artifact_path", "flow_run_id"]


def record_model(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> None:
    """Insert a new version as a ``candidate`` (JSON fields may be dicts)."""
    values = [json.dumps(row.get(c), default=str) if c in ("heads", "metrics", "data_snapshot") else row.get(c)
              for c in COLUMNS]
    con.execute(
        f"INSERT INTO model_registry ({', '.join(COLUMNS)}, created_at, stage) "
        f"VALUES ({', '.join('?' for _ in COLUMNS)}, now(), 'candidate')",
        values,
    )


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("heads", "metrics", "data_snapshot"):
        if isinstance(row.get(key), str):
            row[key] = json.loads(row[key])
    return row


def get_model(con: duckdb.DuckDBPyConnection, version: str) -> dict[str, Any] | None:
    """One version's row (JSON decoded), or None. ``champion`` resolves the alias."""
    if version == "champion":
        return champion(con)
    rows = fetch_dicts(con, "SELECT * FROM model_registry WHERE model_version = ?", [version])
    return _decode(rows[0]) if rows else None


def champion(con: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    """The current champion row, or None before the first promotion."""
    rows = fetch_dicts(con, "SELECT * FROM model_registry WHERE stage = 'champion'")
    return _decode(rows[0]) if rows else None


def list_models(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every version, newest first."""
    return [_decode(r) for r in fetch_dicts(con, "SELECT * FROM model_registry ORDER BY created_at DESC")]


def _event(con: duckdb.DuckDBPyConnection, action: str, old: str | None, new: str | None, reason: str) -> None:
    con.execute("INSERT INTO model_promotions VALUES (now(), ?, ?, ?, ?)", [action, old, new, reason])


def promote(con: duckdb.DuckDBPyConnection, version: str, reason: str) -> None:
    """Make ``version`` the champion (the old champion is archived), in one transaction."""
    if get_model(con, version) is None:
        raise KeyError(f"no model version {version!r}")
    with transaction(con):
        old = champion(con)
        if old:
            con.execute("UPDATE model_registry SET stage = 'archived' WHERE model_version = ?", [old["model_version"]])
        con.execute("UPDATE model_registry SET stage = 'champion' WHERE model_version = ?", [version])
        _event(con, "promote", old["model_version"] if old else None, version, reason)


def refuse(con: duckdb.DuckDBPyConnection, version: str, reason: str) -> None:
    """Record that ``version`` was not promoted, and why."""
    cur = champion(con)
    _event(con, "refuse", cur["model_version"] if cur else None, version, reason)


def rollback(con: duckdb.DuckDBPyConnection) -> tuple[str, str]:
    """Give the champion alias back to the model it replaced; returns (demoted, restored)."""
    cur = champion(con)
    if cur is None:
        raise ValueError("there is no champion to roll back")
    rows = con.execute(
        "SELECT from_version FROM model_promotions WHERE to_version = ? AND action IN ('promote', 'rollback') "
        "ORDER BY event_at DESC LIMIT 1",
        [cur["model_version"]],
    ).fetchall()
    previous = rows[0][0] if rows else None
    if previous is None:
        raise ValueError(f"{cur['model_version']} was the first champion: there is nothing to roll back to")
    with transaction(con):
        con.execute("UPDATE model_registry SET stage = 'archived' WHERE model_version = ?", [cur["model_version"]])
        con.execute("UPDATE model_registry SET stage = 'champion' WHERE model_version = ?", [previous])
        # The restored champion's "previous" is what it replaced originally: look it up so a
        # second rollback keeps walking back through history.
        before = con.execute(
            "SELECT from_version FROM model_promotions WHERE to_version = ? AND action = 'promote' "
            "ORDER BY event_at DESC LIMIT 1", [previous]).fetchall()
        _event(con, "rollback", before[0][0] if before else None, previous,
               f"rolled back from {cur['model_version']}")
    return cur["model_version"], previous
