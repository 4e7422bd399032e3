"""Per-user recommendations from click logs: profiles, candidates, features, top-k.

Plain numpy / pandas over the two Parquet files ``warehouse.recommend.export_rec_inputs`` writes
(no DuckDB, no Prefect), so a shard can run on any worker:

- **items** are rows of one table: the champion's pooled embedding (zeros when the backbone has
  not embedded the item yet, flagged by ``has_vector``), topic label, sentiment score, item time;
- **histories** are point in time: an impression sees the log's own ``history`` field plus what
  the user clicked in earlier impressions, never anything later (no leakage into training);
- **user profile** = recency-weighted mean of the clicked items' embeddings (weights halve every
  ``profile_half_life`` clicks back), **topic affinity** = the user's click share per topic,
  shrunk towards the global click share with ``topic_prior_strength`` pseudo-clicks;
- **candidates** = the items published (or first shown) in the last ``candidate_hours`` that have
  an embedding, most clicked first, at most ``max_candidates``;
- **side features** of a candidate for the click model: its clicks, its smoothed click rate and
  its age, as a nightly run would have seen them (counts frozen at the last cut before the
  impression), so training sees the same stale popularity that the batch serves;
- **score**: the click model's probability for users with history; for cold-start users (no
  click yet) a prior of popularity and the global topic click share.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.click import Impressions


FEATURE_NAMES = ("log1p_clicks", "ctr_x10", "log1p_age_h")  # the click model's side features, in order
CTR_PRIOR_STRENGTH = 5.0  # pseudo-views of the log's overall click rate in a candidate's smoothed rate


@dataclass
class RecParams:
    """Knobs of the ranking (mirrors the ``rec_*`` settings)."""

    candidate_hours: float = 48.0
    popularity_hours: float = 24.0
    max_candidates: int = 2000
    top_k: int = 20
    profile_half_life: float = 10.0
    topic_prior_strength: float = 5.0
    cold_popularity_weight: float = 0.7


@dataclass
class RecInputs:
    """One source's exported items and events, with events pointing at item rows."""

    item_ids: np.ndarray  # (N,) article_id
    vectors: np.ndarray  # (N, d) float32, zeros where has_vector is False
    has_vector: np.ndarray  # (N,) bool
    topics: np.ndarray  # (N,) topic label or None
    sentiment: np.ndarray  # (N,) float32, NaN when unscored
    item_time: np.ndarray  # (N,) datetime64[us], UTC
    events: pd.DataFrame  # impression_id, user_id, time, kind, pos, row, clicked


def _utc_naive(values: Any) -> np.ndarray:
    stamps = pd.DatetimeIndex(pd.to_datetime(values, utc=True))
    return stamps.tz_convert(None).to_numpy().astype("datetime64[us]")


def load_rec_inputs(events_path: Path | str, items_path: Path | str) -> RecInputs:
    """Read the exported Parquet files; embeddings become one float32 matrix."""
    items = pd.read_parquet(items_path)
    events = pd.read_parquet(events_path)
    has = items["embedding"].notna().to_numpy()
    width = len(items["embedding"][has].iloc[0]) if has.any() else 1
    vectors = np.zeros((len(items), width), dtype=np.float32)
    if has.any():
        vectors[has] = np.stack(items["embedding"][has].to_numpy()).astype(np.float32)
    row_of = pd.Series(np.arange(len(items)), index=items["article_id"])
    events = events.assign(row=row_of.reindex(events["article_id"]).to_numpy(), time=_utc_naive(events["time"]))
    return RecInputs(
        item_ids=items["article_id"].to_numpy(), vectors=vectors, has_vector=has,
        topics=items["topic_label"].astype(object).where(items["topic_label"].notna(), None).to_numpy(),
        sentiment=items["sentiment_score"].astype("float32").to_numpy(),
        item_time=_utc_naive(items["item_time"]), events=events.drop(columns=["article_id"]),
    )


