"""DuckDB connections that follow the DuckDB 2.0 rules (see shared/docs/STACK_NOTES.md §3).

- One connection per task or call, opened and closed here; never shared across threads.
- Every result is drained (``fetchall``/``df``) before the next statement; helpers below do that.
- Sessions run in UTC so TIMESTAMPTZ values read and print the same everywhere.
- Only one process may hold the file read-write: writers are serialised by the caller (the tasks
  layer wraps writes in the Prefect ``duckdb-writer`` concurrency limit); readers use short
  read-only connections and retry with backoff while a writer holds the lock.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from core.settings import Settings

# Settings that make a connection unable to touch anything but its own database file:
# no COPY TO / read_csv of arbitrary paths, no ATTACH, no extension installs; then lock them.
SANDBOX_CONFIG: dict[str, Any] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
}


def _base_config(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if settings.duckdb_threads:
        config["threads"] = settings.duckdb_threads
    if settings.duckdb_memory_limit:
        config["memory_limit"] = settings.duckdb_memory_limit
    return config


def _session(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    # ICU is linked into the wheel but is not loaded yet when the config is applied, so the time
    # zone is set per session instead of in the connect() config.
    con.execute("SET TimeZone = 'UTC'")
    return con


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc)
    return "lock" in text.lower() or "Conflicting" in text


@contextmanager
def connect(settings: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse read-write (creating the file if needed) and close it afterwards.

    Callers must hold the writer slot (Prefect ``duckdb-writer`` limit) when they write. That slot
    orders writers only: an analyst's read-only connection in another process also locks the file
    (DuckDB allows one process to write, or several to read). Its reads are short, so the writer
    waits for it with jittered backoff, up to ``writer_lock_wait_s``, instead of failing the run.
    """
    path = Path(settings.warehouse_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + settings.writer_lock_wait_s
    delay = 0.05
    while True:
        try:
            raw = duckdb.connect(str(path), config=_base_config(settings))
            break
        except duckdb.IOException as exc:
            if not _is_lock_error(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 1.0)
    con = _session(raw)
    try:
        yield con
    finally:
        con.close()


class WarehouseInUse(RuntimeError):
    """This process already has the warehouse file open through another DuckDB instance."""


@contextmanager
def attach_warehouse(con: duckdb.DuckDBPyConnection, settings: Settings, alias: str = "np_wh") -> Iterator[str]:
    """Attach the warehouse read-write to ``con`` (an in-memory staging connection) as its default
    catalog, and detach it afterwards (which checkpoints it, as closing a connection does).

    For writers whose data is already in ``con``: no copy between databases. The same rules as
    :func:`connect`: the caller holds the writer slot, and a reader's lock in another process is
    waited out up to ``writer_lock_wait_s``. When this process already has the file open through
    :func:`connect` (another DuckDB instance), DuckDB refuses a second handle: that raises
    :class:`WarehouseInUse` at once, so the caller can write through :func:`connect` instead.
    Yields the name of the staging catalog (to name its tables while the warehouse is the default).
    """
    path = Path(settings.warehouse_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    home = scalar(con, "SELECT current_database()")
    deadline = time.monotonic() + settings.writer_lock_wait_s
    delay = 0.05
    while True:
        try:
            con.execute(f"ATTACH {sql_literal(str(path))} AS {alias}")
            break
        except duckdb.ResourceInUseException as exc:
            raise WarehouseInUse(str(exc)) from exc
        except duckdb.IOException as exc:
            if not _is_lock_error(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 1.0)
    try:
        con.execute(f"USE {alias}")
        yield home
    finally:
        con.execute(f"USE {home}")
        con.execute(f"DETACH {alias}")


@contextmanager
def connect_readonly(
    settings: Settings, *, sandboxed: bool = True, retries: int | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse read-only, retrying with jittered backoff while a writer holds it.

    ``sandboxed`` (default) also forbids file access, ATTACH and extension loading, so SQL typed
    by a user can read the warehouse and nothing else.
    """
    path = Path(settings.warehouse_path)
    if not path.exists():
        raise FileNotFoundError(f"no warehouse at {path}; run `newspulse ingest` or `newspulse demo` first")
    config = _base_config(settings)
    if sandboxed:
        config.update(SANDBOX_CONFIG)
    attempts = settings.reader_retries if retries is None else retries
    delay = 0.05
    for attempt in range(attempts + 1):
        try:
            con = _session(duckdb.connect(str(path), read_only=True, config=config))
            break
        except duckdb.IOException as exc:
            if not _is_lock_error(exc) or attempt == attempts:
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 2.0)
    try:
        if sandboxed:
            con.execute("SET lock_configuration = true")
        yield con
    finally:
        con.close()


@contextmanager
def connect_memory(settings: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB for staging and validation work that needs no warehouse lock."""
    con = _session(duckdb.connect(":memory:", config=_base_config(settings)))
    try:
        yield con
    finally:
        con.close()


def sql_literal(value: object) -> str:
    """``value`` as a quoted SQL string literal (for file paths in COPY / read_parquet, which take no parameters)."""
    return "'" + str(value).replace("'", "''") + "'"


def parquet_list(paths: list[str] | list[Path]) -> str:
    """A SQL list literal of file paths, for ``read_parquet([...])``."""
    return "[" + ", ".join(sql_literal(p) for p in paths) + "]"


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """``BEGIN`` ... ``COMMIT``, or ``ROLLBACK`` and re-raise if the block fails."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def fetch_dicts(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    """Run ``sql`` and return every row as a dict (the result is fully drained)."""
    cur = con.execute(sql, params or [])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> Any:
    """Run ``sql`` and return the first column of the first row (drained)."""
    rows = con.execute(sql, params or []).fetchall()
    return rows[0][0] if rows else None
