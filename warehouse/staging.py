"""Stage one ingest batch: read the input, normalise it, write ``normalized.parquet``.

Staging happens in an in-memory DuckDB, so it holds no warehouse lock and can run on any worker.
A batch is a folder ``<staging>/<batch_id>/`` with ``manifest.json`` and ``normalized.parquet``;
validation adds ``failures.parquet`` and ``validation.json``; the commit loads all of it in one
transaction and then removes the folder. Tasks pass the folder path, never the data.

Every staging folder (ingest batches here, score and recommendation run folders in
``scores.py`` / ``recommend.py``) carries ``owner.json``: the host, boot, pid namespace, pid and
start time of the process that made it. A run killed before its commit leaves its folder behind; the next flow on
any machine sharing the staging directory calls ``prune_staging``, which removes at once every
folder whose owner was on this host and is gone, and falls back to an age limit for folders it
cannot judge (another host, no owner file). Live runs' folders are never touched.

Inputs: a records frame from any Python reader (CSV, RSS, public datasets), or a JSONL / Parquet
file read natively by DuckDB. JSONL has a fast path (``read_json`` with typed columns) and an
exact path (line by line, so every malformed line is kept with its reason); the exact path runs
whenever the fast one meets a line it could not read.

``write_parquet=False`` (the one-pass ingest of :mod:`warehouse.direct`) keeps the batch in the
staging connection instead: table ``batch`` holds the normalised rows with ``raw`` left NULL, and
``staged`` (a table, or a view over ``staged_input`` for natively read files) still gives each
record's ``raw`` by ``record_no``, so it is rendered only for the rows that end in quarantine.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import duckdb
import pandas as pd

from core.processes import start_ticks
from core.formats import BEHAVIOR_COLUMNS, RECORD_COLUMNS, SUPPORT_COLUMNS, map_columns
from warehouse.connection import scalar, sql_literal

Target = Literal["articles", "behaviors", "support_messages"]
NORMALIZE_SQL = Path(__file__).with_name("normalize.sql")
NORMALIZE_BEHAVIORS_SQL = Path(__file__).with_name("normalize_behaviors.sql")
NORMALIZE_SUPPORT_SQL = Path(__file__).with_name("normalize_support.sql")
# Each target's frame columns and normalising SQL.
FRAME_COLUMNS: dict[str, list[str]] = {
    "articles": RECORD_COLUMNS, "behaviors": BEHAVIOR_COLUMNS, "support_messages": SUPPORT_COLUMNS,
}
SAMPLE_LINES = 2000
# Column names of `staged_input` (files read natively) that no input column is expected to use.
RECORD_NO, ROW = "__np_record_no", "__np_row"


@dataclass
class Manifest:
    """What a staged batch is: written as ``manifest.json`` beside the staged data."""

    batch_id: str
    source: str
    target: Target
    input: str
    started_at: str
    rows: int = 0
    input_columns: list[str] = field(default_factory=list)
    column_map: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    fingerprint: dict[str, Any] | None = None  # file inputs: {path, size, mtime_ns}
    http_validators: dict[str, str | None] | None = None  # feeds: {etag, last_modified}
    label_map: dict[str, str] | None = None  # user labels -> ours, e.g. {"bearish": "negative"}
    flow_run_id: str | None = None

    def write(self, batch_dir: Path) -> None:
        """Write this manifest to ``batch_dir/manifest.json``."""
        (batch_dir / "manifest.json").write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")

    @classmethod
    def read(cls, batch_dir: Path) -> Manifest:
        """Read ``batch_dir/manifest.json``."""
        return cls(**json.loads((batch_dir / "manifest.json").read_text(encoding="utf-8")))


def new_batch(staging_dir: Path, source: str, target: Target, input_name: str) -> tuple[Path, Manifest]:
    """Create an empty batch folder with a fresh, sortable batch id."""
    now = datetime.now(UTC)
    batch_id = f"{now:%Y%m%dT%H%M%S}-{source[:24]}-{uuid.uuid4().hex[:8]}"
    batch_dir = Path(staging_dir) / batch_id
    batch_dir.mkdir(parents=True, exist_ok=False)
    claim(batch_dir)
    manifest = Manifest(batch_id, source, target, input_name, now.isoformat())
    return batch_dir, manifest


OWNER_FILE = "owner.json"


def _this_machine() -> dict[str, str | None]:
    """What must match for a pid in ``owner.json`` to mean a process here: host name, boot id
    (a reboot reuses pids) and pid namespace (containers sharing a host name and a volume)."""
    try:
        boot_id: str | None = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pidns: str | None = str(Path("/proc/self/ns/pid").stat().st_ino)
    except OSError:
        boot_id = pidns = None
    return {"host": socket.gethostname(), "boot_id": boot_id, "pidns": pidns}


def export_parts(con: duckdb.DuckDBPyConnection, table: str, key: str, columns: str, out_dir: Path) -> list[str]:
    """Write temp ``table`` (with a ``part`` column: 0, 1, ...) as ``input-NNNNN.parquet`` files, one per
    part, rows in ``key`` order; claim ``out_dir`` when there is any; drop ``table``. Returns the paths.

    The hand-off of a plan to its tasks (score shards, triage batches): each file is one task's input.
    """
    n_parts = int(con.execute(f"SELECT coalesce(max(part) + 1, 0) FROM {table}").fetchone()[0])
    paths = []
    if n_parts:
        out_dir.mkdir(parents=True, exist_ok=True)
        claim(out_dir)  # a killed run's folder is pruned by the next flow (prune_staging)
    for i in range(n_parts):
        path = out_dir / f"input-{i:05d}.parquet"
        con.execute(f"COPY (SELECT {columns} FROM {table} WHERE part = {i} ORDER BY {key}) "
                    f"TO {sql_literal(path)} (FORMAT parquet)")
        paths.append(str(path))
    con.execute(f"DROP TABLE {table}")
    return paths


def claim(folder: Path) -> None:
    """Record in ``folder/owner.json`` that this process owns the staging folder.

    Machine identity (:func:`_this_machine`), pid and the pid's start ticks, so a recycled pid
    is not taken for the owner. Written (atomically) right after the folder is made, before any
    data; a folder without the file is judged by its age.
    """
    owner = {**_this_machine(), "pid": os.getpid(), "start_ticks": start_ticks(os.getpid())}
    tmp = Path(folder) / f".{OWNER_FILE}.tmp"
    tmp.write_text(json.dumps(owner), encoding="utf-8")
    os.replace(tmp, Path(folder) / OWNER_FILE)


def owner_gone(folder: Path, here: dict[str, str | None] | None = None) -> bool | None:
    """True when the folder's owner ran on this machine and has exited (its run was killed or
    crashed); False when it is alive; None when this process cannot tell (no or unreadable owner
    file, another host, boot or pid namespace, no /proc): the caller falls back to the age.
    ``here`` is :func:`_this_machine` (computed once by :func:`prune_staging`)."""
    here = here or _this_machine()
    try:
        owner = json.loads((Path(folder) / OWNER_FILE).read_text(encoding="utf-8"))
        pid, ticks = int(owner["pid"]), owner["start_ticks"]
        if ticks is None or any(owner.get(k) != v or v is None for k, v in here.items()):
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    now = start_ticks(pid)
    if now is None:
        return None
    return now != str(ticks)  # "" (no such live process) or another start: the pid was recycled


def prune_staging(staging_dir: Path, older_than_s: float) -> list[str]:
    """Remove staging folders left behind by crashed or killed runs; returns their names.

    Nothing ever commits such a folder: the re-run stages its input again under a new id. A
    folder goes at once when its owner (``owner.json``) ran on this host and is gone, and
    otherwise only when older than ``older_than_s``, when no live run can still be using it.
    A folder whose owner on this host is alive is kept whatever its age (a long run).
    """
    cutoff = time.time() - older_than_s
    here = _this_machine()
    removed = []
    for folder in Path(staging_dir).glob("*"):
        if not folder.is_dir():
            continue
        gone = owner_gone(folder, here)
        if gone or (gone is None and folder.stat().st_mtime < cutoff):
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                removed.append(folder.name)
    return sorted(removed)


def _is_view(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(scalar(con, "SELECT count(*) FROM duckdb_views() WHERE view_name = ? AND NOT internal", [name]))


def _finish(
    con: duckdb.DuckDBPyConnection, batch_dir: Path, manifest: Manifest, write_parquet: bool = True
) -> Manifest:
    """Normalise ``staged`` and write the batch files (``write_parquet=False``: table ``batch``)."""
    if manifest.label_map and manifest.target != "behaviors" and _is_view(con, "staged"):
        # The label mapping below updates rows: a file read natively is staged as a view.
        con.execute("CREATE OR REPLACE TABLE staged_rows AS SELECT * FROM staged")
        con.execute("DROP VIEW staged")
        con.execute("ALTER TABLE staged_rows RENAME TO staged")
    if manifest.label_map and manifest.target != "behaviors":
        # Map the user's label names onto the head's classes before validation sees them
        # (case-insensitive); unmapped labels pass through and are judged by the suite.
        cases = " ".join(f"WHEN {sql_literal(k.lower())} THEN {sql_literal(v)}" for k, v in manifest.label_map.items())
        con.execute(f"UPDATE staged SET label = CASE lower(trim(label)) {cases} ELSE label END WHERE label IS NOT NULL")
    sql_file = {"articles": NORMALIZE_SQL, "behaviors": NORMALIZE_BEHAVIORS_SQL,
                "support_messages": NORMALIZE_SUPPORT_SQL}[manifest.target]
    if manifest.target == "support_messages":
        # Support text is cleaned and timestamps parsed exactly as news: reuse normalize.sql's
        # macros (the part before its articles view) rather than a copy that could drift.
        macros = NORMALIZE_SQL.read_text(encoding="utf-8").split("CREATE OR REPLACE TEMP VIEW normalized")[0]
        con.execute(macros)
    # A view cannot take parameters: the default source goes in as an escaped literal.
    sql = sql_file.read_text(encoding="utf-8").replace("$default_source", sql_literal(manifest.source))
    con.execute(sql)
    if write_parquet:
        # `normalized` is a view: it streams straight into the Parquet file (COPY returns the count).
        out = batch_dir / "normalized.parquet"
        # A small dictionary limit: DuckDB otherwise tries to dictionary-encode every long, unique
        # text column (raw, body), which costs more than the whole normalisation.
        manifest.rows = int(scalar(con, f"COPY normalized TO '{out}' (FORMAT parquet, DICTIONARY_SIZE_LIMIT 4096)"))
    else:
        # One pass in this connection: `raw` is not rendered here (see the module docstring).
        # Rows carry their record_no, so `batch` need not keep the input's order (kept, it makes
        # this a single-threaded copy); from here on nothing in this connection needs it.
        con.execute("SET preserve_insertion_order = false")
        con.execute("CREATE OR REPLACE TABLE batch AS SELECT * REPLACE (NULL::VARCHAR AS raw) FROM normalized")
        manifest.rows = int(scalar(con, "SELECT count(*) FROM batch"))
    manifest.write(batch_dir)
    return manifest


def stage_frame(
    con: duckdb.DuckDBPyConnection, batch_dir: Path, manifest: Manifest, frame: pd.DataFrame,
    *, write_parquet: bool = True,
) -> Manifest:
    """Stage a records frame (a behaviors / support frame for those targets)."""
    columns = FRAME_COLUMNS[manifest.target]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"records frame lacks columns {missing}")
    con.register("incoming", frame[columns])
    cols = ", ".join(c if c == "record_no" else f"CAST({c} AS VARCHAR) AS {c}" for c in columns)
    con.execute(f"CREATE OR REPLACE TABLE staged AS SELECT {cols} FROM incoming")
    con.unregister("incoming")
    return _finish(con, batch_dir, manifest, write_parquet)


def _select_records(
    available: dict[str, str], expr: str, defaults: dict[str, str], extra: dict[str, str] | None = None
) -> str:
    """SELECT list producing RECORD_COLUMNS (minus record_no/raw/error).

    ``available`` maps fields to input columns, each read with the ``expr`` template;
    ``extra`` maps fields to ready SQL expressions; ``defaults`` fill the rest with constants.
    """
    parts = []
    for col in RECORD_COLUMNS:
        if col in ("record_no", "raw", "error"):
            continue
        if extra and col in extra:
            parts.append(f"CAST({extra[col]} AS VARCHAR) AS {col}")
        elif col in available:
            parts.append(f"CAST({expr.format(available[col])} AS VARCHAR) AS {col}")
        elif col in defaults:
            parts.append(f"{sql_literal(defaults[col])} AS {col}")
        else:
            parts.append(f"NULL::VARCHAR AS {col}")
    return ", ".join(parts)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _nameable(key: str) -> bool:
    """A JSON key DuckDB can name: not empty, and valid UTF-8 (``"\\ud800"`` decodes to a lone
    surrogate, which no UTF-8 text can hold)."""
    if not key:
        return False
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _sample_keys(path: Path) -> list[str]:
    """Keys seen in the first JSON objects of a JSONL file, in first-seen order."""
    keys: dict[str, None] = {}
    with path.open("rb") as fh:
        for i, line in enumerate(fh):
            if i >= SAMPLE_LINES:
                break
            try:
                obj = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(obj, dict):
                keys.update(dict.fromkeys(obj))
    return list(keys)


def stage_jsonl(
    con: duckdb.DuckDBPyConnection,
    batch_dir: Path,
    manifest: Manifest,
    path: Path,
    *,
    column_map: dict[str, str] | None = None,
    defaults: dict[str, str] | None = None,
    write_parquet: bool = True,
) -> Manifest:
    """Stage a JSON Lines file of article records."""
    defaults = defaults or {}
    keys = _sample_keys(path)
    mapping = map_columns([k for k in keys if _nameable(k)], column_map)
    manifest.input_columns = [k if _nameable(k) else k.encode("utf-8", "backslashreplace").decode() for k in keys]
    manifest.column_map = mapping
    if not keys or not all(_nameable(k) for k in keys) or len({k.lower() for k in keys}) < len(keys):
        # No object to learn the keys from, or keys DuckDB cannot name as columns: "", a lone
        # surrogate, or twins that differ only in case (DuckDB names are case-insensitive).
        manifest.notes.append("reading line by line (no usable JSON keys in the first lines)")
        return _stage_jsonl_exact(con, batch_dir, manifest, path, mapping, defaults, keys, write_parquet)
    # Fast path: one DuckDB pass reads every line with typed columns into `staged_input`; the
    # view `staged` maps them to record fields. `raw` is the object re-serialised from its keys
    # (rendered only where it is read); keys that map to no record field are kept in `meta`. A
    # line DuckDB could not read comes back with every key NULL (a raw of all nulls): then the
    # whole file goes through the exact, line-by-line path instead.
    # Record fields are read as text; other keys keep their JSON type for `meta` (as on the
    # exact path, where json_extract keeps types).
    unmapped = [k for k in keys if k not in mapping.values()]
    typed = ", ".join(f"{sql_literal(k)}: '{'JSON' if k in unmapped else 'VARCHAR'}'" for k in keys)
    extra = {}
    if unmapped and "meta" not in mapping:
        pairs = ", ".join(f"{_quote_ident(k)} := {_quote_ident(k)}" for k in unmapped)
        extra["meta"] = f"to_json(struct_pack({pairs}))"
    select = _select_records(mapping, '"{}"', defaults, extra)
    raw = "to_json(struct_pack(" + ", ".join(f"{_quote_ident(k)} := {_quote_ident(k)}" for k in keys) + "))::VARCHAR"
    # A line DuckDB could not read: every key NULL, i.e. its raw would render as all nulls (a JSON
    # null read into a JSON column renders as null too).
    all_null = " AND ".join(
        f"({_quote_ident(k)} IS NULL OR json_type({_quote_ident(k)}) = 'NULL')" if k in unmapped
        else f"{_quote_ident(k)} IS NULL"
        for k in keys
    )
    # A table made by one CREATE TABLE AS keeps the file's order in its row ids, which cost
    # nothing (row_number() is a pass of its own); a key named rowid would hide them.
    shadowed = any(k.lower() == "rowid" for k in keys)
    number, record_no = (f"row_number() OVER () AS {RECORD_NO}, ", RECORD_NO) if shadowed else ("", "rowid + 1")
    try:
        con.execute(
            f"""CREATE OR REPLACE TABLE staged_input AS
                SELECT {number}*
                FROM read_json({sql_literal(str(path))}, format='newline_delimited',
                    ignore_errors=true, columns={{{typed}}}, maximum_object_size=268435456)"""
        )
        unreadable = scalar(con, f"SELECT count(*) FROM staged_input WHERE {all_null}")
    except duckdb.Error as exc:  # e.g. a file that is not JSON at all
        manifest.notes.append(f"fast JSON reader failed ({type(exc).__name__}); reading line by line")
        unreadable = -1
    if unreadable != 0:
        con.execute("DROP TABLE IF EXISTS staged_input")
        return _stage_jsonl_exact(con, batch_dir, manifest, path, mapping, defaults, keys, write_parquet)
    con.execute(
        f"""CREATE OR REPLACE VIEW staged AS
            SELECT {record_no} AS record_no, {raw} AS raw, {select}, NULL::VARCHAR AS error FROM staged_input"""
    )
    return _finish(con, batch_dir, manifest, write_parquet)


def _stage_jsonl_exact(
    con: duckdb.DuckDBPyConnection,
    batch_dir: Path,
    manifest: Manifest,
    path: Path,
    mapping: dict[str, str],
    defaults: dict[str, str],
    keys: list[str] | None = None,
    write_parquet: bool = True,
) -> Manifest:
    """Line-by-line JSONL staging: each unreadable line becomes a record with its reason.

    Lines are split and decoded in Python (exact line numbers, every byte kept in ``raw``); DuckDB
    then checks and extracts the JSON. Empty and whitespace-only lines are not records (DuckDB's
    read_json skips them too); their count goes to the batch notes.
    """
    numbers, texts, errors = [], [], []
    blank = 0
    with path.open("rb") as fh:
        for line_no, line in enumerate(fh, start=1):
            line = line.rstrip(b"\n").rstrip(b"\r")
            if line_no == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            if not line.strip():
                blank += 1
                continue
            error = None
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                text = line.decode("utf-8", "backslashreplace")
                error = f"line {line_no}: invalid UTF-8 bytes at offset {exc.start}"
            if "\x00" in text:  # raw NUL is never valid JSON; keep it visible in raw
                text = text.replace("\x00", "\\x00")
                error = error or f"line {line_no}: NUL byte (malformed JSON line)"
            numbers.append(line_no)
            texts.append(text)
            errors.append(error)
    if blank:
        manifest.notes.append(f"{blank} blank line(s) skipped (not records)")
    lines = pd.DataFrame({"line_no": pd.array(numbers, dtype="int64"), "line": pd.array(texts, dtype="string"),
                          "read_error": pd.array(errors, dtype="string")})
    con.register("lines_in", lines)
    con.execute("CREATE OR REPLACE TABLE lines AS SELECT * FROM lines_in")
    con.unregister("lines_in")
    # ``keys``: the JSON keys the caller sampled from the first lines (sampled here if not given).
    keys = _sample_keys(path) if keys is None else keys
    unmapped = [k for k in keys if k not in mapping.values() and _nameable(k)]
    extra = {}
    if unmapped and "meta" not in mapping:
        # json_object takes keys as strings, so odd keys are fine; the key "" has no JSON path
        # and stays in raw only.
        pairs = ", ".join(
            f"{sql_literal(k)}, json_extract(line, {sql_literal(chr(36) + '.' + json.dumps(k))})"
            for k in unmapped
        )
        extra["meta"] = f"json_object({pairs})"
    # A field whose key appears in several spellings (`Title` on one line, `title` on the next)
    # takes whichever the line has.
    for field, column in mapping.items():
        variants = [k for k in keys if k.lower() == column.lower()] or [column]
        paths = [sql_literal(chr(36) + "." + json.dumps(v)) for v in variants if v]
        if paths:
            extra.setdefault(field, "coalesce(" + ", ".join(f"json_extract_string(line, {p})" for p in paths) + ")")
    select = _select_records(mapping, "json_extract_string(line, '$.\"{}\"')", defaults, extra)
    con.execute(
        f"""CREATE OR REPLACE TABLE staged AS
            WITH parsed AS (
                SELECT row_number() OVER (ORDER BY line_no) AS record_no, line AS raw,
                       CASE WHEN read_error IS NOT NULL THEN read_error
                            WHEN NOT json_valid(line) THEN 'malformed JSON line'
                            WHEN json_type(line::JSON) <> 'OBJECT' THEN 'JSON value is not an object' END AS error,
                       CASE WHEN read_error IS NULL AND json_valid(line) AND json_type(line::JSON) = 'OBJECT'
                            THEN line END AS line
                FROM lines
            )
            SELECT record_no, raw, {select}, error FROM parsed"""
    )
    con.execute("DROP TABLE lines")
    return _finish(con, batch_dir, manifest, write_parquet)


def stage_parquet(
    con: duckdb.DuckDBPyConnection,
    batch_dir: Path,
    manifest: Manifest,
    path: Path,
    *,
    column_map: dict[str, str] | None = None,
    defaults: dict[str, str] | None = None,
    write_parquet: bool = True,
) -> Manifest:
    """Stage a Parquet file of article records; an unreadable file becomes one quarantined record."""
    defaults = defaults or {}
    src = sql_literal(str(path))
    try:
        names = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet({src})").fetchall()]
    except duckdb.Error as exc:
        manifest.notes.append("unreadable Parquet file")
        frame = pd.DataFrame(
            [{"record_no": 1, "raw": str(path), "error": f"unreadable Parquet file: {exc}"}]
        ).reindex(columns=RECORD_COLUMNS)
        return stage_frame(con, batch_dir, manifest, frame, write_parquet=write_parquet)
    mapping = map_columns(names, column_map)
    manifest.input_columns, manifest.column_map = names, mapping
    select = _select_records(mapping, f'{ROW}."{{}}"', defaults)
    # As for JSONL: the file's rows in a table (each row kept whole as one struct, so raw is its
    # to_json and the row ids are the record numbers), `staged` a view over it (raw rendered
    # only where read).
    con.execute(f"CREATE OR REPLACE TABLE staged_input AS SELECT p AS {ROW} FROM read_parquet({src}) p")
    con.execute(
        f"""CREATE OR REPLACE VIEW staged AS
            SELECT rowid + 1 AS record_no, to_json({ROW})::VARCHAR AS raw, {select},
                   NULL::VARCHAR AS error
            FROM staged_input"""
    )
    return _finish(con, batch_dir, manifest, write_parquet)