def impressions_from_events(inputs: RecInputs) -> tuple[Impressions, pd.DataFrame]:
    """Every impression as item rows, in time order, with its point-in-time history.

    Returns ``(impressions, meta)``; ``meta`` has ``impression_id, user_id, time`` per impression
    in the same order. History = the log's history field, then the user's clicks in earlier
    impressions that the field does not already hold (oldest first).
    """
    ev = inputs.events
    meta = (ev[["impression_id", "user_id", "time"]].drop_duplicates("impression_id")
            .sort_values(["time", "impression_id"], kind="stable").reset_index(drop=True))
    hist = ev[ev["kind"] == "history"].sort_values(["impression_id", "pos"])
    shown = ev[ev["kind"] == "shown"].sort_values(["impression_id", "pos"])
    hist_of = {k: g.to_numpy(np.int64) for k, g in hist.groupby("impression_id", sort=False)["row"]}
    cand_of = {k: g.to_numpy(np.int64) for k, g in shown.groupby("impression_id", sort=False)["row"]}
    lab_of = {k: g.to_numpy(np.int8) for k, g in shown.groupby("impression_id", sort=False)["clicked"]}
    empty = np.zeros(0, np.int64)
    clicked_before: dict[str, list[int]] = {}
    histories, candidates, labels = [], [], []
    for imp_id, user in zip(meta["impression_id"], meta["user_id"], strict=True):
        own = hist_of.get(imp_id, empty)
        earlier = clicked_before.setdefault(user, [])
        seen = set(own.tolist())
        histories.append(np.concatenate([own, np.array([r for r in earlier if r not in seen], np.int64)]))
        cand, lab = cand_of.get(imp_id, empty), lab_of.get(imp_id, np.zeros(0, np.int8))
        candidates.append(cand)
        labels.append(lab)
        earlier.extend(int(r) for r in cand[lab == 1])
    return Impressions(history=histories, candidates=candidates, labels=labels), meta


def _side_features(clicks: np.ndarray, shown: np.ndarray, age_h: np.ndarray, ctr0: float) -> np.ndarray:
    """(C, 3) float32 side features from counts seen so far and the age in hours (see FEATURE_NAMES)."""
    ctr = (clicks + CTR_PRIOR_STRENGTH * ctr0) / (shown + CTR_PRIOR_STRENGTH)
    return np.stack([np.log1p(clicks), 10.0 * ctr, np.log1p(np.maximum(age_h, 0.0))], axis=1).astype(np.float32)


def log_click_rate(imps: Impressions, idx: Sequence[int] | None = None) -> float:
    """Clicks per shown item over the log (or its impressions ``idx``): the prior of every smoothed rate."""
    idx = range(len(imps.candidates)) if idx is None else idx
    shown = sum(len(imps.candidates[i]) for i in idx)
    return float(sum(int(imps.labels[i].sum()) for i in idx) / shown) if shown else 0.0


def streaming_features(inputs: RecInputs, imps: Impressions, meta: pd.DataFrame, *, ctr0: float,
                       cut_hours: float = 24.0) -> list[np.ndarray]:
    """Per impression, (C_i, 3) side features of its candidates as a batch run would have seen them.

    With ``cut_hours`` > 0 (the nightly default), an impression at time t sees the counts of every
    impression before its cut c = t floored to ``cut_hours`` (UTC; midnight for 24) and the ages
    at c, exactly what a recommend run at c serves all the next period: stale popularity, and
    items that appeared after c looking brand new. With 0 the counts are live (every earlier
    impression) and the age is taken at t, for request-time scoring. Nothing from the impression
    itself or later leaks in; ``ctr0`` should come from the training impressions only.
    """
    n = len(inputs.item_ids)
    shown, clicks = np.zeros(n), np.zeros(n)
    frozen_shown, frozen_clicks, current = shown, clicks, None
    times = meta["time"].to_numpy("datetime64[us]")
    step = np.timedelta64(int(cut_hours * 3600), "s") if cut_hours > 0 else None
    out = []
    for i, (cand, lab) in enumerate(zip(imps.candidates, imps.labels, strict=True)):
        at = times[i] if step is None else np.datetime64(0, "us") + (times[i] - np.datetime64(0, "us")) // step * step
        if step is not None and at != current:  # first impression past a new cut: freeze the counts so far
            frozen_shown, frozen_clicks, current = shown.copy(), clicks.copy(), at
        age_h = (at - inputs.item_time[cand]).astype("timedelta64[s]").astype(np.float64) / 3600.0
        out.append(_side_features(frozen_clicks[cand], frozen_shown[cand], age_h, ctr0))
        np.add.at(shown, cand, 1)
        np.add.at(clicks, cand[lab == 1], 1)
    return out


