"""The NRMS-style click model (models.click) on synthetic impressions with a planted preference.

Items belong to 4 latent topics: item vector = topic centroid + noise (d_item = 16). A user reads
topic ``t`` (80% of the history) and clicks topic ``t + 1``; the non-clicks come from the two
other topics. So the click topic is *not* the history topic: similarity between history and
candidates (which a random, untrained tower already preserves) says nothing, and an untrained
model is at chance, while a trained one must learn the history -> click mapping.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.click import (
    ClickConfig,
    ClickModel,
    Impressions,
    load_click_model,
    save_click_model,
    score_impressions,
    score_users,
)
from models.rank_metrics import evaluate_impressions
from models.train_click import train_click_model

N_TOPICS, PER_TOPIC, D_ITEM = 4, 40, 16
CFG = ClickConfig(d_item=D_ITEM, d_model=32, n_heads=2, max_history=10, epochs=6, batch_size=32, lr=3e-3,
                  dropout=0.1)


def _items(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Item vectors (160, 16) float32 and their topics (160,)."""
    rng = np.random.default_rng(seed)
    centroids = rng.normal(size=(N_TOPICS, D_ITEM))
    topic = np.repeat(np.arange(N_TOPICS), PER_TOPIC)
    return (centroids[topic] + 0.6 * rng.normal(size=(len(topic), D_ITEM))).astype(np.float32), topic


def _impressions(topic: np.ndarray, n_users: int, seed: int, empty_every: int = 0) -> Impressions:
    """3 impressions per user, 8 candidates each: 2 clicks on topic t+1, 6 non-clicks on t+2, t+3.

    Every ``empty_every``-th user has no history (0: none).
    """
    rng = np.random.default_rng(seed)
    by_topic = [np.flatnonzero(topic == t) for t in range(N_TOPICS)]
    imps = Impressions([], [], [])
    for u in range(n_users):
        read = int(rng.integers(N_TOPICS))
        liked, others = (read + 1) % N_TOPICS, [(read + 2) % N_TOPICS, (read + 3) % N_TOPICS]
        n_hist = 0 if empty_every and u % empty_every == 0 else int(rng.integers(3, 15))
        hist = np.where(rng.random(n_hist) < 0.8, rng.choice(by_topic[read], n_hist), rng.integers(0, len(topic), n_hist))
        for _ in range(3):
            cands = np.concatenate([rng.choice(by_topic[liked], 2, replace=False),
                                    rng.choice(np.concatenate([by_topic[t] for t in others]), 6, replace=False)])
            labels = np.r_[np.ones(2), np.zeros(6)].astype(np.int64)
            perm = rng.permutation(len(cands))
            imps.history.append(hist.astype(np.int64))
            imps.candidates.append(cands[perm].astype(np.int64))
            imps.labels.append(labels[perm])
    return imps


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, Impressions, Impressions]:
    """(item vectors, train impressions with some empty histories, held-out users' impressions)."""
    vectors, topic = _items()
    return vectors, _impressions(topic, 90, seed=1, empty_every=10), _impressions(topic, 40, seed=2)


@pytest.fixture(scope="module")
def trained(data) -> tuple[ClickModel, dict]:
    """The click model trained on ``data`` (CPU, about a second)."""
    vectors, train, _ = data
    return train_click_model(vectors, train, CFG, device="cpu")


def _auc(model: ClickModel, vectors: np.ndarray, imps: Impressions) -> float:
    return evaluate_impressions(imps.labels, score_impressions(model, vectors, imps, device="cpu"))["auc"]


def test_learns_planted_preference(data, trained) -> None:
    vectors, train, held_out = data
    torch.manual_seed(0)
    untrained = _auc(ClickModel(CFG).eval(), vectors, held_out)
    model, stats = trained
    auc = _auc(model, vectors, held_out)
    assert auc > 0.8, (auc, stats["train_loss"])
    assert auc > untrained + 0.2, (auc, untrained)
    assert not model.training
    assert stats["epochs_run"] == CFG.epochs and stats["best_epoch"] == CFG.epochs
    assert stats["train_samples"] == sum(int(y.sum()) for y in train.labels) and stats["skipped_positives"] == 0
    assert np.isfinite(stats["train_loss"]).all()  # empty histories (every 10th user) give no NaN
    assert stats["train_loss"][-1] < stats["train_loss"][0]


def test_valid_keeps_best_epoch_and_budget_stops(data) -> None:
    vectors, train, held_out = data
    model, stats = train_click_model(vectors, train, CFG, valid=held_out, device="cpu")
    assert len(stats["valid_metrics"]) == stats["epochs_run"]
    best = max(m["auc"] for m in stats["valid_metrics"])
    assert stats["best_valid"]["auc"] == best
    assert _auc(model, vectors, held_out) == pytest.approx(best)  # the best epoch's weights came back
    _, quick = train_click_model(vectors, train, CFG, time_budget_s=0.0, device="cpu")
    assert quick["epochs_run"] == 1 and quick["stopped"] == "time_budget"


def test_impression_without_negatives_is_skipped(data) -> None:
    vectors, train, _ = data
    imps = Impressions(train.history[:5] + [np.array([1, 2])], train.candidates[:5] + [np.array([3, 4])],
                       train.labels[:5] + [np.array([1, 1])])
    _, stats = train_click_model(vectors, imps, ClickConfig(d_item=D_ITEM, d_model=8, n_heads=2, epochs=1),
                                 device="cpu")
    assert stats["skipped_positives"] == 2 and stats["train_samples"] == 10


