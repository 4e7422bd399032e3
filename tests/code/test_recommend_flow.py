"""The recommend flow end to end on a planted click log (no backbone needed).

Articles carry the champion's scores and embeddings directly (embedding = topic centroid + noise),
users prefer one topic and click it; the flow must rank each user's topic first, give cold-start
users the popularity + topic prior, and replace (not duplicate) rows on a re-run.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core.settings import get_settings
from warehouse import registry as db_registry
from warehouse.connection import connect
from warehouse.migrate import migrate

pytestmark = pytest.mark.usefixtures("prefect_harness")

START = datetime(2026, 10, 1, tzinfo=UTC)
MODEL = "m20261001-000000-rec"
TOPICS = ["markets", "energy", "tech"]


def _load(settings, seed: int = 0, n_users: int = 40, cold_users: int = 3) -> dict[str, str]:
    """Articles + scores + embeddings + MIND-style behaviors; returns {user: preferred topic}."""
    rng = np.random.default_rng(seed)
    n_items, days = 240, 4
    topic = rng.integers(len(TOPICS), size=n_items)
    centroids = rng.normal(size=(len(TOPICS), 16))
    emb = centroids[topic] + 0.4 * rng.normal(size=(n_items, 16))
    ts = [START + timedelta(seconds=float(s)) for s in np.sort(rng.uniform(0, days * 86400, n_items))]
    ids = [f"a{i:04d}" for i in range(n_items)]
    arts = pd.DataFrame({"article_id": ids, "source": "wire", "source_id": [f"N{i}" for i in range(n_items)],
                         "title": [f"{TOPICS[t]} story {i}" for i, t in enumerate(topic)], "body": "",
                         "published_at": ts, "ingested_at": ts, "batch_id": "test"})
    scores = pd.DataFrame({"article_id": ids, "model_version": MODEL, "sentiment_label": "neutral",
                           "sentiment_p_negative": 0.2, "sentiment_p_neutral": 0.6, "sentiment_p_positive": 0.2,
                           "sentiment_score": rng.uniform(-1, 1, n_items), "topic_label": [TOPICS[t] for t in topic],
                           "n_tokens": 5, "truncated": False, "scored_at": START, "score_run_id": "t"})
    embs = pd.DataFrame({"article_id": ids, "model_version": MODEL, "embedding": [e.astype(np.float32).tolist() for e in emb]})
    prefs, rows = {}, []
    for u in range(n_users + cold_users):
        user, cold = f"U{u:03d}", u >= n_users
        pref = int(rng.integers(len(TOPICS)))
        prefs[user] = TOPICS[pref]
        own = np.flatnonzero(topic == pref)
        history = [] if cold else [f"N{i}" for i in rng.choice(own[own < 60], 5, replace=False)]
        for k in range(4):
            t = START + timedelta(days=1, hours=float(rng.uniform(0, 70)))
            live = [i for i, s in enumerate(ts) if t - timedelta(hours=36) < s <= t]
            shown = rng.choice(live, min(12, len(live)), replace=False)
            clicks = [(not cold) and rng.random() < (0.7 if topic[i] == pref else 0.04) for i in shown]
            rows.append({"source": "clicks", "impression_id": f"{u}-{k}", "user_id": user, "time": t,
                         "history": history, "impressions": [{"item": f"N{i}", "clicked": bool(c)}
                                                             for i, c in zip(shown, clicks, strict=True)],
                         "batch_id": "test", "ingested_at": t})
    beh = pd.DataFrame(rows)
    with connect(settings) as con:
        migrate(con)
        db_registry.record_model(con, {"model_version": MODEL, "backbone": "tiny", "heads": {}, "metrics": {},
                                       "val_score": 0.0, "served": "gpt", "val_split_id": "t",
                                       "artifact_path": "/nonexistent"})
        db_registry.promote(con, MODEL, "test")
        for name, frame, table in (("arts", arts, "articles"), ("sc", scores, "scores"), ("em", embs, "embeddings"),
                                   ("beh", beh, "behaviors")):
            con.register(name, frame)
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {name}")
    return prefs


def _recs(settings) -> pd.DataFrame:
    with connect(settings) as con:
        return con.execute("SELECT * FROM v_user_recommendations ORDER BY user_id, rank").df()


def test_recommend_flow_ranks_preferred_topics_and_reruns_replace(settings, monkeypatch):
    from flows.recommend import recommend_flow

    monkeypatch.setenv("NEWSPULSE_REC_TOP_K", "5")
    monkeypatch.setenv("NEWSPULSE_REC_MIN_TRAIN_IMPRESSIONS", "20")
    monkeypatch.setenv("NEWSPULSE_REC_CLICK_EPOCHS", "8")
    get_settings.cache_clear()
    settings = get_settings()
    prefs = _load(settings)

    first = recommend_flow()["clicks"]
    assert first["rows_written"] > 0 and first["click_model"]
    recs = _recs(settings)
    assert (recs.groupby("user_id").size() <= 5).all()
    assert recs.groupby("user_id")["rank"].apply(lambda r: list(r) == list(range(1, len(r) + 1))).all()

    warm = recs[~recs.cold_start]
    hit = (warm.topic == warm.user_id.map(prefs)).mean()
    assert hit > 0.8, f"only {hit:.0%} of warm users' recommendations are on their preferred topic"
    assert warm.click_prob.notna().all() and warm.similarity.notna().all()
    # The held-out newest impressions: the click model beats popularity on a planted preference.
    m = first["metrics"]
    assert m["click_model"]["auc"] > 0.8 and m["click_model"]["auc"] > m["popularity"]["auc"]

    # Cold-start users (no click ever) get the same popularity + topic prior ranking.
    cold = recs[recs.cold_start]
    assert cold.user_id.nunique() == 3 and cold.click_prob.isna().all() and cold.similarity.isna().all()
    orders = cold.groupby("user_id")["article_id"].apply(tuple)
    assert orders.nunique() == 1
    assert cold.groupby("user_id")["score"].apply(lambda s: s.is_monotonic_decreasing).all()
    # Nobody is recommended an item they already clicked (history rows map N<i> -> a<i>).
    with connect(settings) as con:
        seen = con.execute(
            "SELECT count(*) FROM rec_features r JOIN (SELECT user_id, unnest(history) AS item FROM behaviors) h "
            "ON h.user_id = r.user_id AND 'a' || lpad(substr(h.item, 2), 4, '0') = r.article_id").fetchone()[0]
        profiles = con.execute("SELECT count(*), count(profile) FROM user_profiles").fetchone()
    assert seen == 0
    assert profiles == (43, 40)

    # Re-run: the click model is reused and every user's rows are replaced, not duplicated.
    second = recommend_flow()["clicks"]
    assert second["metrics"] == first["metrics"] and second["rows_replaced"] == first["rows_written"]
    with connect(settings) as con:
        n, distinct = con.execute("SELECT count(*), count(DISTINCT (source, user_id, article_id, model_version)) "
                                  "FROM rec_features").fetchone()
        runs = con.execute("SELECT count(*) FROM rec_runs").fetchone()[0]
    assert n == distinct == first["rows_written"] and runs == 2
    assert not list(settings.staging_dir.glob("recommend-*"))

    # The CLI reads the same view; a user id is a bound parameter, never SQL.
    from typer.testing import CliRunner

    from newspulse.cli import app

    shown = CliRunner().invoke(app, ["recs", "U000", "--format", "json"])
    assert shown.exit_code == 0, shown.output
    assert [r["rank"] for r in json.loads(shown.output)] == [1, 2, 3, 4, 5]
    assert CliRunner().invoke(app, ["recs", "U000' OR '1'='1"]).exit_code == 1
    status = CliRunner().invoke(app, ["status"])
    assert status.exit_code == 0 and "click_model_auc" in status.output and "clicks" in status.output


def test_recommend_flow_without_champion_or_clicks_does_nothing(settings):
    from flows.recommend import recommend_flow

    with connect(settings) as con:
        migrate(con)
    assert recommend_flow() == {}
    assert recommend_flow(sources=["nothing"])["nothing"]["rows_written"] == 0


def test_recommend_flow_embeds_missing_items_and_ranks_without_a_click_model(settings, monkeypatch):
    """A real (tiny, untrained) champion: the flow scores the items it has not embedded, and with too
    few impressions for a click model it ranks by the hand-made score (click_prob stays NULL)."""
    from flows.recommend import recommend_flow
    from tests.conftest import register_tiny_champion

    monkeypatch.setenv("NEWSPULSE_REC_MIN_TRAIN_IMPRESSIONS", "100000")
    get_settings.cache_clear()
    settings = get_settings()
    _load(settings, n_users=6, cold_users=1)
    with connect(settings) as con:  # forget the planted scores: the tiny champion has scored nothing
        con.execute("DELETE FROM embeddings")
        con.execute("DELETE FROM scores")
    register_tiny_champion(settings, topics=tuple(TOPICS))

    out = recommend_flow()["clicks"]
    assert out["click_model"] is None and out["items_without_embedding"] == 0 and out["rows_written"] > 0
    with connect(settings) as con:
        scored = con.execute("SELECT count(*) FROM v_scores").fetchone()[0]
        probs = con.execute("SELECT count(click_prob), count(similarity), count(*) FROM v_user_recommendations "
                            "WHERE NOT cold_start").fetchone()
    assert scored == 240  # every article now has the champion's scores and embedding
    assert probs[0] == 0 and probs[1] == probs[2] > 0


def test_old_click_models_are_pruned_newest_kept(tmp_path):
    import os

    from tasks.recommend import _prune_click_models

    for i in range(7):
        (tmp_path / f"m-{i}").mkdir()
        os.utime(tmp_path / f"m-{i}", (1_000_000 + i, 1_000_000 + i))
    (tmp_path / "m-7.tmp-abc123").mkdir()  # a model being written right now
    removed = _prune_click_models(tmp_path, keep=5)
    assert sorted(removed) == ["m-0", "m-1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-2", "m-3", "m-4", "m-5", "m-6", "m-7.tmp-abc123"]