def pool_features(inputs: RecInputs, imps: Impressions, pool: np.ndarray, as_of: datetime) -> np.ndarray:
    """(C, 3) side features of the candidate pool as of ``as_of``: every impression of the log counts.

    The serving twin of :func:`streaming_features` at a cut: counts of the whole log, ages at as_of.
    """
    n = len(inputs.item_ids)
    shown, clicks = np.zeros(n), np.zeros(n)
    for cand, lab in zip(imps.candidates, imps.labels, strict=True):
        np.add.at(shown, cand, 1)
        np.add.at(clicks, cand[lab == 1], 1)
    age_h = (_utc_naive([as_of])[0] - inputs.item_time[pool]).astype("timedelta64[s]").astype(np.float64) / 3600.0
    return _side_features(clicks[pool], shown[pool], age_h, log_click_rate(imps))


def user_histories(imps: Impressions, meta: pd.DataFrame) -> pd.DataFrame:
    """Per user at the end of the log: ``user_id, history (item rows, oldest first), last_seen_at``.

    The history is the newest impression's point-in-time history plus that impression's clicks.
    """
    last = meta.reset_index().groupby("user_id", sort=True).tail(1)
    rows = []
    for i, user, seen in zip(last["index"], last["user_id"], last["time"], strict=True):
        clicks = imps.candidates[i][imps.labels[i] == 1]
        hist = imps.history[i]
        rows.append((user, np.concatenate([hist, clicks[~np.isin(clicks, hist)]]), seen))
    return pd.DataFrame(rows, columns=["user_id", "history", "last_seen_at"]).sort_values("user_id", ignore_index=True)


def popularity(inputs: RecInputs, as_of: datetime, hours: float) -> np.ndarray:
    """(N,) clicks per item in impressions within ``(as_of - hours, as_of]``."""
    ev = inputs.events
    end = _utc_naive([as_of])[0]
    mask = (ev["kind"] == "shown") & (ev["clicked"] == True) & (ev["time"] <= end)  # noqa: E712
    mask &= ev["time"] > end - np.timedelta64(int(hours * 3600), "s")
    return np.bincount(ev.loc[mask, "row"].to_numpy(np.int64), minlength=len(inputs.item_ids)).astype(np.float32)


def candidate_pool(inputs: RecInputs, as_of: datetime, params: RecParams, pop: np.ndarray) -> np.ndarray:
    """Item rows that may be recommended: recent, embedded, most clicked then newest first."""
    end = _utc_naive([as_of])[0]
    fresh = (inputs.item_time <= end) & (inputs.item_time > end - np.timedelta64(int(params.candidate_hours * 3600), "s"))
    rows = np.flatnonzero(fresh & inputs.has_vector)
    age = (end - inputs.item_time[rows]).astype("timedelta64[s]").astype(np.float64)
    order = np.lexsort((age, -pop[rows]))  # popularity first, then recency
    return rows[order[: params.max_candidates]]


def user_profiles(vectors: np.ndarray, histories: list[np.ndarray], half_life: float) -> np.ndarray:
    """(U, d) recency-weighted mean of each history's item vectors (zeros for an empty history)."""
    out = np.zeros((len(histories), vectors.shape[1]), dtype=np.float32)
    for u, hist in enumerate(histories):
        if len(hist):
            w = 0.5 ** (np.arange(len(hist))[::-1] / half_life)  # newest click weighs 1
            out[u] = (w[:, None] * vectors[hist]).sum(axis=0) / w.sum()
    return out


def topic_click_shares(topics: np.ndarray, clicked_rows: np.ndarray) -> dict[str, float]:
    """Global click share per topic (the prior of topic affinity and of cold-start scores)."""
    labels = pd.Series(topics[clicked_rows]).dropna()
    return (labels.value_counts(normalize=True).to_dict() if len(labels) else {})


def topic_affinity(topics: np.ndarray, histories: list[np.ndarray], prior: dict[str, float],
                   strength: float) -> list[dict[str, float]]:
    """Per user, ``{topic: (clicks on topic + strength * prior) / (clicks + strength)}``."""
    out = []
    for hist in histories:
        counts = pd.Series(topics[hist]).dropna().value_counts().to_dict() if len(hist) else {}
        n = sum(counts.values())
        out.append({t: (counts.get(t, 0) + strength * p) / (n + strength) for t, p in prior.items()})
    return out


