"""The score flow on a local Dask cluster commits exactly what the serial flow commits (issue 6)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import register_tiny_champion
from tests.model.test_score_flow import _articles
from warehouse.connection import connect

SCORES = ("SELECT s.article_id, s.model_version, s.sentiment_label, s.sentiment_p_negative, s.sentiment_p_neutral, "
          "s.sentiment_p_positive, s.sentiment_score, s.topic_label, s.topic_confidence, s.topic_probs, s.n_tokens, "
          "s.truncated, s.flow_run_id, e.embedding FROM scores s JOIN embeddings e USING (article_id, model_version) "
          "ORDER BY s.article_id")


def _warehouse(root: Path, monkeypatch: pytest.MonkeyPatch):
    """Point the environment (and so ``get_settings()`` inside the flow) at a fresh warehouse under ``root``."""
    from core.settings import Settings, get_settings

    monkeypatch.setenv("NEWSPULSE_WAREHOUSE_PATH", str(root / "warehouse" / "test.duckdb"))
    monkeypatch.setenv("NEWSPULSE_HOME", str(root / "var"))
    get_settings.cache_clear()
    s = Settings()
    s.ensure_dirs()
    return s


def _same_champion(settings, version: str, artifact_path: str) -> None:
    """Register the very same model files as champion of a second warehouse."""
    from warehouse import registry as db_registry
    from warehouse.migrate import migrate

    with connect(settings) as con:
        migrate(con)
        db_registry.record_model(con, {
            "model_version": version, "backbone": "tiny", "heads": {"topic": ["markets", "earnings"]}, "metrics": {},
            "val_score": 0.0, "served": "gpt", "val_split_id": "test", "artifact_path": artifact_path})
        db_registry.promote(con, version, "test champion")


def _score(settings, **kwargs) -> tuple[dict, float, pd.DataFrame]:
    from flows.score import score_flow

    t0 = time.perf_counter()
    summary = score_flow(shard_size=30, **kwargs)
    seconds = time.perf_counter() - t0
    with connect(settings) as con:
        return summary, seconds, con.execute(SCORES).df()


@pytest.mark.usefixtures("prefect_harness")
def test_dask_scores_equal_serial_scores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import get_settings

    serial_wh = _warehouse(tmp_path / "serial", monkeypatch)
    _articles(serial_wh, 240, seed=4)
    version = register_tiny_champion(serial_wh)
    artifact = str(Path(serial_wh.registry_dir) / "versions" / version)
    serial, serial_s, want = _score(serial_wh, task_runner="threads")

    dask_wh = _warehouse(tmp_path / "dask", monkeypatch)
    _articles(dask_wh, 240, seed=4)
    _same_champion(dask_wh, version, artifact)
    dist, dask_s, got = _score(dask_wh, task_runner="dask", workers=2)
    get_settings.cache_clear()
    print(f"\nserial (threads): {serial_s:.1f} s, dask (local cluster, 2 workers): {dask_s:.1f} s")

    assert serial["shards"] == dist["shards"] == 8 and serial["rows_inserted"] == dist["rows_inserted"] == 240
    assert (serial["task_runner"], dist["task_runner"]) == ("threads", "dask-local-2")
    assert serial["shard_processes"] == 1
    assert dist["shard_processes"] == 2, "both dask worker processes must have scored shards"
    assert not list(dask_wh.staging_dir.glob("score-*"))

    # Same rows, no duplicates, same labels, same numbers (shard order and process do not matter).
    assert len(got) == len(want) == got.article_id.nunique() == 240
    assert got.article_id.tolist() == want.article_id.tolist()
    assert got.flow_run_id.notna().all() and got.flow_run_id.nunique() == 1  # the score flow run, not a subflow's
    for col in ("model_version", "sentiment_label", "topic_label", "n_tokens", "truncated"):
        assert got[col].tolist() == want[col].tolist(), col
    for col in ("sentiment_p_negative", "sentiment_p_neutral", "sentiment_p_positive", "sentiment_score",
                "topic_confidence"):
        np.testing.assert_allclose(got[col], want[col], rtol=0, atol=1e-6, err_msg=col)
    np.testing.assert_allclose(np.stack(got.topic_probs.to_numpy()), np.stack(want.topic_probs.to_numpy()),
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.stack(got.embedding.to_numpy()), np.stack(want.embedding.to_numpy()),
                               rtol=0, atol=1e-5)
    with connect(dask_wh) as con:
        assert con.execute("SELECT count(*) FROM embeddings").fetchall()[0][0] == 240
        assert con.execute("SELECT n_shards, rows_inserted FROM score_runs").fetchall() == [(8, 240)]


def test_unknown_task_runner_is_refused() -> None:
    from flows.score import shard_runner

    with pytest.raises(ValueError, match="unknown task runner"):
        shard_runner("ray", 2, None)
    runner, threads, label = shard_runner("dask", 2, None)
    assert label == "dask-local-2" and threads == max(1, (os.cpu_count() or 1) // 2)
    assert runner.cluster_kwargs == {"n_workers": 2, "threads_per_worker": 1, "processes": True,
                                     "dashboard_address": None}
    runner, threads, label = shard_runner("dask", 2, "tcp://10.0.0.5:8786")
    assert runner.address == "tcp://10.0.0.5:8786" and threads is None
