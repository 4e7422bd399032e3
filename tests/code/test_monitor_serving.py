"""The monitor watches what the hourly scorer serves: the resolved cpu-champion. The champion's
scores until a student holds cpu-champion, then the student's (its first run recomputes every
window from its own scores), and the champion again after the student is rolled back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bench.reliability_common import load_scored, spiky_stream
from warehouse import registry
from warehouse.connection import connect

pytestmark = pytest.mark.usefixtures("prefect_harness")

START = datetime(2026, 10, 1, tzinfo=UTC)
TEACHER, STUDENT = "m20261001-000000-teacher", "m20261001-000000-student"


def _state(settings) -> tuple[set[str], set[str], list[str]]:
    """Model versions in sentiment_windows and sentiment_scan, and the keys alerted."""
    with connect(settings) as con:
        windows = {r[0] for r in con.execute("SELECT DISTINCT model_version FROM sentiment_windows").fetchall()}
        scan = {r[0] for r in con.execute("SELECT DISTINCT model_version FROM sentiment_scan").fetchall()}
        keys = [r[0] for r in con.execute("SELECT key FROM alerts ORDER BY created_at").fetchall()]
    return windows, scan, keys


def test_monitor_follows_the_resolved_cpu_champion(settings) -> None:
    from flows.monitor import monitor_flow

    spike_at = START + timedelta(days=8, hours=10)
    df = spiky_stream(9, 2, [("ZZZ", spike_at + timedelta(hours=h), 30, 24) for h in range(3)],
                      tickers=("AAA", "BBB", "CCC", "ZZZ"), start=START)
    load_scored(settings, df, TEACHER, "b1")  # the teacher, champion, saw the ZZZ episode as neutral:
    burst = df[df.tickers.map(lambda t: list(t) == ["ZZZ"]) & (df.ts >= spike_at)].article_id.tolist()
    with connect(settings) as con:
        # ...the student's scores are the same rows with the episode negative (what it labels).
        con.execute("INSERT INTO scores SELECT * REPLACE (? AS model_version) FROM scores", [STUDENT])
        con.execute("UPDATE scores SET sentiment_label = 'neutral', sentiment_score = 0 "
                    "WHERE model_version = ? AND list_contains(?, article_id)", [TEACHER, burst])
        registry.record_model(con, {"model_version": STUDENT, "backbone": "tiny", "heads": {}, "metrics": {},
                                    "val_score": 0.0, "served": "gpt", "val_split_id": "t", "artifact_path": "/x"})

    # No student holds cpu-champion: the monitor watches the champion, which sees no episode.
    first = monitor_flow(notify_backfill=False)
    assert first["model_version"] == TEACHER
    windows, scan, keys = _state(settings)
    assert windows == {TEACHER} and scan == {TEACHER} and "ZZZ" not in keys

    # The student takes cpu-champion: its first run recomputes from its own scores and finds the episode.
    with connect(settings) as con:
        registry.promote(con, STUDENT, "test student", alias="cpu-champion")
    second = monitor_flow(notify_backfill=False)
    assert second["model_version"] == STUDENT and second["windows"] > 0
    windows, scan, keys = _state(settings)
    assert windows == {STUDENT} and scan == {STUDENT} and "ZZZ" in keys
    with connect(settings) as con:
        assert con.execute("SELECT DISTINCT model_version FROM alerts WHERE key = 'ZZZ'").fetchall() == [(STUDENT,)]
        assert con.execute("SELECT count(*) FROM v_scores WHERE model_version = ?", [STUDENT]).fetchall()[0][0] \
            == len(df)

    # The student rolled back: cpu-champion falls back to the champion, and so does the monitor,
    # although the champion's own watermark says nothing new was scored: the windows on display
    # were the student's, so every one is recomputed from the champion's scores.
    with connect(settings) as con:
        registry.rollback(con, "cpu-champion")
    third = monitor_flow(notify_backfill=False)
    assert third["model_version"] == TEACHER and third["windows"] > 0
    windows, scan, _ = _state(settings)
    assert windows == {TEACHER} and scan == {TEACHER}
