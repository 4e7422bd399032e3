"""Crash safety: SIGKILL ingest and scoring at random (seeded) moments, re-run, check exactly-once.

Each ingest trial starts a subprocess running the real ingest path (plan by fingerprint, stage,
validate, commit: what ``tests/code/test_crash_safety.py`` runs), kills it with SIGKILL after a
random delay, checks that the warehouse opens cleanly and holds whole batches only, re-runs the
ingest to completion and checks exactly-once: rows == distinct valid ids in the files, no
duplicate ``article_id``, every line accounted for (inserted + duplicate + quarantined == lines).
Staging folders left by the killed run are listed: committed ones (the kill landed between the
commit and the folder's removal) and uncommitted ones (a crash before the commit). Neither is
read again; the re-run starts, as every flow does (``migrate_warehouse``), with ``prune_staging``,
which removes the folders whose owner process is gone, so after the re-run the staging
directory must be empty: staged files are committed or cleaned.

Each scoring trial does the same with the export / score_shard / commit_scores loop of the score
flow (``SCORE_SCRIPT``, which ``tests/model/test_score_flow.py`` kills at fixed points too) against a tiny untrained champion:
after the re-run, scores == articles with no duplicate (article_id, model_version).

    python bench/reliability_crash.py [--trials 20] [--seed 0]

Used by ``bench/reliability.py`` through :func:`run` and :func:`report`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")
REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script (python bench/x.py): the repository on the path
    sys.path.insert(0, str(REPO))

import duckdb  # noqa: E402

INGEST_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from core.settings import Settings
    from warehouse import commit, staging
    from warehouse.connection import connect
    from warehouse.direct import ingest_direct
    from warehouse.migrate import migrate
    from sources.files import file_fingerprint

    settings = Settings(warehouse_path=Path(sys.argv[1]), home=Path(sys.argv[2]))
    settings.ensure_dirs()
    with connect(settings) as con:
        migrate(con)
    # What migrate_warehouse does at the start of every flow: folders of killed runs go.
    staging.prune_staging(settings.staging_dir, settings.staging_retention_h * 3600)
    print("migrated", flush=True)
    for i, name in enumerate(sys.argv[3:]):
        path = Path(name)
        with connect(settings) as con:  # what the flow's plan-files task does
            if commit.already_ingested(con, "crash", file_fingerprint(path)):
                print(f"skipped {i}", flush=True)
                continue
        batch_dir, manifest = staging.new_batch(settings.staging_dir, "crash", "articles", str(path))
        manifest.fingerprint = file_fingerprint(path)
        # What the flow's ingest-file task does: stage, validate and commit in one pass.
        ingest_direct(settings, batch_dir, manifest,
                      lambda mem: staging.stage_jsonl(mem, batch_dir, manifest, path, write_parquet=False),
                      on_phase=lambda phase: print(f"{phase} {i}", flush=True))
    print("done", flush=True)
    """
)

SCORE_SCRIPT = textwrap.dedent(
    """
    import shutil
    import sys
    from datetime import UTC, datetime
    from pathlib import Path
    from core.settings import Settings
    from models.serving import ServedModel, score_shard
    from warehouse.connection import connect
    from warehouse.scores import commit_scores, export_unscored, staged_outputs
    from warehouse.staging import prune_staging

    settings = Settings(warehouse_path=Path(sys.argv[1]), home=Path(sys.argv[2]))
    settings.ensure_dirs()
    prune_staging(settings.staging_dir, settings.staging_retention_h * 3600)  # as migrate_warehouse does
    version, artifact, run = sys.argv[3], sys.argv[4], sys.argv[5]
    run_dir = settings.staging_dir / f"score-{run}"
    with connect(settings) as con:
        inputs = export_unscored(con, version, run_dir, shard_size=40)
    print("exported", flush=True)
    served = ServedModel(Path(artifact))
    for i, path in enumerate(inputs):
        out = Path(path).with_name(Path(path).name.replace("input", "output"))
        score_shard(served, Path(path), out, extra={"scored_at": datetime.now(UTC), "score_run_id": run,
                                                    "flow_run_id": None})
        print(f"scored {i}", flush=True)
        if i % 3 == 2:  # commit every few shards, so kills also land inside and between commits
            with connect(settings) as con:
                commit_scores(con, staged_outputs(run_dir), version)
            print(f"committed {i}", flush=True)
    with connect(settings) as con:
        commit_scores(con, staged_outputs(run_dir), version)
    shutil.rmtree(run_dir, ignore_errors=True)  # as the score flow's commit task does
    print("done", flush=True)
    """
)

