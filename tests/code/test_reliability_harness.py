"""Seeded, small versions of the reliability benchmarks (bench/reliability_*.py).

Crash safety (2 ingest kills + 1 scoring kill, then re-runs), alert delivery with the receiver
down and answering 500, and ~10 s of concurrent ingest/score/monitor with an analyst reading.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import reliability_alerts, reliability_concurrency, reliability_crash


def test_sigkill_ingest_and_scoring_then_rerun_exactly_once(tmp_path: Path) -> None:
    # Fixed kill windows (seconds after start) instead of calibration runs, to stay short; a kill
    # that lands before the first write or after the end is still a valid (if easy) trial.
    result = reliability_crash.run(trials=2, score_trials=1, seed=0, work=tmp_path, rows_per_file=1000,
                                   articles=400, ingest_window=(1.5, 3.5), score_window=(3.0, 5.0))
    for name in ("ingest", "scoring"):
        r = result[name]
        assert r["trials"] == (2 if name == "ingest" else 1)
        assert r["duplicates"] == 0 and r["losses"] == 0, r["detail"]
        assert r["dirty_opens"] == 0 and r["rerun_failures"] == 0, r["detail"]
        assert r["staging_left"] == 0, r["detail"]  # the killed run's staged files were cleaned
    assert result["ingest"]["partial_batches"] == 0 and result["ingest"]["identity_failures"] == 0
    assert result["ok"]


@pytest.mark.usefixtures("prefect_harness")
def test_alerts_pending_while_receiver_fails_then_delivered_exactly_once(tmp_path: Path) -> None:
    result = reliability_alerts.run(work=tmp_path, cases=("down", "http500"), harness=False)
    for case, r in result["cases"].items():
        assert r["alerts"] > 0 and r["all_pending_while_failing"], (case, r)
        assert r["first_run_delivered"] == 0 and r["attempts_while_failing"] == 3, (case, r)
        assert r["duplicates"] == 0 and r["undelivered"] == 0 and r["still_pending"] == 0, (case, r)
        assert r["deliveries"] == r["alerts"] and r["exactly_once"], (case, r)
    assert result["cases"]["http500"]["backoff_ok"], result["cases"]["http500"]["backoff_gaps_s"]
    assert result["ok"]


@pytest.mark.usefixtures("prefect_harness")
def test_concurrent_flows_and_analyst_lose_nothing(tmp_path: Path) -> None:
    result = reliability_concurrency.run(seconds=10, work=tmp_path, harness=False)
    assert result["records_ingested"] > 0 and result["reader"]["queries"] > 0, result
    assert result["duplicates"] == 0 and result["lost_writes"] == 0, result
    assert result["reader_errors"] == 0, result["reader"]
    # Writers wait for the analyst's short read-only locks (connect() retries): no run fails.
    samples = [s for f in result["flows"].values() for s in f["error_samples"]]
    assert result["writer_errors"] == 0, samples