def _cosine(profiles: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    a = profiles / np.maximum(np.linalg.norm(profiles, axis=1, keepdims=True), 1e-9)
    b = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
    return a @ b.T  # (U, C)


def rank_users(inputs: RecInputs, users: pd.DataFrame, pool: np.ndarray, pop: np.ndarray, as_of: datetime,
               params: RecParams, click_logits: np.ndarray | None, prior: dict[str, float]
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Top-k candidates per user with the features behind them, and the user profiles.

    ``click_logits`` is (U, C) from the click model for ``users`` x ``pool`` (None without one);
    probabilities are taken in float64 so confident items do not tie at 1.0.
    Already-clicked items are never recommended. Returns ``(recs, profiles)`` frames whose columns
    match ``rec_features`` / ``user_profiles`` minus the run-level constants.
    """
    hists = list(users["history"])
    profiles = user_profiles(inputs.vectors, hists, params.profile_half_life)
    affinity = topic_affinity(inputs.topics, hists, prior, params.topic_prior_strength)
    cold = np.array([len(h) == 0 for h in hists])
    sim = _cosine(profiles, inputs.vectors[pool]) if len(pool) else np.zeros((len(hists), 0), np.float32)
    pop_norm = np.log1p(pop[pool]) / max(np.log1p(pop[pool]).max(initial=0.0), 1e-9)
    top_prior = max(prior.values(), default=1.0)
    prior_topic = np.array([prior.get(t, 0.0) / top_prior if t else 0.0 for t in inputs.topics[pool]])
    cold_score = params.cold_popularity_weight * pop_norm + (1 - params.cold_popularity_weight) * prior_topic
    click_probs = None if click_logits is None else 1.0 / (1.0 + np.exp(-click_logits.astype(np.float64)))
    if click_probs is None:  # no click model yet: similarity, topic taste and popularity by hand
        warm = 0.5 * (sim + 1) / 2 + 0.2 * pop_norm
    else:
        warm = click_probs
    end = _utc_naive([as_of])[0]
    recency_h = (end - inputs.item_time[pool]).astype("timedelta64[s]").astype(np.float64) / 3600.0
    k = min(params.top_k, len(pool))
    rec_rows = []
    for u, user in enumerate(users["user_id"]):
        score = (cold_score if cold[u] else warm[u]).astype(np.float64).copy()
        if click_probs is None and not cold[u]:
            score += 0.3 * np.array([affinity[u].get(t, 0.0) if t else 0.0 for t in inputs.topics[pool]])
        score[np.isin(pool, hists[u])] = -np.inf  # read already
        top = np.argsort(-score, kind="stable")[:k]
        top = top[np.isfinite(score[top])]
        for rank, j in enumerate(top, start=1):
            t = inputs.topics[pool[j]]
            rec_rows.append((user, inputs.item_ids[pool[j]], float(score[j]), rank,
                             None if cold[u] or click_probs is None else float(click_probs[u, j]),
                             None if cold[u] else float(sim[u, j]), affinity[u].get(t) if t else None,
                             float(recency_h[j]), float(pop[pool[j]]), _nan_none(inputs.sentiment[pool[j]]),
                             bool(cold[u])))
    recs = pd.DataFrame(rec_rows, columns=["user_id", "article_id", "score", "rank", "click_prob", "similarity",
                                           "topic_affinity", "recency_h", "popularity", "sentiment", "cold_start"])
    sent = [float(np.nanmean(inputs.sentiment[h])) if len(h) and np.isfinite(inputs.sentiment[h]).any() else None
            for h in hists]
    prof = pd.DataFrame({
        "user_id": users["user_id"], "n_clicks": [len(h) for h in hists], "last_seen_at": users["last_seen_at"],
        "profile": [None if c else p.tolist() for c, p in zip(cold, profiles, strict=True)],
        "topic_affinity": [json.dumps({t: round(v, 4) for t, v in a.items()}) for a in affinity],
        "sentiment_affinity": sent,
    })
    return recs, prof


def _nan_none(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


# --------------------------------------------------------------------------- offline baselines

def popularity_scores(imps: Impressions) -> list[np.ndarray]:
    """Baseline: each candidate's clicks as its side features count them (``imps.features`` column 0:
    before the impression's nightly cut, or before the impression with live features), ties broken
    by the smoothed click rate (column 1)."""
    if imps.features is None:
        raise ValueError("popularity needs the impressions' streaming features")
    return [f[:, 0].astype(np.float64) + 1e-4 * f[:, 1] for f in imps.features]


def cosine_scores(imps: Impressions, vectors: np.ndarray, half_life: float = 1e9) -> list[np.ndarray]:
    """Baseline: cosine of the (by default plain-mean) history embedding and each candidate's."""
    profiles = user_profiles(vectors, imps.history, half_life)
    return [_cosine(profiles[i : i + 1], vectors[c])[0] for i, c in enumerate(imps.candidates)]
