"""Reliability: the analyst SQL path cannot write or read outside the warehouse; secrets do not leak.

1. **SQL sandbox**: every statement of :data:`ATTEMPTS` (INSERT, UPDATE, DELETE, CREATE, DROP,
   COPY TO, EXPORT, ATTACH, INSTALL/LOAD, SET, PRAGMA, CHECKPOINT, reading /etc/passwd and files
   outside the warehouse, glob) goes through ``warehouse.query.run_readonly`` and through
   ``newspulse sql`` (typer's CliRunner). Refused = the call raises a DuckDB error (CLI: exit code
   2), no target file appears, the output shows no ``root:x:0:0``, and the warehouse file's SHA-256
   and table counts are the same afterwards.
2. **Secrets**: a webhook URL carrying ``s3cret-token-<random>`` is planted in
   ``NEWSPULSE_ALERT_WEBHOOK_URL``; the monitor flow finds a spike and delivers an alert to a
   loopback receiver. Then the token is counted in the Prefect logs (``client.read_logs()``), every
   artifact (``client.read_artifacts()``), every VARCHAR column of the warehouse, every file under
   the runtime folder, and the log records this process emitted. All counts must be 0.
3. **Code scan**: ``torch.load`` without ``weights_only=True``, pickle/joblib, ``shell=True``,
   ``os.system``, builtin ``eval``/``exec`` in the project's code (models, sources, tasks, flows,
   warehouse, newspulse).

    python bench/reliability_security.py
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")
ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script (python bench/x.py): the repository on the path
    sys.path.insert(0, str(ROOT))

from bench.reliability_common import load_scored  # noqa: E402

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

PASSWD_MARK = "root:x:0:0"


# Statements DuckDB may run on a read-only connection without any effect outside the session:
# "allowed (no effect)" when the warehouse is unchanged and no file appeared; not counted as refused.
NO_EFFECT_OK = {"CREATE TEMP TABLE (session only)", "CHECKPOINT (no-op read-only)"}


def attempts(work: Path) -> list[tuple[str, str, Path | None]]:
    """``(name, sql, file that must not appear)`` for every hostile statement."""
    out = work / "out"
    outside = work / "outside.parquet"
    return [
        ("INSERT", "INSERT INTO articles (article_id, source, title) VALUES ('x', 'x', 'x')", None),
        ("UPDATE", "UPDATE articles SET title = 'pwned'", None),
        ("DELETE", "DELETE FROM articles", None),
        ("CREATE TABLE", "CREATE TABLE pwned AS SELECT 1 AS x", None),
        ("CREATE TEMP TABLE (session only)", "CREATE TEMP TABLE pwned AS SELECT 1 AS x", None),
        ("DROP", "DROP TABLE articles", None),
        ("ALTER", "ALTER TABLE articles ADD COLUMN pwned INT", None),
        ("COPY TO", f"COPY articles TO '{out}-copy.csv'", Path(f"{out}-copy.csv")),
        ("COPY TO parquet", f"COPY (SELECT 1) TO '{out}-copy.parquet' (FORMAT parquet)", Path(f"{out}-copy.parquet")),
        ("EXPORT DATABASE", f"EXPORT DATABASE '{out}-export'", Path(f"{out}-export")),
        ("ATTACH", f"ATTACH '{out}-attach.duckdb' AS x", Path(f"{out}-attach.duckdb")),
        ("ATTACH memory", "ATTACH ':memory:' AS m", None),
        ("INSTALL httpfs", "INSTALL httpfs", None),
        ("LOAD httpfs", "LOAD httpfs", None),
        ("SET external access", "SET enable_external_access = true", None),
        ("SET lock_configuration", "SET lock_configuration = false", None),
        ("SET threads", "SET threads = 1", None),
        ("PRAGMA profiling output", f"PRAGMA profiling_output = '{out}-profile.json'", Path(f"{out}-profile.json")),
        ("PRAGMA enable_profiling", "PRAGMA enable_profiling", None),
        ("CHECKPOINT (no-op read-only)", "CHECKPOINT", None),
        ("multi-statement", "SELECT 1; DROP TABLE articles", None),
        ("read_csv /etc/passwd", "SELECT * FROM read_csv('/etc/passwd')", None),
        ("read_text /etc/passwd", "SELECT * FROM read_text('/etc/passwd')", None),
        ("read_blob /etc/passwd", "SELECT * FROM read_blob('/etc/passwd')", None),
        ("replacement scan /etc/passwd", "SELECT * FROM '/etc/passwd'", None),
        ("read_json outside", f"SELECT * FROM read_json('{work}/outside.json')", None),
        ("read_parquet outside", f"SELECT * FROM read_parquet('{outside}')", None),
        ("glob /etc/*", "SELECT * FROM glob('/etc/*')", None),
        ("CREATE SECRET", "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", None),
        ("CREATE MACRO", "CREATE MACRO pwned(x) AS x", None),
    ]


def _fingerprint(settings: Any) -> tuple[str, dict[str, int]]:
    from warehouse.query import table_counts

    digest = hashlib.sha256(Path(settings.warehouse_path).read_bytes()).hexdigest()
    return digest, table_counts(settings, ["articles", "quarantine", "ingest_batches", "alerts", "scores"])


def _files_present(work: Path) -> set[str]:
    return {p.name for p in work.iterdir() if p.name.startswith("out-")}


@contextlib.contextmanager
def _env(**values: str | None) -> Iterator[None]:
    """Set (or unset, with None) environment variables and clear the cached settings."""
    from core.settings import get_settings

    old = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    get_settings.cache_clear()
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()


def _sql_sandbox(work: Path) -> dict[str, Any]:
    import duckdb
    from typer.testing import CliRunner

    from newspulse.cli import app
    from core.settings import Settings
    from warehouse.connection import connect
    from warehouse.migrate import migrate
    from warehouse.query import run_readonly

    work.mkdir(parents=True, exist_ok=True)
    settings = Settings(warehouse_path=work / "warehouse" / "sec.duckdb", home=work / "var")
    settings.ensure_dirs()
    with connect(settings) as con:
        migrate(con)
        con.execute("INSERT INTO articles (article_id, source, title, body, ingested_at, batch_id) "
                    "VALUES ('a1', 'sec', 'A headline', 'A body', now(), 'b1')")
    plain = duckdb.connect()
    plain.execute(f"COPY (SELECT 'outside-secret' AS s) TO '{work / 'outside.parquet'}' (FORMAT parquet)")
    plain.close()
    (work / "outside.json").write_text('{"s": "outside-secret"}\n', encoding="utf-8")
    before = _fingerprint(settings)
    runner = CliRunner()
    rows: list[dict[str, Any]] = []
    with _env(NEWSPULSE_WAREHOUSE_PATH=str(settings.warehouse_path), NEWSPULSE_HOME=str(settings.home)):
        for name, sql, target in attempts(work):
            entry: dict[str, Any] = {"name": name, "sql": sql}
            present = _files_present(work)
            # 1. the library path
            try:
                res = run_readonly(settings, sql)
                entry["api"] = "allowed"
                entry["api_output"] = str(res.rows[:3])[:200]
            except duckdb.Error as exc:
                entry["api"] = "refused"
                entry["api_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            except Exception as exc:  # refused, but not with a DuckDB error: report the type
                entry["api"] = "refused (other error)"
                entry["api_error"] = f"{type(exc).__name__}: {str(exc)[:160]}"
            # 2. the CLI
            cli = runner.invoke(app, ["sql", sql])
            entry["cli_exit"] = cli.exit_code
            entry["cli"] = "refused" if cli.exit_code == 2 else "allowed"
            leaked = PASSWD_MARK in cli.output or "outside-secret" in cli.output or PASSWD_MARK in entry.get(
                "api_output", "") or "outside-secret" in entry.get("api_output", "")
            new_files = sorted(_files_present(work) - present)
            entry["file_written"] = bool(new_files) or (target is not None and target.exists())
            entry["data_leaked"] = leaked
            entry["refused"] = (entry["api"].startswith("refused") and entry["cli"] == "refused"
                                and not entry["file_written"] and not leaked)
            entry["must_refuse"] = name not in NO_EFFECT_OK
            if entry["refused"]:
                entry["verdict"] = "refused"
            elif not entry["must_refuse"] and not entry["file_written"] and not leaked:
                entry["verdict"] = "allowed (no effect)"
            else:
                entry["verdict"] = "ALLOWED"
            rows.append(entry)
    after = _fingerprint(settings)
    return {
        "attempts": rows,
        "refused": sum(r["refused"] for r in rows),
        "must_refuse": sum(r["must_refuse"] for r in rows),
        "allowed": [r["name"] for r in rows if r["verdict"] == "ALLOWED"],
        "allowed_no_effect": [r["name"] for r in rows if r["verdict"] == "allowed (no effect)"],
        "warehouse_unchanged": before == after,
        "warehouse_counts": after[1],
    }


# --------------------------------------------------------------------------------------------
# secrets


def _load_spike(settings: Any) -> None:
    """A flat, already-scored stream with a negative burst on ZZZ (what ingest + score would write)."""
    import numpy as np
    import pandas as pd

    start = datetime(2026, 10, 1, tzinfo=UTC)
    rng = np.random.default_rng(7)
    days = 9
    secs = np.sort(rng.uniform(0, days * 86400, days * 24 * 20))
    rows = [{"ts": start + timedelta(seconds=float(s)), "tickers": ["AAA"] if rng.random() < 0.5 else ["BBB"],
             "neg": bool(rng.random() < 0.25)} for s in secs]
    spike = start + timedelta(days=8, hours=10)
    rows += [{"ts": spike + timedelta(seconds=float(rng.uniform(0, 3600))), "tickers": ["ZZZ"], "neg": j < 32}
             for j in range(40)]
    df = pd.DataFrame(rows)
    df["article_id"] = [f"s{i:06d}" for i in range(len(df))]
    model = "m20261001-000000-sec"
    load_scored(settings, df, model, "sec")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(record.getMessage())
        except Exception:  # a bad format string must not break the check
            self.lines.append(str(record.msg))


def _all_logs(client: Any) -> list[str]:
    out: list[str] = []
    offset = 0
    while True:
        page = client.read_logs(limit=200, offset=offset)
        if not page:
            return out
        out += [log.message for log in page]
        offset += len(page)


def _all_artifacts(client: Any) -> list[str]:
    out: list[str] = []
    offset = 0
    while True:
        page = client.read_artifacts(limit=200, offset=offset)
        if not page:
            return out
        out += [json.dumps(a.model_dump(mode="json"), default=str) for a in page]
        offset += len(page)


def _secret_leaks(work: Path) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.logging.handlers import APILogHandler

    from bench.reliability_fuzz import _scan_warehouse
    from newspulse.receiver import WebhookReceiver
    from core.settings import Settings

    token = f"s3cret-token-{secrets.token_hex(8)}"
    home = work / "var"
    wh = work / "warehouse" / "secret.duckdb"
    settings = Settings(warehouse_path=wh, home=home)
    settings.ensure_dirs()
    _load_spike(settings)
    capture = _Capture()
    root = logging.getLogger()
    prefect_loggers = [logging.getLogger(n) for n in ("prefect", "prefect.flow_runs", "prefect.task_runs")]
    old_levels = [lg.level for lg in prefect_loggers]
    receiver = WebhookReceiver()
    try:
        url = f"http://127.0.0.1:{receiver.port}/hook?token={token}"
        with _env(NEWSPULSE_WAREHOUSE_PATH=str(wh), NEWSPULSE_HOME=str(home), NEWSPULSE_ALERT_WEBHOOK_URL=url,
                  NEWSPULSE_ALERT_RETRY_BACKOFF_S="0.05", NEWSPULSE_ALERT_ALLOW_PRIVATE_URLS="true",
                  NEWSPULSE_ALERT_BLOCK=None, NEWSPULSE_ALERT_DELIVERY=None):
            from flows.monitor import monitor_flow

            root.addHandler(capture)
            for lg in prefect_loggers:  # ship INFO records to the API too, so there is something to grep
                lg.setLevel(logging.INFO)
            try:
                summary = monitor_flow(notify_backfill=True)
            finally:
                root.removeHandler(capture)
                for lg, level in zip(prefect_loggers, old_levels, strict=True):
                    lg.setLevel(level)
        with contextlib.suppress(Exception):
            APILogHandler.flush()
        time.sleep(1.0)  # the server writes logs asynchronously
        with get_client(sync_client=True) as client:
            logs = _all_logs(client)
            artifacts = _all_artifacts(client)
            blocks = [json.dumps(b.model_dump(mode="json"), default=str)
                      for b in client.read_block_documents(include_secrets=False)]
            # Positive control: the token is really in the system (the webhook block's secret field),
            # so a zero above means it was kept out, not that the grep cannot see it.
            control = sum(json.dumps(b.model_dump(mode="json"), default=str).count(token)
                          for b in client.read_block_documents(include_secrets=True))
        runtime_hits = {}
        for path in home.rglob("*"):
            if path.is_file():
                n = path.read_bytes().count(token.encode())
                if n:
                    runtime_hits[str(path.relative_to(home))] = n
        warehouse_hits = _scan_warehouse(settings, [token])[token]
        delivered = len(receiver.posts)
    finally:
        receiver.close()
    counts = {
        "prefect_logs": sum(m.count(token) for m in logs),
        "artifacts": sum(a.count(token) for a in artifacts),
        "block_documents (secrets hidden)": sum(b.count(token) for b in blocks),
        "warehouse": warehouse_hits,
        "runtime_files": sum(runtime_hits.values()),
        "process_log_records": sum(m.count(token) for m in capture.lines),
    }
    return {
        "alerts_delivered": delivered,
        "control_token_in_block_secrets": control,
        "monitor_delivered": len(summary.get("delivered") or []) if isinstance(summary, dict) else None,
        "scanned": {"prefect_logs": len(logs), "artifacts": len(artifacts), "block_documents": len(blocks),
                    "process_log_records": len(capture.lines)},
        "occurrences": counts,
        "total_occurrences": sum(counts.values()),
        "runtime_files_with_token": runtime_hits,
    }


# --------------------------------------------------------------------------------------------
# code scan

_SCAN_DIRS = ("models", "sources", "tasks", "flows", "warehouse", "newspulse")
_PATTERNS = {
    "torch.load without weights_only=True": re.compile(r"torch\.load\((?![^)]*weights_only\s*=\s*True)"),
    "pickle / joblib / dill": re.compile(r"^\s*(?:import|from)\s+(?:pickle|cPickle|joblib|dill)\b|\bpickle\.loads?\("),
    "np.load allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
    "(info) .bin/.pt/.pth file names": re.compile(r"\"[^\"]*\.(?:bin|pt|pth)\"|'[^']*\.(?:bin|pt|pth)'"),
    "shell=True / os.system / os.popen": re.compile(r"shell\s*=\s*True|\bos\.system\(|\bos\.popen\("),
    "builtin eval / exec": re.compile(r"(?<![\w.])(?:eval|exec)\("),
}


def code_scan() -> dict[str, Any]:
    hits: dict[str, list[str]] = {k: [] for k in _PATTERNS}
    safetensors_refs = 0
    for folder in _SCAN_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                code = line.split("#", 1)[0]
                safetensors_refs += "safetensors" in line
                for name, pat in _PATTERNS.items():
                    if pat.search(code) and '"""' not in code and "``" not in code:
                        hits[name].append(f"{path.relative_to(ROOT)}:{no}: {line.strip()[:120]}")
    risky = sum(len(v) for k, v in hits.items() if not k.startswith("(info)"))
    return {"hits": hits, "findings": risky, "safetensors_references": safetensors_refs}


