"""Concurrency: ingest, score and monitor flows at once while an analyst process reads.

Under one Prefect server (a temporary test harness unless the caller has one), three threads run
the real flows in loops for ``seconds``: ``ingest_flow`` on a new small JSONL file each time,
``score_flow`` on whatever is unscored, ``monitor_flow`` (delivery switched off). Every warehouse
write queues for the ``duckdb-writer`` concurrency limit (limit 1); the time each write waited for
the slot and held it is recorded. A separate analyst process runs read queries through
``warehouse.query.run_readonly`` in a loop (read-only connections that retry with backoff while a
writer holds the file lock) and records every query's latency, the retries it needed and any error.

Afterwards a final score pass runs and the warehouse is checked: every ingested record present
exactly once, every article scored exactly once by the champion. A flow run that failed (a lock
error reaching a writer, for instance) is counted; its file is ingested again at the end, as a
retried run would, so failures show as errors rather than as losses.

    python bench/reliability_concurrency.py [--seconds 120]

Used by ``bench/reliability.py`` through :func:`run` and :func:`report`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")
REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script (python bench/x.py): the repository on the path
    sys.path.insert(0, str(REPO))

from bench.reliability_common import settings_env  # noqa: E402

WORDS = "shares fell rose profit loss bank market oil said growth warns record deal cut the in on".split()
TICKERS = ["AAA", "BBB", "CCC", "DDD"]

ANALYST = textwrap.dedent(
    """
    import json, sys, time
    import warehouse.connection as wc
    from core.settings import get_settings
    from warehouse.query import run_readonly

    deadline = time.monotonic() + float(sys.argv[1])
    retries = [0]
    real_sleep = time.sleep

    class _Time:  # count the reader's backoff sleeps (one per lock retry)
        def __getattr__(self, name):
            return getattr(time, name)

        @staticmethod
        def sleep(s):
            retries[0] += 1
            real_sleep(s)

    wc.time = _Time()
    settings = get_settings()
    queries = [
        "SELECT count(*), count(DISTINCT article_id) FROM articles",
        "SELECT source, count(*) FROM articles GROUP BY 1 ORDER BY 2 DESC",
        "SELECT a.source, avg(s.sentiment_score), count(*) FROM articles a JOIN scores s USING (article_id) GROUP BY 1",
        "SELECT count(*) FROM quarantine",
        "SELECT status, count(*) FROM alerts GROUP BY 1",
    ]
    lat, errors, n = [], [], 0
    while time.monotonic() < deadline:
        sql = queries[n % len(queries)]
        n += 1
        t0 = time.perf_counter()
        try:
            run_readonly(settings, sql, limit=100)
            lat.append(time.perf_counter() - t0)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {str(exc)[:300]}")
        time.sleep(0.02)
    lat.sort()
    print(json.dumps({"queries": len(lat), "errors": len(errors), "error_samples": errors[:5],
                      "retries": retries[0], "p50_s": lat[len(lat) // 2] if lat else None,
                      "p99_s": lat[int(len(lat) * 0.99)] if lat else None, "max_s": lat[-1] if lat else None}))
    """
)


def _env(folder: Path):
    """Settings on the run's own warehouse; alert delivery off (this section measures writes)."""
    return settings_env({"NEWSPULSE_WAREHOUSE_PATH": str(folder / "wh.duckdb"), "NEWSPULSE_HOME": str(folder / "var"),
                         "NEWSPULSE_ALERT_BLOCK": ""})


@contextmanager
def _timed_writer_slot(waits: list[float], holds: list[float]):
    """Record how long each write waited for, and held, the writer slot (wraps tasks.warehouse)."""
    import tasks.warehouse as tw

    original = tw.concurrency

    @contextmanager
    def timed(*args: Any, **kwargs: Any):
        t0 = time.perf_counter()
        with original(*args, **kwargs):
            t1 = time.perf_counter()
            waits.append(t1 - t0)
            try:
                yield
            finally:
                holds.append(time.perf_counter() - t1)

    tw.concurrency = timed
    try:
        yield
    finally:
        tw.concurrency = original


def _write_file(folder: Path, i: int, rows: int, rnd: random.Random) -> tuple[Path, list[str]]:
    from datetime import UTC, datetime, timedelta

    path = folder / f"batch{i:05d}.jsonl"
    now = datetime.now(UTC)
    ids = [f"k{i}-{j}" for j in range(rows)]
    with path.open("w", encoding="utf-8") as fh:
        for j, rid in enumerate(ids):
            fh.write(json.dumps({
                "id": rid, "source": "conc", "title": f"{' '.join(rnd.choices(WORDS, k=8))} {rid}",
                "body": " ".join(rnd.choices(WORDS, k=30)), "tickers": rnd.sample(TICKERS, k=rnd.randint(0, 1)),
                "published_at": (now - timedelta(minutes=rows - j)).strftime("%Y-%m-%dT%H:%M:%SZ")}) + "\n")
    return path, ids


def run(seconds: float = 120, work: Path | None = None, rows_per_file: int = 200, seed: int = 0,
        harness: bool = True) -> dict[str, Any]:
    """Run the mix for ``seconds``; counts, throughput, worst waits and the exactly-once checks."""
    own = work is None
    work = Path(tempfile.mkdtemp(prefix="np-conc-")) if own else Path(work)
    shutil.rmtree(work / "conc", ignore_errors=True)
    folder = work / "conc"
    (folder / "in").mkdir(parents=True)
    rnd = random.Random(seed)
    try:
        with ExitStack() as stack:
            if harness:
                from prefect.testing.utilities import prefect_test_harness

                os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(work / "prefect-results"))
                stack.enter_context(prefect_test_harness(server_startup_timeout=120))
            settings = stack.enter_context(_env(folder))
            return _run(settings, seconds, folder, rows_per_file, rnd)
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def _run(settings, seconds: float, folder: Path, rows_per_file: int, rnd: random.Random) -> dict[str, Any]:
    from flows.ingest import ingest_flow
    from flows.monitor import monitor_flow
    from flows.score import score_flow
    from tasks.warehouse import ensure_writer_limit
    from tests.conftest import register_tiny_champion
    from warehouse.connection import connect
    from warehouse.migrate import migrate

    ensure_writer_limit(settings)
    with connect(settings) as con:
        migrate(con)
    version = register_tiny_champion(settings)
    # Warm-up outside the timed window (imports, GX, first model load).
    warm_path, warm_ids = _write_file(folder / "in", 0, rows_per_file, rnd)
    ingest_flow(files=[str(warm_path)], source="conc")
    score_flow(shard_size=500)
    monitor_flow()

    waits: list[float] = []
    holds: list[float] = []
    stats: dict[str, dict[str, Any]] = {k: {"runs": 0, "errors": 0, "error_samples": []}
                                        for k in ("ingest", "score", "monitor")}
    expected = set(warm_ids)
    failed_files: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop(name: str, body, pause: float) -> None:
        while time.monotonic() < deadline:
            try:
                body()
                stats[name]["runs"] += 1
            except Exception as exc:  # a failed run is a finding: counted, not fatal to the benchmark
                stats[name]["errors"] += 1
                if len(stats[name]["error_samples"]) < 5:
                    stats[name]["error_samples"].append(f"{type(exc).__name__}: {str(exc)[:300]}")
            time.sleep(pause)

    counter = [0]

    def ingest_once() -> None:
        counter[0] += 1
        path, ids = _write_file(folder / "in", counter[0], rows_per_file, rnd)
        with lock:
            expected.update(ids)
        try:
            ingest_flow(files=[str(path)], source="conc")
        except Exception:
            failed_files.append(str(path))
            raise

    analyst = subprocess.Popen([sys.executable, "-c", ANALYST, str(seconds)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO), "DO_NOT_TRACK": "1"})
    t0 = time.perf_counter()
    with _timed_writer_slot(waits, holds):
        threads = [threading.Thread(target=loop, args=("ingest", ingest_once, 0.0)),
                   threading.Thread(target=loop, args=("score", lambda: score_flow(shard_size=500), 0.2)),
                   threading.Thread(target=loop, args=("monitor", monitor_flow, 0.5))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    elapsed = time.perf_counter() - t0
    out, err = analyst.communicate(timeout=300)
    reader = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": err[-2000:], "errors": -1,
                                                                               "queries": 0}

    # Re-run what failed (as a retried flow run would), then a final score pass.
    recovered = 0
    if failed_files:
        ingest_flow(files=failed_files, source="conc")
        recovered = len(failed_files)
    score_flow(shard_size=500)
    with connect(settings) as con:
        n, distinct = con.execute("SELECT count(*), count(DISTINCT article_id) FROM articles").fetchall()[0]
        titles = {r[0].rsplit(" ", 1)[-1] for r in con.execute("SELECT title FROM articles").fetchall()}
        quarantined = con.execute("SELECT count(*) FROM quarantine").fetchall()[0][0]
        s_n, s_distinct = con.execute("SELECT count(*), count(DISTINCT (article_id, model_version)) FROM scores "
                                      "WHERE model_version = ?", [version]).fetchall()[0]
        unscored = con.execute("SELECT count(*) FROM articles a WHERE NOT EXISTS (SELECT 1 FROM scores s "
                               "WHERE s.article_id = a.article_id AND s.model_version = ?)", [version]).fetchall()[0][0]
    waits.sort()
    holds.sort()
    records = len(expected) - len(warm_ids)
    result = {
        "seconds": round(elapsed, 1), "rows_per_file": rows_per_file, "flows": stats,
        "files_failed_then_reingested": recovered,
        "records_ingested": records, "ingest_records_per_s": round(records / elapsed, 1),
        "articles": n, "expected_records": len(expected),
        "duplicates": n - distinct + (s_n - s_distinct), "lost_writes": len(expected - titles) + unscored,
        "missing_records": len(expected - titles), "unscored_after_final_pass": unscored, "quarantined": quarantined,
        "scores": s_n,
        "reader": reader, "analyst_pid": analyst.pid, "main_pid": os.getpid(), "queries_per_s": round(reader.get("queries", 0) / max(elapsed, 1e-9), 1),
        "reader_errors": reader.get("errors", -1), "reader_retries": reader.get("retries"),
        "worst_read_s": reader.get("max_s"), "p99_read_s": reader.get("p99_s"),
        "writer_slot_acquisitions": len(waits), "worst_writer_wait_s": round(waits[-1], 3) if waits else None,
        "p50_writer_wait_s": round(waits[len(waits) // 2], 3) if waits else None,
        "worst_writer_hold_s": round(holds[-1], 3) if holds else None,
    }
    result["writer_errors"] = sum(s["errors"] for s in stats.values())
    result["ok"] = (result["duplicates"] == 0 and result["lost_writes"] == 0 and result["reader_errors"] == 0
                    and result["writer_errors"] == 0)
    return result


def report(result: dict[str, Any]) -> None:
    """Print the concurrency table."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    table = Table(title=f"Concurrency: ingest + score + monitor + analyst reads for {result['seconds']} s")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("flow runs (ingest / score / monitor)",
         " / ".join(str(result["flows"][k]["runs"]) for k in ("ingest", "score", "monitor"))),
        ("failed flow runs (ingest / score / monitor)",
         " / ".join(str(result["flows"][k]["errors"]) for k in ("ingest", "score", "monitor"))),
        ("records ingested", f"{result['records_ingested']:,}"),
        ("ingest throughput, records/s", f"{result['ingest_records_per_s']:,}"),
        ("analyst queries (per s)", f"{result['reader'].get('queries', 0):,} ({result['queries_per_s']})"),
        ("reader errors / lock retries", f"{result['reader_errors']} / {result['reader_retries']}"),
        ("read latency p99 / worst, s", f"{result['p99_read_s'] or 0:.3f} / {result['worst_read_s'] or 0:.3f}"),
        ("writer slot: acquisitions, p50 / worst wait, s",
         f"{result['writer_slot_acquisitions']}, {result['p50_writer_wait_s']} / {result['worst_writer_wait_s']}"),
        ("worst writer hold, s", str(result["worst_writer_hold_s"])),
        ("duplicates / lost writes", f"{result['duplicates']} / {result['lost_writes']}"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    for k in ("ingest", "score", "monitor"):
        for sample in result["flows"][k]["error_samples"]:
            console.print(f"[red]{k} failed:[/red] {sample}")
    for sample in result["reader"].get("error_samples", []):
        console.print(f"[red]reader error:[/red] {sample}")
    console.print(f"verdict: {'no lost writes, no lock error reached anyone' if result['ok'] else 'FAILED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=120)
    args = parser.parse_args()
    result = run(args.seconds)
    report(result)
    out = REPO / "bench" / "results" / "reliability_concurrency.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