WORDS = "shares fell rose profit loss bank market oil said growth warns record deal cut the in on".split()


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "DO_NOT_TRACK": "1"}


def write_ingest_inputs(folder: Path, files: int, rows_per_file: int, seed: int) -> dict[str, Any]:
    """JSONL files with one malformed line and one repeated id each; returns what the warehouse must hold."""
    rnd = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths, lines, ids = [], 0, set()
    for p in range(files):
        path = folder / f"part{p}.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for i in range(rows_per_file):
                n = p * rows_per_file + i
                ids.add(f"c{n}")
                fh.write(json.dumps({"id": f"c{n}", "title": f"Headline number {n}",
                                     "body": " ".join(rnd.choices(WORDS, k=20))}) + "\n")
            fh.write(json.dumps({"id": f"c{p * rows_per_file}", "title": f"Headline number {p * rows_per_file}",
                                 "body": "repeated id"}) + "\n")  # a duplicate of the file's first record
            fh.write('{"id": "bad", "title": \n')  # malformed: quarantined
        lines += rows_per_file + 2
        paths.append(path)
    return {"paths": paths, "lines": lines, "distinct_valid": len(ids), "bad_lines": files}


class _Watcher:
    """Collect a subprocess's progress lines (with times) on a thread."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.lines, self.t0 = proc, [], time.perf_counter()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in iter(self.proc.stdout.readline, b""):
            self.lines.append((time.perf_counter() - self.t0, line.decode().strip()))

    def last(self) -> str:
        return self.lines[-1][1] if self.lines else "starting"

    def join(self) -> None:
        self._thread.join(timeout=10)


def _kill_after(cmd: list[str], delay_s: float) -> dict[str, Any]:
    """Start ``cmd``, SIGKILL it after ``delay_s``; where it was when killed."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    watcher = _Watcher(proc)
    time.sleep(delay_s)
    running = proc.poll() is None
    phase = watcher.last()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    watcher.join()
    finished = any(line == "done" for _, line in watcher.lines)
    return {"delay_s": round(delay_s, 3), "phase": phase, "mid_work": running and not finished and phase != "starting",
            "finished_before_kill": finished}


def _open_cleanly(db: Path, query: str) -> tuple[bool, Any, str | None]:
    """Open the warehouse read-write (replays the WAL) and run ``query``."""
    if not db.exists():
        return True, None, None
    try:
        con = duckdb.connect(str(db))
        try:
            return True, con.execute(query).fetchall(), None
        finally:
            con.close()
    except Exception as exc:  # a dirty open is a finding, not a crash of the harness
        return False, None, f"{type(exc).__name__}: {exc}"


def _calibrate(make_cmd, first_marker: str) -> tuple[float, float]:
    """Run ``make_cmd(i)`` to completion for i = 0, 1 (the first run warms caches); the second run's
    seconds from start to ``first_marker`` (interpreter start and imports) and to ``done``."""
    for i in range(2):
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(make_cmd(i), env=_env(), stdout=subprocess.PIPE, stderr=err)
            watcher = _Watcher(proc)
            proc.wait(timeout=600)
            watcher.join()
            if proc.returncode != 0:
                err.seek(0)
                raise RuntimeError(err.read().decode()[-2000:])
    times = dict((line, t) for t, line in watcher.lines)
    return times.get(first_marker, 0.0), times["done"]