def test_empty_history_is_finite(data, trained) -> None:
    vectors, _, _ = data
    model, _ = trained
    cands = np.arange(8, dtype=np.int64)
    imps = Impressions([np.zeros(0, np.int64), np.array([5])], [cands, cands], [np.eye(8)[0], np.eye(8)[0]])
    scores = score_impressions(model, vectors, imps, device="cpu")
    assert all(np.isfinite(s).all() and ((s > 0) & (s < 1)).all() for s in scores)
    # every user empty: the batch has no history column at all
    assert np.isfinite(score_users(model, vectors, [np.zeros(0, np.int64)] * 3, cands, device="cpu")).all()


def test_save_load_round_trip(data, trained, tmp_path: Path) -> None:
    vectors, _, held_out = data
    model, _ = trained
    save_click_model(model, tmp_path / "click", extra={"item_table": "demo", "auc": 0.9})
    files = sorted(p.name for p in (tmp_path / "click").iterdir())
    assert files == ["click_config.json", "model.safetensors"]
    loaded = load_click_model(tmp_path / "click")
    assert not loaded.training
    before = score_impressions(model, vectors, held_out, device="cpu")
    after = score_impressions(loaded, vectors, held_out, device="cpu")
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def test_score_users_matches_score_impressions(data, trained) -> None:
    vectors, _, held_out = data
    model, _ = trained
    pool = np.array([3, 50, 81, 120, 159, 0, 42], dtype=np.int64)
    histories = held_out.history[::3] + [np.zeros(0, np.int64)]
    grid = score_users(model, vectors, histories, pool, batch_size=4, device="cpu")  # (U, C)
    assert grid.shape == (len(histories), len(pool)) and grid.dtype == np.float32
    per_imp = score_impressions(model, vectors, Impressions(histories, [pool] * len(histories),
                                                            [np.zeros(len(pool))] * len(histories)),
                                batch_size=5, device="cpu")
    np.testing.assert_allclose(grid, np.stack(per_imp), rtol=1e-5, atol=1e-6)


def test_training_is_reproducible(data) -> None:
    vectors, train, _ = data
    cfg = ClickConfig(d_item=D_ITEM, d_model=16, n_heads=2, epochs=2, seed=3)
    state_before = torch.random.get_rng_state()
    a, _ = train_click_model(vectors, train, cfg, device="cpu")
    b, _ = train_click_model(vectors, train, cfg, device="cpu")
    assert torch.equal(torch.random.get_rng_state(), state_before)  # the caller's RNG is untouched
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb), ka
    c, _ = train_click_model(vectors, train, ClickConfig(**{**cfg.__dict__, "seed": 4}), device="cpu")
    assert not torch.equal(a.empty_user, c.empty_user)


def test_wide_part_learns_a_planted_side_feature_and_is_required() -> None:
    """Item vectors say nothing (pure noise); clicks follow a per-candidate side feature (think
    "clicked a lot in the last hours"). Only the wide part can learn it."""
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(200, D_ITEM)).astype(np.float32)

    def imps(n: int, seed: int) -> Impressions:
        r = np.random.default_rng(seed)
        out = Impressions([], [], [], [])
        for _ in range(n):
            cands = r.choice(200, 10, replace=False)
            hot = r.random(10)  # (10,) the planted feature
            labels = (hot > np.sort(hot)[-3]).astype(np.int64)  # the two hottest are clicked
            out.history.append(r.choice(200, 5))
            out.candidates.append(cands)
            out.labels.append(labels)
            out.features.append(np.stack([hot, r.random(10)], axis=1).astype(np.float32))  # + a useless one
        return out

    cfg = ClickConfig(d_item=D_ITEM, d_model=16, n_heads=2, max_history=10, epochs=4, batch_size=32, lr=3e-3,
                      n_features=2)
    train, test = imps(300, 1), imps(100, 2)
    model, _ = train_click_model(vectors, train, cfg)
    auc = evaluate_impressions(test.labels, score_impressions(model, vectors, test))["auc"]
    assert auc > 0.9
    # score_users applies the same wide part: one user's row equals the impression scores.
    one = score_users(model, vectors, [test.history[0]], test.candidates[0], features=test.features[0], logits=True)
    np.testing.assert_allclose(one[0], score_impressions(model, vectors, Impressions(
        [test.history[0]], [test.candidates[0]], [test.labels[0]], [test.features[0]]), logits=True)[0], rtol=1e-5)
    with pytest.raises(ValueError, match="side features"):
        score_impressions(model, vectors, Impressions(test.history, test.candidates, test.labels))


def test_standardize_undoes_huge_dimensions_and_survives_save_load(data, tmp_path: Path) -> None:
    """A pretrained LM's hidden states carry a few dimensions thousands of times larger than the rest:
    with ``standardize`` the model sees z-scores (fitted on the item table, saved with the weights),
    so it learns the planted preference as well as on clean vectors and reloads to the same scores."""
    from dataclasses import replace

    vectors, train, held_out = data
    loud = vectors.copy()
    loud[:, :2] = loud[:, :2] * 5000.0 + 20000.0  # two "massive activation" dimensions
    cfg = replace(CFG, standardize=True)
    model, _ = train_click_model(loud, train, cfg, device="cpu")
    assert _auc(model, loud, held_out) > 0.9
    assert torch.allclose(model.item_mean[:2], torch.from_numpy(loud[:, :2].mean(axis=0)), rtol=1e-4)
    save_click_model(model, tmp_path / "std")
    again = load_click_model(tmp_path / "std")
    assert again.cfg.standardize and torch.equal(again.item_scale, model.item_scale)
    for a, b in zip(score_impressions(model, loud, held_out), score_impressions(again, loud, held_out), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert "item_mean" not in ClickModel(CFG).state_dict()  # models saved before the option still load
