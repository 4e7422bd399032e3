"""The score flow: every head in one pass, lineage, idempotent commits, exactly-once after kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

# The score flow's export / score_shard / commit_scores loop as a script printing its progress
# ("scored N", "committed N", "done"); the crash benchmark kills the same script at random.
from bench.reliability_crash import SCORE_SCRIPT
from tests.conftest import register_tiny_champion
from warehouse.connection import connect
from warehouse.migrate import migrate

REPO = Path(__file__).resolve().parents[2]
WORDS = "shares fell rose profit loss bank market oil said growth warns record deal cut the in on".split()


def _articles(settings, n: int, seed: int = 0, prefix: str = "a") -> None:
    rng = np.random.default_rng(seed)
    t0 = datetime(2026, 10, 1, tzinfo=UTC)
    df = pd.DataFrame({
        "article_id": [f"{prefix}{i:05d}" for i in range(n)],
        "source": "test",
        "title": [" ".join(rng.choice(WORDS, rng.integers(3, 12))) for _ in range(n)],
        "body": [" ".join(rng.choice(WORDS, rng.integers(0, 40))) for _ in range(n)],
        "published_at": [t0 + timedelta(minutes=int(m)) for m in rng.integers(0, 20000, n)],
        "ingested_at": t0, "batch_id": "test"})
    with connect(settings) as con:
        migrate(con)
        con.register("df", df)
        con.execute("INSERT INTO articles BY NAME SELECT * FROM df")


@pytest.mark.usefixtures("prefect_harness")
def test_score_flow_scores_everything_once_with_lineage(settings) -> None:
    from flows.score import score_flow
    from models.serving import ServedModel

    _articles(settings, 230)
    version = register_tiny_champion(settings)
    first = score_flow(shard_size=50)
    assert first["rows_inserted"] == 230 and first["shards"] == 5 and first["model_version"] == version
    with connect(settings) as con:
        n, distinct, runs = con.execute(
            "SELECT count(*), count(DISTINCT article_id), count(DISTINCT score_run_id) FROM scores").fetchall()[0]
        assert n == distinct == 230 and runs == 1
        assert con.execute("SELECT count(*) FROM embeddings WHERE len(embedding) = 64").fetchall()[0][0] == 230
        assert con.execute("SELECT count(*) FROM scores WHERE flow_run_id IS NULL OR scored_at IS NULL "
                           "OR model_version <> ?", [version]).fetchall()[0][0] == 0
        assert con.execute("SELECT max(abs(sentiment_p_negative + sentiment_p_neutral + sentiment_p_positive - 1)) "
                           "FROM scores").fetchall()[0][0] < 1e-5
        assert con.execute("SELECT count(*) FROM v_scores").fetchall()[0][0] == 230
        stored = con.execute("SELECT s.article_id, concat_ws(' ', a.title, a.body) AS text, s.sentiment_p_negative, "
                             "s.topic_label, e.embedding FROM scores s JOIN articles a USING (article_id) "
                             "JOIN embeddings e USING (article_id) ORDER BY s.article_id LIMIT 40").df()
        run = con.execute("SELECT rows_selected, rows_inserted, n_shards FROM score_runs").fetchall()
    assert run == [(230, 230, 5)]
    # Sharding and bucketing change nothing: the stored scores equal a direct call on the texts
    # (in the precision the flow used: bf16 where this machine's probe chose it).
    from tasks.score import score_precision

    served = ServedModel(Path(settings.registry_dir) / "versions" / version, precision=score_precision(settings))
    frame, emb = served.score(stored.text.tolist())
    np.testing.assert_allclose(stored.sentiment_p_negative, frame.sentiment_p_negative, atol=1e-5)
    assert stored.topic_label.tolist() == frame.topic_label.tolist()
    np.testing.assert_allclose(np.stack(stored.embedding.to_numpy()), emb, atol=1e-4)

    # Nothing new: nothing scored, no model loaded, no staging left behind.
    again = score_flow(shard_size=50)
    assert again["rows_inserted"] == 0 and again["rows_selected"] == 0
    assert not list(settings.staging_dir.glob("score-*"))
    # New articles only are scored next time.
    _articles(settings, 30, seed=1, prefix="b")
    assert score_flow(shard_size=50)["rows_inserted"] == 30


def test_commit_twice_is_idempotent(settings) -> None:
    from models.serving import ServedModel, score_shard
    from warehouse.scores import commit_scores, export_unscored

    _articles(settings, 60)
    version = register_tiny_champion(settings)
    served = ServedModel(Path(settings.registry_dir) / "versions" / version)
    run_dir = settings.staging_dir / "score-test"
    with connect(settings) as con:
        inputs = export_unscored(con, version, run_dir, shard_size=25)
    assert [Path(p).name for p in inputs] == ["input-00000.parquet", "input-00001.parquet", "input-00002.parquet"]
    outs = []
    for p in inputs:
        out = Path(p).with_name(Path(p).name.replace("input", "output"))
        score_shard(served, Path(p), out, extra={"scored_at": datetime.now(UTC), "score_run_id": "r1",
                                                 "flow_run_id": None})
        outs.append(str(out))
    with connect(settings) as con:
        first = commit_scores(con, outs[:2], version)
        second = commit_scores(con, outs, version)  # the first two shards again, plus the third
        third = commit_scores(con, outs, version)
        n = con.execute("SELECT count(*), count(DISTINCT article_id) FROM scores").fetchall()[0]
        left = export_unscored(con, version, settings.staging_dir / "score-next", shard_size=25)
    assert (first.rows_inserted, second.rows_inserted, second.rows_duplicate, third.rows_inserted) == (50, 10, 50, 0)
    assert n == (60, 60) and left == []


def _kill_when(proc: subprocess.Popen, marker: str, extra_delay_s: float) -> bytes:
    """Read the script's progress lines; SIGKILL it ``extra_delay_s`` after ``marker`` appears."""
    seen = b""
    for line in iter(proc.stdout.readline, b""):
        seen += line
        if line.strip() == marker.encode():
            time.sleep(extra_delay_s)
            break
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate(timeout=30)
    return seen + rest


