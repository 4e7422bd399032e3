"""Reliability and security numbers (issue 7): fuzzing, kills, concurrency, alert delivery, security.

Each section lives in its own module beside this file and returns a plain dict; this script runs
them in turn, prints each section's table, then one summary table of the headline numbers, and
writes everything to bench/results/reliability.json:

- ``reliability_fuzz``: Hypothesis-generated hostile records through every ingest path (JSONL,
  CSV, Parquet, the public-dataset readers, RSS/XML): crashes, rows_in = inserted + duplicate +
  quarantined per batch, reasons, XXE leaks;
- ``reliability_crash``: SIGKILL ingest and scoring at random points, re-run: duplicates, losses,
  dirty opens, staged folders left;
- ``reliability_concurrency``: ingest, score and monitor at once with an analyst reading:
  lost writes, reader errors, throughput, worst waits;
- ``reliability_alerts``: the receiver down, failing or hanging: pending, retried, delivered once;
- ``reliability_security``: writes, COPY/ATTACH/INSTALL and file reads through the analyst SQL
  path; a planted secret searched in logs, artifacts, warehouse and files.

    .venv/bin/python bench/reliability.py [--quick] [--only fuzz crash ...]
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script (python bench/x.py): the repository on the path
    sys.path.insert(0, str(ROOT))

from core.settings import use_local_env  # noqa: E402

use_local_env(PREFECT_LOGGING_LEVEL="WARNING")

from rich.console import Console  # noqa: E402

console = Console(width=140)

# section -> (module, keyword arguments of run() for a full run, for --quick)
SECTIONS: dict[str, tuple[str, dict, dict]] = {
    "fuzz": ("reliability_fuzz", {"n_records": 10_000}, {"n_records": 1_000}),
    "crash": ("reliability_crash", {"trials": 20}, {"trials": 3}),
    "concurrency": ("reliability_concurrency", {"seconds": 120.0}, {"seconds": 20.0}),
    "alerts": ("reliability_alerts", {}, {}),
    "security": ("reliability_security", {}, {}),
}


def main(argv: list[str] | None = None) -> dict:
    """Run the chosen sections; a section that fails is reported as such, the others still run."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", choices=list(SECTIONS), default=list(SECTIONS))
    ap.add_argument("--quick", action="store_true", help="small sizes (what the tests run, roughly)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "reliability.json")
    args = ap.parse_args(argv)

    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "quick": args.quick, "sections": {}}
    for name in args.only:
        module_name, full, quick = SECTIONS[name]
        try:
            module = importlib.import_module(f"bench.{module_name}")
        except ModuleNotFoundError as exc:
            console.print(f"[yellow]{name}: not built yet ({exc})")
            results["sections"][name] = {"status": "missing"}
            continue
        kwargs = dict(quick if args.quick else full)
        if "seed" in module.run.__code__.co_varnames:
            kwargs["seed"] = args.seed
        console.rule(f"[bold]{name}")
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"reliability-{name}-") as work:
            try:
                out = module.run(work=Path(work), **kwargs)
                module.report(out)
                results["sections"][name] = {"status": "ran", "seconds": time.perf_counter() - t0, **out}
            except Exception as exc:  # a broken harness is a result too, not a reason to stop
                console.print(f"[red]{name} failed: {type(exc).__name__}: {exc}")
                results["sections"][name] = {"status": "failed", "error": traceback.format_exc()[-4000:]}
    summarize(results["sections"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    console.print(f"wrote {args.out}")
    return results


def summarize(sections: dict) -> None:
    """One table of the headline numbers of every section that ran (what the closing note quotes)."""
    from rich.table import Table

    def get(name: str, *keys: str, default: object = "-") -> object:
        node = sections.get(name, {})
        if node.get("status") != "ran":
            return default
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return default
            node = node[key]
        return node

    t = Table(title="Reliability summary")
    t.add_column("section")
    t.add_column("figures", overflow="fold")
    t.add_row("fuzz", f"{get('fuzz', 'records_total')} records fuzzed in {get('fuzz', 'batches_total')} batches; "
              f"crashes {get('fuzz', 'crashes')}, identity violations {get('fuzz', 'identity_violations')}, "
              f"XXE leaks {get('fuzz', 'xxe_leaks')}, hostile XML not refused "
              f"{len(get('fuzz', 'hostile_not_refused', default=[]) or [])}, probe findings "
              f"{len(get('fuzz', 'probe_findings', default=[]) or [])}, staged folders left "
              f"{get('fuzz', 'staging_left')}")
    for path in ("ingest", "scoring"):
        t.add_row(f"kills: {path}", f"{get('crash', path, 'trials')} SIGKILLs ({get('crash', path, 'kills_mid_work')} "
                  f"mid-work) survived; duplicates {get('crash', path, 'duplicates')}, losses "
                  f"{get('crash', path, 'losses')}, dirty opens {get('crash', path, 'dirty_opens')}, staged "
                  f"folders left {get('crash', path, 'staging_left')}")
    flows = get("concurrency", "flows", default={}) or {}
    runs = sum(f.get("runs", 0) for f in flows.values()) if isinstance(flows, dict) else "-"
    failed = sum(f.get("errors", 0) for f in flows.values()) if isinstance(flows, dict) else "-"
    t.add_row("concurrency", f"{runs} flow runs, {failed} failed; {get('concurrency', 'ingest_records_per_s')} "
              f"records/s ingested, {get('concurrency', 'queries_per_s')} analyst queries/s, reader errors "
              f"{get('concurrency', 'reader_errors')}, lost writes {get('concurrency', 'lost_writes')}, "
              f"duplicates {get('concurrency', 'duplicates')}, worst writer wait "
              f"{get('concurrency', 'worst_writer_wait_s')} s")
    t.add_row("alerts", f"{get('alerts', 'deliveries')} deliveries, duplicates {get('alerts', 'duplicates')}, "
              f"undelivered {get('alerts', 'undelivered')} (cases: "
              f"{', '.join(get('alerts', 'cases', default={}) or {}) or '-'})")
    t.add_row("security", f"SQL attacks refused {get('security', 'sql', 'refused')}/"
              f"{get('security', 'sql', 'must_refuse')}, planted secret found "
              f"{get('security', 'secrets', 'total_occurrences')} times, code findings "
              f"{get('security', 'code', 'findings')}")
    console.print(t)


if __name__ == "__main__":
    main()
