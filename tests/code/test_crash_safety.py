"""SIGKILL an ingest mid-run, run it again: exactly-once (no duplicates, no losses)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

ROWS = 60_000

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from core.settings import Settings
    from warehouse import commit, staging, validation
    from warehouse.connection import connect, connect_memory
    from warehouse.migrate import migrate

    settings = Settings(warehouse_path=Path(sys.argv[1]), home=Path(sys.argv[2]))
    settings.ensure_dirs()
    with connect(settings) as con:
        migrate(con)
    from sources.files import file_fingerprint

    for name in sys.argv[3:]:
        path = Path(name)
        with connect(settings) as con:  # what the flow's plan-files task does
            if commit.already_ingested(con, "crash", file_fingerprint(path)):
                continue
        batch_dir, manifest = staging.new_batch(settings.staging_dir, "crash", "articles", str(path))
        manifest.fingerprint = file_fingerprint(path)
        with connect_memory(settings) as mem:
            staging.stage_jsonl(mem, batch_dir, manifest, path)
        with connect_memory(settings) as mem:
            validation.validate_batch(mem, batch_dir, "articles", settings)
        with connect(settings) as con:
            commit.commit_batch(con, batch_dir)
    print("done", flush=True)
    """
)


def _write_parts(folder: Path) -> list[Path]:
    parts = []
    for p in range(3):
        path = folder / f"part{p}.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for i in range(ROWS // 3):
                n = p * (ROWS // 3) + i
                fh.write(json.dumps({"id": f"c{n}", "title": f"Headline number {n}", "body": "Text " * 20}) + "\n")
            fh.write('{"id": "bad", "title": \n')  # one malformed line per file: quarantined
        parts.append(path)
    return parts


@pytest.mark.parametrize("kill_after_s", [0.5, 3.0, 6.0], ids=["early", "mid", "late"])
def test_sigkill_then_rerun_is_exactly_once(tmp_path: Path, kill_after_s: float) -> None:
    parts = _write_parts(tmp_path)
    db, home = tmp_path / "wh.duckdb", tmp_path / "var"
    cmd = [sys.executable, "-c", SCRIPT, str(db), str(home), *map(str, parts)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    time.sleep(kill_after_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    # The warehouse opens cleanly (WAL replayed) and holds whole batches only.
    if db.exists():
        con = duckdb.connect(str(db))
        try:
            partial = con.execute(
                "SELECT count(*) FROM ingest_batches b JOIN (SELECT batch_id, count(*) n FROM articles GROUP BY 1) a "
                "USING (batch_id) WHERE a.n <> b.rows_inserted"
            ).fetchall()[0][0] if con.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'ingest_batches'").fetchall()[0][0] else 0
        finally:
            con.close()
        assert partial == 0

    # Re-run everything to completion.
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    con = duckdb.connect(str(db), read_only=True)
    try:
        articles, distinct = con.execute("SELECT count(*), count(DISTINCT article_id) FROM articles").fetchall()[0]
        quarantined = con.execute("SELECT count(*) FROM quarantine").fetchall()[0][0]
        identity = con.execute(
            "SELECT bool_and(rows_read = rows_inserted + rows_duplicate + rows_quarantined) FROM ingest_batches"
        ).fetchall()[0][0]
    finally:
        con.close()
    assert articles == distinct == ROWS  # nothing lost, nothing twice
    assert identity
    # Committed files are skipped on the re-run (fingerprints commit with their batch), so each
    # file's one bad line is quarantined exactly once.
    assert quarantined == 3


def test_prune_staging_removes_only_old_folders(tmp_path: Path) -> None:
    from warehouse.staging import prune_staging

    old, fresh = tmp_path / "20260101T000000-x-old", tmp_path / "20261129T000000-x-new"
    old.mkdir()
    fresh.mkdir()
    (old / "normalized.parquet").write_bytes(b"x")
    past = time.time() - 3 * 86400
    os.utime(old, (past, past))
    assert prune_staging(tmp_path, 86400) == [old.name]
    assert not old.exists() and fresh.exists()


def _owned_by(folder: Path, **changes) -> Path:
    """A folder with an owner.json like this process's, with ``changes`` applied."""
    import json

    from warehouse.staging import claim

    folder.mkdir()
    (folder / "normalized.parquet").write_bytes(b"x")
    claim(folder)
    owner = json.loads((folder / "owner.json").read_text())
    (folder / "owner.json").write_text(json.dumps({**owner, **changes}))
    return folder


def test_prune_staging_removes_folders_of_dead_owners_at_once(tmp_path: Path) -> None:
    """A SIGKILLed run's folder goes at the next flow's start, however fresh; a live run's folder
    stays however old; a folder owned in another host, boot or container waits for the age limit."""
    from warehouse.staging import claim, owner_gone, prune_staging

    killed = tmp_path / "20261129T100000-killed"
    killed.mkdir()
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; from warehouse.staging import claim; "
                              "from pathlib import Path; claim(Path(sys.argv[1])); print('ok', flush=True); "
                              "time.sleep(60)", str(killed)],
                             stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2])
    assert child.stdout.readline().strip() == b"ok"
    assert owner_gone(killed) is False  # alive: kept
    assert prune_staging(tmp_path, 86400) == []
    child.send_signal(signal.SIGKILL)
    child.wait()

    live = tmp_path / "20260101T000000-live"
    live.mkdir()
    claim(live)
    past = time.time() - 3 * 86400
    os.utime(live, (past, past))
    recycled = _owned_by(tmp_path / "20261129T100001-recycled", start_ticks=1)  # same pid, other start
    elsewhere = [_owned_by(tmp_path / f"20261129T10000{i}-{k}", **{k: "other"})
                 for i, k in enumerate(("host", "boot_id", "pidns"), start=2)]
    unknown_start = _owned_by(tmp_path / "20261129T100005-nostart", start_ticks=None)
    unreadable = tmp_path / "20261129T100006-garbled"
    unreadable.mkdir()
    (unreadable / "owner.json").write_text("{not json")

    assert owner_gone(killed) is True and owner_gone(recycled) is True
    assert owner_gone(live) is False
    assert all(owner_gone(f) is None for f in [*elsewhere, unknown_start, unreadable])
    assert prune_staging(tmp_path, 86400) == sorted([killed.name, recycled.name])
    assert live.exists() and all(f.exists() for f in [*elsewhere, unknown_start, unreadable])
    os.utime(elsewhere[0], (past, past))
    assert prune_staging(tmp_path, 86400) == [elsewhere[0].name]  # unknown owner: the age limit applies
