"""The ``model_registry`` table: versions, the two serving aliases, promotions and rollbacks.

Model files live in versioned directories (``models.registry``); this module records them and
moves the serving aliases (migration 007 says who scores what):

- ``champion``: the best model by the champion gate; ``score-gpu`` serves it, it teaches the
  distilled student and feeds recommendations. Held through ``stage = 'champion'`` (the old
  champion is ``archived``), as before.
- ``cpu-champion``: what the hourly CPU scorer serves, normally the distilled student. Held
  through the ``cpu_champion`` flag, which never changes ``stage``; when no model holds it, it
  resolves to the champion, so a project without a student behaves as it did before.
- ``intent-champion``: the customer-service intent model the triage flow serves (migration 009).
  Held through the ``intent_champion`` flag; only a model with an intent head may hold it, and
  such a model may hold no news alias. No fallback: without one, triage waits.

Every move is an event in ``model_promotions`` with its alias, so a rollback of either alias knows
what held it before and the history stays auditable.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb

from warehouse.connection import fetch_dicts, transaction

COLUMNS = ["model_version", "backbone", "pretrained_from", "heads", "metrics", "val_score",
           "baseline_val_score", "served", "val_split_id", "data_snapshot", "artifact_path", "flow_run_id"]

CHAMPION = "champion"
CPU_CHAMPION = "cpu-champion"
INTENT_CHAMPION = "intent-champion"
ALIASES = (CHAMPION, CPU_CHAMPION, INTENT_CHAMPION)
# The aliases held through a flag column (never through `stage`), and that column.
FLAGS = {CPU_CHAMPION: "cpu_champion", INTENT_CHAMPION: "intent_champion"}


def check_alias(alias: str) -> str:
    """``alias`` itself, or a one-line ValueError naming the aliases there are."""
    if alias not in ALIASES:
        raise ValueError(f"unknown alias {alias!r}: use {', '.join(ALIASES)}")
    return alias


def record_model(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> None:
    """Insert a new version as a ``candidate`` holding no alias (JSON fields may be dicts)."""
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
    """One version's row (JSON decoded), or None. An alias resolves (:func:`resolve`)."""
    if version in ALIASES:
        return resolve(con, version)
    rows = fetch_dicts(con, "SELECT * FROM model_registry WHERE model_version = ?", [version])
    return _decode(rows[0]) if rows else None


def holder(con: duckdb.DuckDBPyConnection, alias: str) -> dict[str, Any] | None:
    """The row that holds ``alias`` itself (no fallback), or None."""
    where = "stage = 'champion'" if check_alias(alias) == CHAMPION else FLAGS[alias]
    rows = fetch_dicts(con, f"SELECT * FROM model_registry WHERE {where}")
    return _decode(rows[0]) if rows else None


def resolve(con: duckdb.DuckDBPyConnection, alias: str) -> dict[str, Any] | None:
    """The row serving ``alias``: its holder; for ``cpu-champion`` without one, the champion."""
    row = holder(con, alias)
    if row is None and alias == CPU_CHAMPION:
        return holder(con, CHAMPION)
    return row


