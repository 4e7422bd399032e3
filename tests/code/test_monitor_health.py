"""Model health (issue 17 item 1) and undated/historical rows (item 3).

A warehouse gets a stream of already-scored articles with texts and embeddings (no model needed):
two sources for two weeks, and from a known day one source turns into another kind of text
(other words, longer, embeddings elsewhere, unsure predictions). The checks must flag that source
from that day, open one drift alert (not one a day), leave the stable source alone, say so in a
sentiment spike's evidence, and handle an empty stream, a champion without a reference and a
reference that is still warming up.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from models import health as mh
from warehouse.connection import connect
from warehouse.migrate import migrate

START = datetime(2026, 10, 1, tzinfo=UTC)
MODEL = "m20261001-000000-health"
NEWS = "shares fell rose profit loss bank market oil said growth warns record deal cut stocks rally bonds".split()
OTHER = "my card has not arrived yet how do i top up why was transfer declined please help me pin".split()


def _stream(days: int = 14, per_day: int = 60, drift_from: int | None = 10, drift_source: str = "blog",
            seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(days):
        for src in ("wire", "blog"):
            drifted = drift_from is not None and d >= drift_from and src == drift_source
            for i in range(per_day):
                vocab, n_words = (OTHER, rng.integers(12, 20)) if drifted else (NEWS, rng.integers(5, 10))
                text = " ".join(rng.choice(vocab, n_words))
                if drifted:
                    p = rng.dirichlet([3, 3, 3])
                else:
                    p = rng.dirichlet([1, 1, 1]) * 0.3
                    p[rng.choice(3, p=[0.25, 0.5, 0.25])] += 0.7
                emb = rng.normal(2.0 if drifted else 0.0, 1.0, 16)
                rows.append({"article_id": f"{src}-{d}-{i}", "source": src, "title": text, "n_tokens": int(n_words),
                             "ts": START + timedelta(days=d, minutes=int(rng.integers(0, 1440))),
                             "p": p, "emb": emb.astype(np.float32)})
    return pd.DataFrame(rows)


def _load(settings, df: pd.DataFrame, model: str = MODEL, batch_id: str = "b1", dated: bool = True) -> None:
    from warehouse import registry as db_registry

    labels = np.array(mh.SENTIMENTS)
    probs = np.stack(df.p.to_numpy())
    arts = pd.DataFrame({"article_id": df.article_id, "source": df.source, "title": df.title, "body": "",
                         "published_at": df.ts if dated else pd.NaT, "ingested_at": df.ts,
                         "tickers": [[] for _ in range(len(df))], "batch_id": batch_id})
    scores = pd.DataFrame({
        "article_id": df.article_id, "model_version": model, "sentiment_label": labels[probs.argmax(axis=1)],
        "sentiment_p_negative": probs[:, 0], "sentiment_p_neutral": probs[:, 1], "sentiment_p_positive": probs[:, 2],
        "sentiment_score": probs[:, 2] - probs[:, 0], "topic_label": "markets", "n_tokens": df.n_tokens,
        "truncated": False, "scored_at": datetime.now(UTC), "score_run_id": batch_id})
    emb = pd.DataFrame({"article_id": df.article_id, "model_version": model, "embedding": [e.tolist() for e in df.emb]})
    with connect(settings) as con:
        migrate(con)
        if db_registry.champion(con) is None:
            db_registry.record_model(con, {"model_version": model, "backbone": "tiny", "heads": {}, "metrics": {},
                                           "val_score": 0.0, "served": "gpt", "val_split_id": "t",
                                           "artifact_path": "/nonexistent"})
            db_registry.promote(con, model, "test")
        for name, frame, table in (("a", arts, "articles"), ("s", scores, "scores"), ("e", emb, "embeddings")):
            con.register(name, frame)
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {name}")
            con.unregister(name)


def _run(settings, full: bool = False):
    from tasks.health import run_health
    from warehouse import registry as db_registry

    with connect(settings) as con:
        return run_health(con, settings, db_registry.get_model(con, "cpu-champion"), full=full)


def _health(settings) -> pd.DataFrame:
    with connect(settings) as con:
        return con.execute("SELECT * FROM model_health ORDER BY window_start, dimension, key").df()


def _drift_alerts(settings) -> list[dict]:
    from warehouse.alerts import list_alerts

    with connect(settings) as con:
        return [a for a in list_alerts(con) if a["dimension"] == "drift"]


# ----------------------------------------------------------------------------- the statistics


def test_reference_files_round_trip_without_pickle(tmp_path) -> None:
    df = _stream(days=3, drift_from=None)
    probs = np.stack(df.p.to_numpy())
    ref = mh.build_reference(labels=list(np.array(mh.SENTIMENTS)[probs.argmax(1)]), confidence=probs.max(1),
                             n_tokens=df.n_tokens.to_numpy(), texts=df.title.tolist(), embeddings=np.stack(df.emb),
                             second_labels=None, origin="test")
    mh.save_reference(tmp_path, ref)
    assert {p.name for p in tmp_path.iterdir()} == {mh.STATS_FILE, mh.EMB_FILE, mh.VOCAB_FILE}
    np.load(tmp_path / mh.EMB_FILE, allow_pickle=False)  # a plain array, no pickle inside
    back = mh.load_reference(tmp_path)
    assert back is not None and back.stats == json.loads(json.dumps(ref.stats)) and back.vocab == ref.vocab
    assert back.embeddings.shape == (min(len(df), 512), 16)
    assert mh.load_reference(tmp_path / "missing") is None


def test_checks_fire_on_other_text_and_stay_quiet_on_the_same() -> None:
    df = _stream(days=20, drift_from=14, drift_source="blog")
    ref_rows = df[df.ts < START + timedelta(days=7)]
    probs = np.stack(ref_rows.p.to_numpy())
    ref = mh.build_reference(labels=list(np.array(mh.SENTIMENTS)[probs.argmax(1)]), confidence=probs.max(1),
                             n_tokens=ref_rows.n_tokens.to_numpy(), texts=ref_rows.title.tolist(),
                             embeddings=np.stack(ref_rows.emb), second_labels=None, origin="test")

    def day(d: int, src: str) -> dict:
        w = df[(df.ts >= START + timedelta(days=d)) & (df.ts < START + timedelta(days=d + 1)) & (df.source == src)]
        p = np.stack(w.p.to_numpy())
        return mh.window_health(ref, labels=list(np.array(mh.SENTIMENTS)[p.argmax(1)]), confidence=p.max(1),
                                n_tokens=w.n_tokens.to_numpy(), texts=w.title.tolist(), embeddings=np.stack(w.emb))

    quiet = [day(d, s) for d in range(7, 20) for s in ("wire", "blog") if not (s == "blog" and d >= 14)]
    assert not any(r["drifting"] for r in quiet), [r["fired"] for r in quiet if r["drifting"]]
    moved = [day(d, "blog") for d in range(14, 20)]
    assert all(r["drifting"] for r in moved)
    assert {"embedding_auc", "unknown_rate", "length_psi", "low_conf"} <= set(moved[0]["fired"])
    empty = mh.window_health(ref, labels=[], confidence=np.array([]), n_tokens=np.array([]))
    assert empty["drifting"] is False and empty["note"] == "empty window"


# ----------------------------------------------------------------------------- in the warehouse


def test_drift_found_one_alert_per_episode_stable_source_quiet(settings) -> None:
    _load(settings, _stream())
    out = _run(settings)
    assert out["reference"].startswith("trailing: the previous 14 day(s)"), out
    h = _health(settings)
    first = h[h.window_start == START]  # nothing before it: measured, not judged
    assert not first.drifting.any() and first.note.str.contains("not judged").all()
    assert len(h) == 14 * 3  # every day: overall, wire, blog
    blog = h[(h.key == "blog")].set_index("window_start")
    drifting_days = sorted(blog.index[blog.drifting])
    assert drifting_days == [START + timedelta(days=d) for d in range(10, 14)]
    assert not h[h.key == "wire"].drifting.any()
    alerts = _drift_alerts(settings)
    blog_alerts = [a for a in alerts if a["key"] == "blog"]
    assert len(blog_alerts) == 1, alerts  # four drifting days, one episode
    a = blog_alerts[0]
    assert a["metric"] == "model_drift" and a["window_start"] == START + timedelta(days=10)
    assert a["last_window_end"] >= START + timedelta(days=13)
    assert a["evidence"][0]["kind"] == "model_drift" and "embedding_auc" in a["evidence"][0]["checks_fired"]
    # Nothing new: nothing recomputed, no alert added; a re-run over everything adds nothing either.
    assert _run(settings)["status"] == "no new scores"
    _run(settings, full=True)
    assert len(_drift_alerts(settings)) == len(alerts) and len(_health(settings)) == 14 * 3


def test_drift_event_and_message(settings) -> None:
    from tasks.alerts import alert_message, spike_event

    _load(settings, _stream())
    _run(settings)
    a = next(a for a in _drift_alerts(settings) if a["key"] == "blog")
    event = spike_event(a, notify=True)
    assert event.event == "newspulse.model.drift" and event.resource["newspulse.dimension"] == "drift"
    subject, body = alert_message(a)
    assert subject.startswith("[") and "Model drift: source blog" in subject
    assert "embeddings unlike the reference" in body and a["alert_id"] in body


def test_warming_up_loses_nothing_and_empty_stream(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "drift_reference", "serving")
    monkeypatch.setattr(settings, "drift_reference_days", 7)
    with connect(settings) as con:
        migrate(con)
    from tasks.health import run_health

    with connect(settings) as con:
        assert run_health(con, settings, None)["status"] == "no model"
    df = _stream()
    _load(settings, df[df.ts < START + timedelta(days=4)])
    out = _run(settings)
    assert out["status"].startswith("warming up") and out["rows"] == 0
    _load(settings, df[df.ts >= START + timedelta(days=4)], batch_id="b2")
    out = _run(settings)
    assert out["days"] == 14 and len(_health(settings)) == 14 * 3  # the warm-up days were kept, not skipped
    assert out["reference"].startswith("serving: the first 7 day(s)")
    # The reference was stored for the champion without a version directory (the health cache).
    assert (settings.home / "health" / MODEL / "serving_reference_stats.json").is_file()
    h = _health(settings)
    assert sorted(h[h.drifting].key.unique()) == ["*", "blog"]


def test_training_reference_backfill_says_where_it_came_from(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "drift_reference", "training")
    monkeypatch.setattr(settings, "drift_reference_days", 7)
    _load(settings, _stream())
    out = _run(settings)
    assert "no reference stored at registration" in out["reference"]
    assert set(_health(settings).reference) == {out["reference"]}
    assert (settings.home / "health" / MODEL / mh.STATS_FILE).is_file()


def test_spike_on_a_drifting_source_says_so(settings) -> None:
    from warehouse.health import drift_notes

    _load(settings, _stream())
    _run(settings)
    spike = {"dimension": "source", "key": "blog", "window_start": START + timedelta(days=11, hours=3),
             "window_end": START + timedelta(days=11, hours=4), "evidence": []}
    with connect(settings) as con:
        notes = drift_notes(con, MODEL, spike)
        assert drift_notes(con, MODEL, {**spike, "key": "wire"}) == []
        topic = drift_notes(con, MODEL, {**spike, "dimension": "topic", "key": "markets",
                                         "evidence": [{"source": "blog"}, {"source": "wire"}]})
    assert len(notes) == 1 and notes[0]["scope"] == "source blog" and notes[0]["kind"] == "model_drift"
    assert [n["scope"] for n in topic] == ["source blog"]
    from tasks.alerts import alert_message

    alert = {**spike, "alert_id": "a1", "severity": "high", "n_negative": 20, "n_articles": 30, "observed": 0.66,
             "baseline": 0.2, "p_value": 1e-6, "granularity": "1h", "evidence": notes + [
                 {"title": "t", "source": "blog", "score": -0.7}]}
    _, body = alert_message(alert)
    assert "MODEL DRIFT: source blog was drifting" in body and "  - t (blog" in body


# ----------------------------------------------------------------------------- item 3: undated rows


def _batch(settings, batch_id: str, started: datetime, watermark: datetime | None) -> None:
    with connect(settings) as con:
        migrate(con)
        con.execute("INSERT INTO ingest_batches (batch_id, source, target_table, started_at, finished_at, rows_read, "
                    "rows_inserted, rows_duplicate, rows_quarantined, watermark, status) "
                    "VALUES (?, 'x', 'articles', ?, ?, 0, 0, 0, 0, ?, 'succeeded')",
                    [batch_id, started, started, watermark])


def test_undated_rows_of_a_historical_dataset_are_left_out_live_feed_rows_kept(settings) -> None:
    from warehouse.monitor import create_monitor_input

    now = START + timedelta(days=30)
    _batch(settings, "hist", now, START - timedelta(days=900))   # an old dataset ingested today
    _batch(settings, "feed", now, now - timedelta(hours=1))      # a live pull, one item without a date
    _batch(settings, "nodates", now, None)                       # a batch without any dates
    df = _stream(days=1, per_day=5, drift_from=None)
    for b in ("hist", "feed", "nodates"):
        _load(settings, df.assign(article_id=b + df.article_id, ts=now), batch_id=b, dated=False)
    _load(settings, df.assign(article_id="dated" + df.article_id), batch_id="hist", dated=True)
    with connect(settings) as con:
        create_monitor_input(con, MODEL, 48.0)
        got = dict(con.execute("SELECT left(article_id, 4), count(*) FROM monitor_input GROUP BY 1").fetchall())
    # dated rows keep their own (old) time; undated ones count only from the live batch
    assert got == {"feed": 10, "date": 10}


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("live_lag_h", ["48", "100000"])
def test_old_dataset_ingested_today_does_not_page(settings, monkeypatch: pytest.MonkeyPatch, live_lag_h: str) -> None:
    """A historical dataset, all negative, half of it undated, ingested now: no alert may page.
    (With a live lag long enough to call the old batch live, the old rule, the same data pages.)"""
    from flows.monitor import monitor_flow
    from warehouse.alerts import list_alerts

    monkeypatch.setenv("NEWSPULSE_ALERT_BLOCK", "")
    from core.settings import get_settings

    get_settings.cache_clear()
    now = datetime.now(UTC).replace(microsecond=0)
    old = now - timedelta(days=400)
    # A normal live stream for the last 10 days (the baseline)...
    live = _stream(days=10, per_day=40, drift_from=None)
    live = live.assign(ts=now - timedelta(days=10) + (live.ts - START))
    _load(settings, live, batch_id="live")
    _batch(settings, "live", now, now)
    # ...then an old dataset lands at once: 300 negative rows published 400 days ago and 300 undated.
    bad = _stream(days=1, per_day=150, drift_from=None)
    bad = bad.assign(p=[np.array([0.9, 0.05, 0.05])] * len(bad))
    _batch(settings, "gold", now, old)
    _load(settings, bad.assign(article_id="d" + bad.article_id, ts=old), batch_id="gold")
    _load(settings, bad.assign(article_id="u" + bad.article_id, ts=now), batch_id="gold", dated=False)
    with pytest.MonkeyPatch.context() as m:
        m.setenv("NEWSPULSE_DRIFT_ENABLED", "false")
        m.setenv("NEWSPULSE_MONITOR_LIVE_LAG_H", live_lag_h)
        get_settings.cache_clear()
        monitor_flow()
    with connect(settings) as con:
        alerts = list_alerts(con)
    # Delivery is off (NEWSPULSE_ALERT_BLOCK=""): an alert that would have paged is opened on channel 'none'.
    paged = [a for a in alerts if a["delivery_channel"] != "not sent (stale)"]
    if live_lag_h == "48":
        assert not paged, paged
    else:  # the undated rows land in 'now' windows: a fresh, pageable spike (what the rule prevents)
        assert paged and all(a["window_end"] > now - timedelta(hours=48) for a in paged)


@pytest.mark.usefixtures("prefect_harness")
def test_monitor_flow_runs_health_pages_drift_and_draws_it(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The monitor flow end to end: health rows, a drift alert delivered like a spike (delivery off
    here: opened on channel 'none' since it is recent), the report's health section and picture."""
    from flows.monitor import monitor_flow
    from core.settings import get_settings

    monkeypatch.setenv("NEWSPULSE_ALERT_BLOCK", "")
    get_settings.cache_clear()
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    df = _stream(drift_from=12)  # the drift begins a day and a half ago: recent enough to page
    _load(settings, df.assign(ts=now - timedelta(days=13, hours=12) + (df.ts - START)))
    summary = monitor_flow()
    h = summary["health"]
    assert h["rows"] == 3 * h["days"] and h["days"] >= 14 and h["new_alerts"], h
    drift = _drift_alerts(settings)
    assert {a["key"] for a in drift} >= {"blog"} and all(a["status"] == "open" for a in drift)
    assert {a["delivery_channel"] for a in drift} == {"none"}  # recent: it would have paged
    assert list(settings.reports_dir.glob("health-*.png"))
    again = monitor_flow()  # nothing new: no health work, no new alert
    assert again["health"]["status"] == "no new scores" and len(_drift_alerts(settings)) == len(drift)