def ingest_trial(work: Path, inputs: dict[str, Any], delay_s: float) -> dict[str, Any]:
    """One kill + re-run of the ingest path in a fresh warehouse under ``work``."""
    db, home = work / "wh.duckdb", work / "var"
    cmd = [sys.executable, "-c", INGEST_SCRIPT, str(db), str(home), *map(str, inputs["paths"])]
    out = _kill_after(cmd, delay_s)
    partial_sql = ("SELECT count(*) FROM ingest_batches b JOIN (SELECT batch_id, count(*) n FROM articles "
                   "GROUP BY 1) a USING (batch_id) WHERE a.n <> b.rows_inserted")
    ok, rows, err = _open_cleanly(db, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'ingest_batches'")
    partial = 0
    if ok and rows and rows[0][0]:
        ok, rows, err = _open_cleanly(db, partial_sql)
        partial = rows[0][0] if ok else 0
    staging_dir = home / "staging"
    left = sorted(p.name for p in staging_dir.glob("*") if p.is_dir()) if staging_dir.exists() else []
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    out["rerun_s"] = round(time.perf_counter() - t0, 2)
    out.update(dirty_open=0 if ok else 1, open_error=err, partial_batches=partial, rerun_rc=done.returncode)
    if done.returncode != 0:
        out.update(rerun_error=done.stderr[-1500:], duplicates=0, losses=inputs["distinct_valid"], identity=False)
        return out
    con = duckdb.connect(str(db), read_only=True)
    try:
        n, distinct = con.execute("SELECT count(*), count(DISTINCT article_id) FROM articles").fetchall()[0]
        read, inserted, dup, quar = con.execute(
            "SELECT sum(rows_read), sum(rows_inserted), sum(rows_duplicate), sum(rows_quarantined) "
            "FROM ingest_batches").fetchall()[0]
        identity = con.execute("SELECT bool_and(rows_read = rows_inserted + rows_duplicate + rows_quarantined) "
                               "FROM ingest_batches").fetchall()[0][0]
        quarantined = con.execute("SELECT count(*) FROM quarantine").fetchall()[0][0]
        committed = {r[0] for r in con.execute("SELECT batch_id FROM ingest_batches").fetchall()}
    finally:
        con.close()
    still = [name for name in left if (staging_dir / name).exists()]
    after = sorted(p.name for p in staging_dir.glob("*") if p.is_dir())
    out.update(
        articles=n, duplicates=n - distinct, losses=max(0, inputs["distinct_valid"] - distinct),
        extra_rows=max(0, distinct - inputs["distinct_valid"]),
        accounted=int(inserted + dup + quar) if read is not None else 0, lines=inputs["lines"],
        identity=bool(identity) and read == inputs["lines"] and quarantined == inputs["bad_lines"],
        quarantined=quarantined,
        staging_after_kill=len(left), staging_after_kill_committed=sum(n in committed for n in left),
        staging_after_kill_uncommitted=sum(n not in committed for n in left),
        staging_left=len(after), staging_left_names=after, staging_cleaned=len(left) - len(still),
    )
    return out


def _articles_frame(n: int, seed: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    t0 = datetime(2026, 10, 1, tzinfo=UTC)
    return pd.DataFrame({
        "article_id": [f"a{i:05d}" for i in range(n)], "source": "test",
        "title": [" ".join(rng.choice(WORDS, rng.integers(3, 12))) for _ in range(n)],
        "body": [" ".join(rng.choice(WORDS, rng.integers(0, 40))) for _ in range(n)],
        "published_at": [t0 + timedelta(minutes=int(m)) for m in rng.integers(0, 20000, n)],
        "ingested_at": t0, "batch_id": "test"})


def prepare_scoring(work: Path, articles: int, seed: int) -> dict[str, Any]:
    """A warehouse with ``articles`` articles and a tiny registered champion; returns its paths."""
    from core.settings import Settings
    from tests.conftest import register_tiny_champion
    from warehouse.connection import connect
    from warehouse.migrate import migrate

    settings = Settings(warehouse_path=work / "base.duckdb", home=work / "base-var")
    settings.ensure_dirs()
    with connect(settings) as con:
        migrate(con)
        df = _articles_frame(articles, seed)  # noqa: F841 (registered below)
        con.register("df", df)
        con.execute("INSERT INTO articles BY NAME SELECT * FROM df")
        con.execute("CHECKPOINT")
    version = register_tiny_champion(settings)
    with connect(settings) as con:
        con.execute("CHECKPOINT")
    return {"db": settings.warehouse_path, "version": version, "articles": articles,
            "artifact": str(Path(settings.registry_dir) / "versions" / version)}


def score_trial(work: Path, base: dict[str, Any], delay_s: float, name: str) -> dict[str, Any]:
    """One kill + re-run of the scoring loop on a copy of the prepared warehouse."""
    work.mkdir(parents=True, exist_ok=True)
    db, home = work / "wh.duckdb", work / "var"
    shutil.copy(base["db"], db)
    cmd = [sys.executable, "-c", SCORE_SCRIPT, str(db), str(home), base["version"], base["artifact"]]
    out = _kill_after([*cmd, f"{name}-killed"], delay_s)
    left = [p.name for p in (home / "staging").glob("*") if p.is_dir()] if (home / "staging").exists() else []
    ok, rows, err = _open_cleanly(db, "SELECT count(*) FROM scores")
    out.update(dirty_open=0 if ok else 1, open_error=err, partial_scores=rows[0][0] if ok else None)
    t0 = time.perf_counter()
    done = subprocess.run([*cmd, f"{name}-rerun"], env=_env(), capture_output=True, text=True, timeout=600)
    out["rerun_s"] = round(time.perf_counter() - t0, 2)
    out["rerun_rc"] = done.returncode
    if done.returncode != 0:
        out.update(rerun_error=done.stderr[-1500:], duplicates=0, losses=base["articles"])
        return out
    con = duckdb.connect(str(db), read_only=True)
    try:
        n, distinct = con.execute(
            "SELECT count(*), count(DISTINCT (article_id, model_version)) FROM scores").fetchall()[0]
        missing = con.execute("SELECT count(*) FROM articles a WHERE NOT EXISTS "
                              "(SELECT 1 FROM scores s WHERE s.article_id = a.article_id)").fetchall()[0][0]
        emb_n, emb_distinct = con.execute("SELECT count(*), count(DISTINCT article_id) FROM embeddings").fetchall()[0]
    finally:
        con.close()
    # Everything the killed run staged must be gone (pruned by the re-run, whose own folder is
    # removed after its last commit).
    after = sorted(p.name for p in (home / "staging").glob("*") if p.is_dir())
    out.update(scores=n, duplicates=(n - distinct) + (emb_n - emb_distinct), losses=missing,
               embeddings=emb_n, staging_after_kill=len(left), staging_left=len(after), staging_left_names=after)
    return out


def run(trials: int = 20, seed: int = 0, work: Path | None = None, score_trials: int | None = None,
        rows_per_file: int = 3000, files: int = 3, articles: int = 600,
        ingest_window: tuple[float, float] | None = None,
        score_window: tuple[float, float] | None = None) -> dict[str, Any]:
    """``trials`` ingest kills and ``score_trials`` (default ``trials``) scoring kills; the counts.

    Kill delays are drawn (seeded) from a window measured on two clean runs, or from
    ``ingest_window`` / ``score_window`` (seconds after the start) when given, which skips the
    calibration runs (the smoke test does, to stay short).
    """
    own = work is None
    work = Path(tempfile.mkdtemp(prefix="np-crash-")) if own else Path(work)
    work.mkdir(parents=True, exist_ok=True)
    score_trials = trials if score_trials is None else score_trials
    rnd = random.Random(seed)
    try:
        inputs = write_ingest_inputs(work / "inputs", files, rows_per_file, seed)
        result: dict[str, Any] = {"seed": seed, "files": files, "rows_per_file": rows_per_file,
                                  "lines": inputs["lines"], "distinct_valid": inputs["distinct_valid"]}
        ingest: list[dict[str, Any]] = []
        if trials:
            # The kill delay is drawn over a clean run's duration (interpreter start to done).
            clean = work / "ingest-calibrate"
            start_s, full_s = (ingest_window[0] / 0.9, ingest_window[1]) if ingest_window else _calibrate(
                lambda i: [sys.executable, "-c", INGEST_SCRIPT, str(clean / f"wh{i}.duckdb"), str(clean / f"var{i}"),
                           *map(str, inputs["paths"])], "migrated")
            result["ingest_clean_run_s"] = round(full_s, 2)
            for t in range(trials):
                # Delays from just before the first warehouse write to the end of a clean run.
                ingest.append(ingest_trial(work / f"ingest-{t}", inputs, rnd.uniform(0.9 * start_s, full_s)))
                shutil.rmtree(work / f"ingest-{t}", ignore_errors=True)
        scoring: list[dict[str, Any]] = []
        if score_trials:
            base = prepare_scoring(work / "score-base", articles, seed)
            cal = work / "score-calibrate"
            cal.mkdir()

            def score_cmd(i: int) -> list[str]:
                shutil.copy(base["db"], cal / f"wh{i}.duckdb")
                return [sys.executable, "-c", SCORE_SCRIPT, str(cal / f"wh{i}.duckdb"), str(cal / f"var{i}"),
                        base["version"], base["artifact"], "calibrate"]

            start_s, full_s = (score_window[0] / 0.9, score_window[1]) if score_window else \
                _calibrate(score_cmd, "scored 0")  # kills land among the shards
            result["score_clean_run_s"] = round(full_s, 2)
            result["articles"] = articles
            for t in range(score_trials):
                scoring.append(score_trial(work / f"score-{t}", base, rnd.uniform(0.9 * start_s, full_s), f"t{t}"))
                shutil.rmtree(work / f"score-{t}", ignore_errors=True)
        for name, rows in (("ingest", ingest), ("scoring", scoring)):
            result[name] = {
                "trials": len(rows), "kills_mid_work": sum(r["mid_work"] for r in rows),
                "finished_before_kill": sum(r["finished_before_kill"] for r in rows),
                "duplicates": sum(r.get("duplicates", 0) for r in rows),
                "losses": sum(r.get("losses", 0) for r in rows),
                "dirty_opens": sum(r.get("dirty_open", 0) for r in rows),
                "rerun_failures": sum(r.get("rerun_rc", 0) != 0 for r in rows),
                "phases": sorted({r["phase"] for r in rows}),
                "staging_after_kill": sum(r.get("staging_after_kill", 0) for r in rows),
                "staging_left": sum(r.get("staging_left", 0) for r in rows),
                "detail": rows,
            }
        result["ingest"]["partial_batches"] = sum(r.get("partial_batches", 0) for r in ingest)
        result["ingest"]["identity_failures"] = sum(not r.get("identity", False) for r in ingest)
        result["ingest"]["extra_rows"] = sum(r.get("extra_rows", 0) for r in ingest)
        result["ingest"]["staging_after_kill_committed"] = sum(r.get("staging_after_kill_committed", 0) for r in ingest)
        result["ingest"]["staging_after_kill_uncommitted"] = sum(r.get("staging_after_kill_uncommitted", 0)
                                                                 for r in ingest)
        result["ok"] = all(result[k][m] == 0 for k in ("ingest", "scoring")
                           for m in ("duplicates", "losses", "dirty_opens", "rerun_failures", "staging_left")) \
            and result["ingest"]["identity_failures"] == 0 and result["ingest"]["partial_batches"] == 0
        return result
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def report(result: dict[str, Any]) -> None:
    """Print the crash-safety table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Crash safety: SIGKILL at a random moment, then re-run (exactly-once)")
    for col in ("path", "trials", "killed mid-work", "finished first", "duplicates", "losses", "dirty opens",
                "re-run failures", "staged folders after kill", "left after re-run"):
        table.add_column(col, justify="right" if col != "path" else "left")
    for name in ("ingest", "scoring"):
        r = result[name]
        table.add_row(name, str(r["trials"]), str(r["kills_mid_work"]), str(r["finished_before_kill"]),
                      str(r["duplicates"]), str(r["losses"]), str(r["dirty_opens"]), str(r["rerun_failures"]),
                      str(r["staging_after_kill"]), str(r["staging_left"]))
    console = Console(width=140)
    console.print(table)
    console.print(f"kill phases seen: ingest {result['ingest']['phases']}; scoring {result['scoring']['phases']}")
    console.print(f"ingest: partial batches after a kill {result['ingest']['partial_batches']}, "
                  f"rows_read = inserted + duplicate + quarantined failures {result['ingest']['identity_failures']}; "
                  f"verdict: {'exactly-once' if result['ok'] else 'FAILED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--score-trials", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = run(args.trials, args.seed, score_trials=args.score_trials)
    report(result)
    out = REPO / "bench" / "results" / "reliability_crash.json"
    out.parent.mkdir(exist_ok=True)
    slim = {k: ({kk: vv for kk, vv in v.items() if kk != "detail"} if isinstance(v, dict) else v)
            for k, v in result.items()}
    out.write_text(json.dumps({**slim, "detail": {k: result[k]["detail"] for k in ("ingest", "scoring")}},
                              indent=2, default=str))


if __name__ == "__main__":
    main()