# Kill points: mid-scoring before any commit; right after a commit; a few ms into the next
# shard's scoring or commit (timing-dependent: the warehouse must be fine wherever it lands).
@pytest.mark.parametrize("marker,delay_s", [("scored 1", 0.0), ("committed 2", 0.0), ("scored 5", 0.02)],
                         ids=["before-any-commit", "after-a-commit", "around-a-commit"])
def test_kill_mid_scoring_then_rerun_no_duplicates_no_gaps(settings, marker: str, delay_s: float) -> None:
    _articles(settings, 900, seed=2)
    version = register_tiny_champion(settings)
    artifact = str(Path(settings.registry_dir) / "versions" / version)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-c", SCORE_SCRIPT, str(settings.warehouse_path), str(settings.home), version, artifact]
    proc = subprocess.Popen([*base, "run1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = _kill_when(proc, marker, delay_s)
    con = duckdb.connect(str(settings.warehouse_path))  # opens cleanly: the WAL replays
    try:
        partial = con.execute("SELECT count(*) FROM scores").fetchall()[0][0]
    finally:
        con.close()
    assert b"done" not in out and partial < 900, "the kill must land mid-run"
    if marker == "scored 1":
        assert partial == 0
    if marker == "committed 2":
        assert partial == 120  # shards 0-2 of 40 rows each, committed together
    done = subprocess.run([*base, "run2"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        n, distinct, runs = con.execute(
            "SELECT count(*), count(DISTINCT article_id), count(DISTINCT score_run_id) FROM scores").fetchall()[0]
        missing = con.execute("SELECT count(*) FROM articles a WHERE NOT EXISTS "
                              "(SELECT 1 FROM scores s WHERE s.article_id = a.article_id)").fetchall()[0][0]
        emb = con.execute("SELECT count(*), count(DISTINCT article_id) FROM embeddings").fetchall()[0]
    finally:
        con.close()
    assert (n, distinct, missing) == (900, 900, 0)
    assert emb == (900, 900)
    assert runs == (2 if partial else 1)


def test_export_with_a_limit_takes_the_newest_articles_first(settings) -> None:
    import pyarrow.parquet as pq

    from warehouse.scores import export_unscored

    _articles(settings, 100, seed=3)
    with connect(settings) as con:
        newest = {r[0] for r in con.execute(
            "SELECT article_id FROM articles ORDER BY published_at DESC, article_id LIMIT 30").fetchall()}
        paths = export_unscored(con, "m-any", settings.staging_dir / "score-limit", shard_size=20, limit=30)
    got = [pq.read_table(p).column("article_id").to_pylist() for p in paths]
    assert [len(g) for g in got] == [20, 10] and set(sum(got, [])) == newest
    assert sum(got, []) == sorted(sum(got, []))  # shards are article_id ranges


@pytest.mark.usefixtures("prefect_harness")
def test_each_scorer_serves_its_alias_and_both_models_scores_coexist(settings) -> None:
    """score-hourly's `cpu-champion` falls back to the champion, then follows the student; a newly
    promoted student's backlog starts with the newest articles; v_scores shows the cpu-champion's."""
    from flows.score import score_flow
    from warehouse import registry

    _articles(settings, 60, seed=5)
    teacher = register_tiny_champion(settings)
    fallback = score_flow(model_version="cpu-champion", shard_size=50, limit=10)
    assert fallback["model_version"] == teacher and fallback["rows_inserted"] == 10

    student = register_tiny_champion(settings, seed=1)  # registered as champion by the helper...
    with connect(settings) as con:
        registry.rollback(con)  # ...so give the champion back to the teacher
        registry.promote(con, student, "test student", alias="cpu-champion")
        newest = {r[0] for r in con.execute(
            "SELECT article_id FROM articles ORDER BY published_at DESC, article_id LIMIT 20").fetchall()}
    hourly = score_flow(model_version="cpu-champion", shard_size=50, limit=20)
    assert hourly["model_version"] == student and hourly["rows_inserted"] == 20
    gpu = score_flow(model_version="champion", shard_size=50, all_unscored=True)
    assert gpu["model_version"] == teacher and gpu["rows_inserted"] == 50
    with connect(settings) as con:
        by_student = {r[0] for r in con.execute("SELECT article_id FROM scores WHERE model_version = ?",
                                                [student]).fetchall()}
        assert by_student == newest  # the backlog went newest first
        assert con.execute("SELECT model_version, alias, count(*) FROM v_scores GROUP BY ALL").fetchall() \
            == [(student, "cpu-champion", 20)]
        assert sorted(con.execute("SELECT model_version, alias, count(*) FROM v_scores_by_model "
                                  "GROUP BY ALL").fetchall()) == sorted([(teacher, "champion", 60),
                                                                         (student, "cpu-champion", 20)])