def test_registration_stores_the_training_reference_and_the_monitor_uses_it(settings, monkeypatch) -> None:
    """What register_model stores (the served model on validation texts, the training words), read
    back by a 'training' monitor run instead of being backfilled."""
    from tests.conftest import register_tiny_champion
    from tasks.health import registration_reference

    version = register_tiny_champion(settings)
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(NEWS, 6)) for _ in range(60)]
    ex = pd.DataFrame({"text": texts, "split": ["train"] * 40 + ["validation"] * 20,
                       "sentiment": rng.choice(mh.SENTIMENTS, 60)})
    path = settings.home / "examples.parquet"
    ex.to_parquet(path)
    version_dir = settings.registry_dir / "versions" / version
    stats = registration_reference(version_dir, path)
    assert stats["origin"] == "registration: 20 validation texts" and stats["n_embeddings"] == 20
    ref = mh.load_reference(version_dir)
    assert ref is not None and ref.embeddings.shape[0] == 20 and "shares" in ref.vocab
    # The champion's scores: same kind of text; a 'training' run compares with the stored reference.
    monkeypatch.setattr(settings, "drift_reference", "training")
    df = _stream(days=3, drift_from=None)
    df["emb"] = [e for e in np.repeat(ref.embeddings[:1], len(df), axis=0)]
    _load(settings, df, model=version)
    out = _run(settings)
    assert out["status"] == "reference stored" and out["reference"] == stats["origin"], out
