"""Profiles, topic affinity, candidate pool and the cold-start prior, against hand-computed values."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from models.recommend import (
    RecInputs, RecParams, candidate_pool, rank_users, topic_affinity, user_profiles)

AS_OF = datetime(2026, 10, 10, 12, tzinfo=UTC)


def _inputs() -> RecInputs:
    """Five items: a, a, b, (no topic, no vector), b published long ago."""
    times = pd.to_datetime(["2026-10-10 11:00", "2026-10-10 06:00", "2026-10-09 20:00", "2026-10-10 10:00",
                            "2026-10-01 00:00"]).to_numpy("datetime64[us]")
    return RecInputs(
        item_ids=np.array(["i0", "i1", "i2", "i3", "i4"], dtype=object),
        vectors=np.array([[1, 0], [0, 1], [1, 1], [0, 0], [-1, 0]], dtype=np.float32),
        has_vector=np.array([True, True, True, False, True]),
        topics=np.array(["a", "a", "b", None, "b"], dtype=object),
        sentiment=np.array([0.5, -0.5, 0.0, np.nan, 0.1], dtype=np.float32),
        item_time=times, events=pd.DataFrame())


def test_user_profile_weights_halve_per_half_life_clicks_back() -> None:
    vectors = _inputs().vectors
    # history [i0, i1], half-life 1 click: weights 0.5 (older) and 1 (newest) -> (0.5*[1,0] + [0,1]) / 1.5
    got = user_profiles(vectors, [np.array([0, 1]), np.array([], np.int64)], half_life=1.0)
    np.testing.assert_allclose(got[0], [1 / 3, 2 / 3], rtol=1e-6)
    np.testing.assert_array_equal(got[1], [0, 0])  # no history: zeros, flagged cold elsewhere


@pytest.mark.parametrize("history, expected", [
    # 2 clicks on a, prior {a: .25, b: .75}, strength 2: a = (2 + .5) / 4, b = (0 + 1.5) / 4
    ([0, 1], {"a": 0.625, "b": 0.375}),
    # no click: the prior itself
    ([], {"a": 0.25, "b": 0.75}),
    # the item without a topic does not count as a click on any topic
    ([2, 3], {"a": 0.5 / 3, "b": 2.5 / 3}),
])
def test_topic_affinity_is_shrunk_towards_the_prior(history: list[int], expected: dict[str, float]) -> None:
    got = topic_affinity(_inputs().topics, [np.array(history, np.int64)], {"a": 0.25, "b": 0.75}, strength=2.0)[0]
    assert got == pytest.approx(expected)


def test_candidate_pool_is_recent_embedded_most_clicked_first() -> None:
    pop = np.array([1, 5, 1, 9, 9], dtype=np.float32)
    pool = candidate_pool(_inputs(), AS_OF, RecParams(candidate_hours=24, max_candidates=10), pop)
    # i3 has no vector, i4 is 9 days old; i1 is most clicked; i0 and i2 tie on clicks, newer first.
    assert list(pool) == [1, 0, 2]
    assert list(candidate_pool(_inputs(), AS_OF, RecParams(candidate_hours=24, max_candidates=2), pop)) == [1, 0]


def test_cold_start_user_gets_popularity_plus_topic_prior_and_warm_user_skips_read_items() -> None:
    inputs = _inputs()
    params = RecParams(candidate_hours=24, top_k=3, cold_popularity_weight=0.7)
    pop = np.array([1, 3, 0, 0, 0], dtype=np.float32)
    pool = np.array([0, 1, 2])
    prior = {"a": 0.8, "b": 0.2}
    users = pd.DataFrame({"user_id": ["cold", "warm"], "history": [np.array([], np.int64), np.array([1])],
                          "last_seen_at": [AS_OF, AS_OF]})
    logits = np.array([[0.0, 0.0, 0.0], [2.0, 5.0, -1.0]])
    recs, profiles = rank_users(inputs, users, pool, pop, AS_OF, params, logits, prior)

    cold = recs[recs.user_id == "cold"].set_index("article_id")
    # popularity log1p-normalised by the pool's max (log 4): i0 = log 2 / log 4 = .5, i1 = 1, i2 = 0;
    # topic prior normalised by the top topic's share: a -> 1, b -> .25.
    expected = {"i0": 0.7 * 0.5 + 0.3 * 1.0, "i1": 0.7 * 1.0 + 0.3 * 1.0, "i2": 0.7 * 0.0 + 0.3 * 0.25}
    assert cold["score"].to_dict() == pytest.approx(expected)
    assert list(cold.sort_values("rank").index) == ["i1", "i0", "i2"]
    assert cold["click_prob"].isna().all() and cold["similarity"].isna().all() and cold["cold_start"].all()

    warm = recs[recs.user_id == "warm"].sort_values("rank")
    assert list(warm.article_id) == ["i0", "i2"]  # i1 was clicked already: never recommended
    assert warm["click_prob"].tolist() == pytest.approx([1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(1.0))])
    assert warm["recency_h"].tolist() == pytest.approx([1.0, 16.0])
    assert profiles.set_index("user_id")["n_clicks"].to_dict() == {"cold": 0, "warm": 1}
    assert profiles.set_index("user_id")["profile"]["cold"] is None


def test_side_features_count_only_earlier_impressions() -> None:
    from models.click import Impressions
    from models.recommend import pool_features, streaming_features

    inputs = _inputs()
    times = pd.to_datetime(["2026-10-10 11:00", "2026-10-10 11:30", "2026-10-10 12:00"])
    meta = pd.DataFrame({"impression_id": ["x", "y", "z"], "user_id": ["u", "v", "u"], "time": times})
    imps = Impressions(history=[np.array([], np.int64)] * 3,
                       candidates=[np.array([0, 1]), np.array([0, 2]), np.array([0, 1])],
                       labels=[np.array([1, 0]), np.array([1, 0]), np.array([0, 1])])
    ctr0 = 3 / 6  # the log's click rate: the prior of every smoothed rate (5 pseudo-views)
    feats = streaming_features(inputs, imps, meta, ctr0=ctr0, cut_hours=0)  # live counts
    # i0 at the third impression: clicked twice in two earlier views -> (2 + 5 * .5) / (2 + 5)
    assert feats[2][0] == pytest.approx([np.log1p(2), 10 * 4.5 / 7, np.log1p(1.0)])  # i0 published 11:00
    # the first impression sees no earlier click: the prior rate; i1 is 6 h old at 11:00
    assert feats[0][1] == pytest.approx([0.0, 10 * ctr0, np.log1p(5.0)])
    # Nightly cuts: 11:00 and 11:30 share the 00:00 cut (nothing counted yet, ages at midnight,
    # clipped at 0 for items that appeared later); the 12:00 impression is past a 6-hour cut at
    # 12:00 and sees both earlier impressions, ages at 12:00.
    nightly = streaming_features(inputs, imps, meta, ctr0=ctr0, cut_hours=24)
    assert nightly[1][0] == pytest.approx([0.0, 10 * ctr0, 0.0])
    six = streaming_features(inputs, imps, meta, ctr0=ctr0, cut_hours=6)
    assert six[1][0] == pytest.approx([0.0, 10 * ctr0, np.log1p(0.0)])  # cut 06:00: i0 not yet published
    assert six[2][0] == pytest.approx([np.log1p(2), 10 * 4.5 / 7, np.log1p(1.0)])
    # serving counts every impression up to as_of: i1 clicked once in two views
    pool = pool_features(inputs, imps, np.array([1]), AS_OF)
    assert pool[0] == pytest.approx([np.log1p(1), 10 * (1 + 2.5) / 7, np.log1p(6.0)])
