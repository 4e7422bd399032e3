"""Alert delivery under failure: the receiver down, answering 500, or hanging.

For each case a fresh warehouse gets a flat stream of scored articles with planted negative
spikes (as in ``tests/code/test_monitor_flow.py``), and the real monitor flow runs against a
loopback webhook (through the Prefect webhook block, 10 s timeout, ``alert_delivery_attempts``
tries with exponential backoff per run, circuit breaker after the first alert that fails):

* ``down``: nothing listens on the port (connection refused);
* ``http500``: the receiver answers 500 to the first K requests, then 200;
* ``hang``: a server accepts the connection and never answers (the block's timeout ends it).

While the receiver fails, alerts must stay 'pending' and attempts must be spaced by the backoff;
once it works, further monitor runs must deliver each alert exactly once (POSTs counted per
``alert_id``), and one more run must deliver nothing. The time a failing receiver costs a run is
recorded (a hanging one costs up to attempts x 10 s plus the backoff).

    python bench/reliability_alerts.py [--skip-hang]

Used by ``bench/reliability.py`` through :func:`run` and :func:`report`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")
REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script (python bench/x.py): the repository on the path
    sys.path.insert(0, str(REPO))

from bench.reliability_common import STREAM_START, load_scored, settings_env, spiky_stream  # noqa: E402

START = STREAM_START
MODEL = "m20261001-000000-bench"
BACKOFF_S = 0.2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """Loopback webhook: answers 500 to the first ``fail_first`` POSTs; records every request's time."""

    def __init__(self, port: int = 0, fail_first: int = 0) -> None:
        self.posts: list[dict[str, Any]] = []
        self.times: list[tuple[float, int]] = []  # (monotonic time, status)
        self.failures_left = fail_first
        lock, outer = threading.Lock(), self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    fail = outer.failures_left > 0
                    outer.failures_left -= fail
                    outer.times.append((time.monotonic(), 500 if fail else 200))
                    if not fail:
                        outer.posts.append(json.loads(body or b"{}"))
                self.send_response(500 if fail else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def per_alert(self) -> Counter:
        return Counter(p.get("text", "").rsplit("alert_id: ", 1)[-1].strip() for p in self.posts)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class HangingServer:
    """Accepts connections and never answers (nor reads): a receiver that hangs."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[tuple[float, socket.socket]] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted.append((time.monotonic(), conn))  # held open, never answered

    def close(self) -> None:
        self._stop.set()
        time.sleep(0.3)
        for _, conn in self.accepted:
            conn.close()
        self.sock.close()


def load_warehouse(settings, seed: int = 1) -> None:
    """Scored articles with spikes on three tickers (several alerts) and a champion."""
    at = START + timedelta(days=8, hours=10)
    df = spiky_stream(9, seed, [("ZZZ", at, 40, 32), ("YYY", at + timedelta(hours=6), 40, 32),
                           ("XXX", at + timedelta(hours=12), 40, 32)])
    load_scored(settings, df, MODEL, "bench", source=df.source)


def _env(folder: Path, port: int):
    """Settings on the case's own warehouse, with the webhook at ``port`` (restored after)."""
    return settings_env({"NEWSPULSE_WAREHOUSE_PATH": str(folder / "wh.duckdb"), "NEWSPULSE_HOME": str(folder / "var"),
                         "NEWSPULSE_ALERT_WEBHOOK_URL": f"http://127.0.0.1:{port}/hook",
                         "NEWSPULSE_ALERT_RETRY_BACKOFF_S": str(BACKOFF_S),
                         "NEWSPULSE_ALERT_ALLOW_PRIVATE_URLS": "true"})


def _alerts(settings) -> list[dict[str, Any]]:
    """The alerts that page: one a narrower alert explains is stored 'open' and never sent (issue 19)."""
    from warehouse.alerts import list_alerts
    from warehouse.connection import connect

    with connect(settings) as con:
        return [a for a in list_alerts(con) if not a.get("explained_by")]


def _monitor() -> tuple[dict[str, Any], float]:
    from flows.monitor import monitor_flow

    t0 = time.perf_counter()
    summary = monitor_flow(notify_backfill=True)
    return summary, time.perf_counter() - t0


def _backoff_ok(times: list[float], attempts: int) -> tuple[bool, list[float]]:
    """Gaps between one alert's consecutive failed attempts: at least the backoff, doubling."""
    gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
    ok = len(times) == attempts and all(g >= 0.9 * BACKOFF_S * 2 ** i for i, g in enumerate(gaps))
    return ok, gaps


def run_case(case: str, work: Path, fail_first: int = 4, max_runs: int = 4) -> dict[str, Any]:
    """One failure case end to end; see the module docstring."""
    folder = work / case
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    port = free_port()
    out: dict[str, Any] = {"case": case}
    with _env(folder, port) as settings, ExitStack() as stack:
        load_warehouse(settings)
        attempts_per_run = settings.alert_delivery_attempts
        # Phase 1: the receiver fails.
        failing_times: list[float] = []
        if case == "down":
            summary, secs = _monitor()
        elif case == "hang":
            hang = HangingServer(port)
            summary, secs = _monitor()
            failing_times = [t for t, _ in hang.accepted]
            hang.close()
        elif case == "http500":
            receiver = Receiver(port, fail_first=fail_first)
            stack.callback(receiver.close)
            summary, secs = _monitor()
            failing_times = [t for t, status in receiver.times if status == 500]
        else:
            raise ValueError(case)
        alerts = _alerts(settings)
        out["alerts"] = len(alerts)
        out["failing_run_s"] = round(secs, 2)
        out["pending_while_failing"] = sum(a["status"] == "pending" for a in alerts)
        out["first_run_delivered"] = len(summary["delivered"])
        out["attempts_while_failing"] = sum(a["delivery_attempts"] or 0 for a in alerts)
        if case != "http500":
            out["backoff_ok"], out["backoff_gaps_s"] = _backoff_ok(failing_times, attempts_per_run) \
                if case == "hang" else (None, [])
            out["all_pending_while_failing"] = out["pending_while_failing"] == len(alerts) > 0
        else:
            ok, gaps = _backoff_ok(failing_times[:attempts_per_run], attempts_per_run)
            out["backoff_ok"], out["backoff_gaps_s"] = ok, gaps
            # Failing K >= attempts: the first run ends with every alert still pending.
            out["all_pending_while_failing"] = (out["pending_while_failing"] == len(alerts) > 0) \
                if fail_first >= attempts_per_run else None
        # Phase 2: the receiver works (for 500: the same one, past its failures).
        if case != "http500":
            receiver = Receiver(port)
            stack.callback(receiver.close)
        runs, run_s = 0, []
        while runs < max_runs:
            runs += 1
            run_s.append(round(_monitor()[1], 2))
            if all(a["status"] != "pending" for a in _alerts(settings)):
                break
        delivered_runs = runs
        _monitor()  # one more run: nothing may be sent again
        alerts = _alerts(settings)
        per_alert = receiver.per_alert()
        ids = {a["alert_id"] for a in alerts}
        out.update(
            runs_to_deliver=delivered_runs, delivering_run_s=run_s[-1],
            failure_cost_s=round(out["failing_run_s"] - run_s[-1], 2), deliveries=sum(per_alert.values()),
            delivered_alerts=sum(per_alert[i] >= 1 for i in ids),
            duplicates=sum(max(0, per_alert[i] - 1) for i in ids),
            undelivered=sum(per_alert[i] == 0 for i in ids), unknown_posts=sum(c for k, c in per_alert.items()
                                                                             if k not in ids),
            still_pending=sum(a["status"] == "pending" for a in alerts),
            requests=len(receiver.times), total_attempts=sum(a["delivery_attempts"] or 0 for a in alerts),
        )
        out["exactly_once"] = (out["duplicates"] == 0 and out["undelivered"] == 0 and out["unknown_posts"] == 0
                               and out["still_pending"] == 0 and out["alerts"] > 0)
    return out


def run(work: Path | None = None, cases: tuple[str, ...] = ("down", "http500", "hang"), fail_first: int = 4,
        harness: bool = True) -> dict[str, Any]:
    """Every case in ``cases``; ``harness``: start a temporary Prefect server (tests pass their own)."""
    own = work is None
    work = Path(tempfile.mkdtemp(prefix="np-alerts-")) if own else Path(work)
    work.mkdir(parents=True, exist_ok=True)
    try:
        with ExitStack() as stack:
            if harness:
                from prefect.testing.utilities import prefect_test_harness

                os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(work / "prefect-results"))
                stack.enter_context(prefect_test_harness(server_startup_timeout=120))
            results = {case: run_case(case, work, fail_first=fail_first) for case in cases}
        return {"cases": results, "backoff_s": BACKOFF_S, "fail_first": fail_first,
                "deliveries": sum(r["deliveries"] for r in results.values()),
                "duplicates": sum(r["duplicates"] for r in results.values()),
                "undelivered": sum(r["undelivered"] for r in results.values()),
                "ok": all(r["exactly_once"] for r in results.values())}
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def report(result: dict[str, Any]) -> None:
    """Print the alert-delivery table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Alert delivery under failure (backoff {result['backoff_s']} s, doubling)")
    for col in ("receiver", "alerts", "pending while failing", "failing run s", "delivering run s", "backoff gaps s",
                "runs to deliver",
                "deliveries", "duplicates", "undelivered", "attempts"):
        table.add_column(col, justify="left" if col == "receiver" else "right")
    names = {"down": "down (refused)", "http500": f"500 x{result['fail_first']}", "hang": "hanging"}
    for case, r in result["cases"].items():
        table.add_row(names.get(case, case), str(r["alerts"]), str(r["pending_while_failing"]),
                      f"{r['failing_run_s']:.1f}", f"{r['delivering_run_s']:.1f}", ", ".join(map(str, r["backoff_gaps_s"])) or "-",
                      str(r["runs_to_deliver"]), str(r["deliveries"]), str(r["duplicates"]), str(r["undelivered"]),
                      str(r["total_attempts"]))
    console = Console(width=140)
    console.print(table)
    console.print(f"verdict: {'each alert delivered exactly once' if result['ok'] else 'FAILED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-hang", action="store_true")
    args = parser.parse_args()
    cases = ("down", "http500") if args.skip_hang else ("down", "http500", "hang")
    result = run(cases=cases)
    report(result)
    out = REPO / "bench" / "results" / "reliability_alerts.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