# --------------------------------------------------------------------------------------------


def run(work: Path | None = None, secrets_check: bool = True) -> dict[str, Any]:
    """SQL sandbox attempts, planted-secret grep (needs a Prefect API; one is started if none) and code scan."""
    t0 = time.perf_counter()
    own = None
    if work is None:
        own = tempfile.TemporaryDirectory(prefix="np-sec-")
        work = Path(own.name)
    work = Path(work)
    result: dict[str, Any] = {"at": datetime.now(UTC).isoformat(timespec="seconds")}
    result["sql"] = _sql_sandbox(work / "sql")
    if secrets_check:
        from prefect.settings import PREFECT_API_URL

        if PREFECT_API_URL.value():
            result["secrets"] = _secret_leaks(work / "secrets")
        else:
            from prefect.testing.utilities import prefect_test_harness

            with prefect_test_harness(server_startup_timeout=120):
                result["secrets"] = _secret_leaks(work / "secrets")
    result["code"] = code_scan()
    result["seconds"] = round(time.perf_counter() - t0, 2)
    if own is not None:
        own.cleanup()
    return result


def report(result: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    sql = result["sql"]
    t = Table(title=f"Analyst SQL path: {sql['refused']}/{len(sql['attempts'])} refused "
                    f"({len(sql['allowed'])} allowed with effect), "
                    f"warehouse unchanged: {sql['warehouse_unchanged']}")
    for col in ("attempt", "run_readonly", "newspulse sql", "file written", "verdict"):
        t.add_column(col)
    for a in sql["attempts"]:
        t.add_row(a["name"], a["api"], f"{a['cli']} (exit {a['cli_exit']})", str(a["file_written"]),
                  "[red]ALLOWED" if a["verdict"] == "ALLOWED" else f"[green]{a['verdict']}")
    console.print(t)
    if "secrets" in result:
        s = result["secrets"]
        st = Table(title=f"Planted secret: {s['total_occurrences']} occurrences "
                         f"({s['alerts_delivered']} alert(s) delivered to the receiver)")
        st.add_column("where")
        st.add_column("scanned", justify="right")
        st.add_column("occurrences", justify="right")
        for where, n in s["occurrences"].items():
            st.add_row(where, str(s["scanned"].get(where.split(" ")[0], "-")), str(n))
        console.print(st)
    code = result["code"]
    ct = Table(title=f"Code scan: {code['findings']} risky hits "
                     f"({code['safetensors_references']} safetensors references)")
    ct.add_column("pattern")
    ct.add_column("hits", justify="right")
    ct.add_column("where", overflow="fold")
    for name, hits in code["hits"].items():
        ct.add_row(name, str(len(hits)), "\n".join(hits[:5]))
    console.print(ct)


def main() -> None:
    from core.settings import use_local_env

    use_local_env(PREFECT_LOGGING_LEVEL="WARNING")
    with tempfile.TemporaryDirectory(prefix="np-sec-") as tmp:
        result = run(Path(tmp))
    report(result)
    out = ROOT / "bench" / "results" / "reliability_security.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