def champion(con: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    """The current champion row, or None before the first promotion."""
    return holder(con, CHAMPION)


def serving(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """``v_serving``: ``{alias, model_version, held, scored_by}`` per alias that resolves to a model."""
    return fetch_dicts(con, "SELECT * FROM v_serving ORDER BY alias")


def list_models(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every version, newest first."""
    return [_decode(r) for r in fetch_dicts(con, "SELECT * FROM model_registry ORDER BY created_at DESC")]


def _event(con: duckdb.DuckDBPyConnection, action: str, old: str | None, new: str | None, reason: str,
           alias: str) -> None:
    con.execute("INSERT INTO model_promotions (event_at, action, from_version, to_version, reason, alias) "
                "VALUES (now(), ?, ?, ?, ?, ?)", [action, old, new, reason, alias])


def _hand_over(con: duckdb.DuckDBPyConnection, alias: str, old: str | None, new: str | None) -> None:
    """Move ``alias`` from ``old`` to ``new`` (either may be None); callers hold a transaction."""
    if alias == CHAMPION:
        if old:
            con.execute("UPDATE model_registry SET stage = 'archived' WHERE model_version = ?", [old])
        if new:
            con.execute("UPDATE model_registry SET stage = 'champion' WHERE model_version = ?", [new])
        return
    # The flag aliases never touch `stage`: a student that loses cpu-champion stays what it was.
    flag = FLAGS[alias]
    if old:
        con.execute(f"UPDATE model_registry SET {flag} = false WHERE model_version = ?", [old])
    if new:
        con.execute(f"UPDATE model_registry SET {flag} = true WHERE model_version = ?", [new])


def is_intent_model(row: dict[str, Any]) -> bool:
    """True for a version with an intent head (a customer-service model, not a news one)."""
    return bool((row.get("heads") or {}).get("intent_labels"))


def check_fits(row: dict[str, Any], alias: str) -> None:
    """ValueError unless ``row``'s heads suit ``alias``: intent models serve intent-champion, and only it."""
    intent = is_intent_model(row)
    if alias == INTENT_CHAMPION and not intent:
        raise ValueError(f"{row['model_version']} has no intent head: it cannot serve {INTENT_CHAMPION}")
    if alias != INTENT_CHAMPION and intent:
        raise ValueError(f"{row['model_version']} is an intent model: it can serve {INTENT_CHAMPION} only, not {alias}")


def promote(con: duckdb.DuckDBPyConnection, version: str, reason: str, alias: str = CHAMPION) -> None:
    """Give ``alias`` to ``version`` in one transaction (a replaced champion is archived).

    KeyError: no such version. ValueError: an unknown alias, ``version`` holds it already, or its
    heads do not suit the alias (:func:`check_fits`).
    """
    check_alias(alias)
    row = get_model(con, version)
    if row is None:
        raise KeyError(f"no model version {version!r}")
    check_fits(row, alias)
    with transaction(con):
        old = holder(con, alias)
        if old and old["model_version"] == version:
            raise ValueError(f"{version} already holds {alias}")
        _hand_over(con, alias, old["model_version"] if old else None, version)
        _event(con, "promote", old["model_version"] if old else None, version, reason, alias)


def refuse(con: duckdb.DuckDBPyConnection, version: str, reason: str, alias: str = CHAMPION) -> None:
    """Record that ``version`` was not given ``alias``, and why (``from_version``: what keeps serving it)."""
    cur = resolve(con, check_alias(alias))
    _event(con, "refuse", cur["model_version"] if cur else None, version, reason, alias)


def _previous(con: duckdb.DuckDBPyConnection, alias: str, version: str, actions: tuple[str, ...]) -> str | None:
    """``from_version`` of the latest ``actions`` event that gave ``alias`` to ``version``."""
    rows = con.execute(
        f"SELECT from_version FROM model_promotions WHERE to_version = ? AND coalesce(alias, 'champion') = ? "
        f"AND action IN ({', '.join('?' for _ in actions)}) ORDER BY event_at DESC LIMIT 1",
        [version, alias, *actions],
    ).fetchall()
    return rows[0][0] if rows else None


def rollback(con: duckdb.DuckDBPyConnection, alias: str = CHAMPION) -> tuple[str, str | None]:
    """Give ``alias`` back to the model its holder replaced; returns ``(demoted, restored)``.

    The first champion has nothing to roll back to (ValueError). The first cpu-champion does:
    rolling it back clears the alias, so it falls back to the champion again (``restored`` None).
    """
    check_alias(alias)
    cur = holder(con, alias)
    if cur is None:
        raise ValueError("there is no champion to roll back" if alias == CHAMPION else
                         "no model holds cpu-champion (it falls back to the champion): there is nothing to roll back"
                         if alias == CPU_CHAMPION else f"no model holds {alias}: there is nothing to roll back")
    demoted = cur["model_version"]
    previous = _previous(con, alias, demoted, ("promote", "rollback"))
    if previous is None and alias != CPU_CHAMPION:
        raise ValueError(f"{demoted} was the first {alias}: there is nothing to roll back to")
    with transaction(con):
        _hand_over(con, alias, demoted, previous)
        # The restored holder's "previous" is what it replaced originally: look it up so a second
        # rollback keeps walking back through history.
        before = _previous(con, alias, previous, ("promote",)) if previous else None
        _event(con, "rollback", before, previous, f"rolled back from {demoted}", alias)
    return demoted, previous
