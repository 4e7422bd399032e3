"""Behaviour of the scan detector (warehouse.scan, warehouse.scan_alerts) on small DuckDB inputs."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from tests.code.test_monitor_detection import T0, _burst, _con, _flat
from warehouse.monitor import day_cutoff, group_episodes
from warehouse.scan import Confusion, ScanParams, confusion_from_model, scan_arrays
from warehouse.scan_alerts import detect, explain

COOLDOWN = timedelta(hours=12)


def _alarms(con, params: ScanParams = ScanParams(), conf: Confusion = Confusion()) -> list[dict]:
    return detect(con, params, day_cutoff(con, None), conf)


def _quiet_key(hours: int = 7 * 24, every: int = 1) -> list[tuple]:
    """srcY: one article every ``every`` hours, a quarter negative (a thin key with its own history)."""
    return [(f"y{h}", T0 + timedelta(hours=h, minutes=30), "srcY", "macro", [], h % 4 == 0, False, 0.0, "y")
            for h in range(0, hours, every)]


def test_burst_alarms_at_its_key_with_the_window_length_that_fired():
    onset = T0 + timedelta(days=8, hours=15)
    rows = _burst(_flat(), onset, 30, 25, topic="energy", source="src0")
    con = _con(rows)
    alarms = _alarms(con)
    hit = [s for s in alarms if (s["dimension"], s["key"]) == ("topic", "energy")]
    assert hit and hit[0]["window_start"] <= onset < hit[0]["window_end"]
    assert hit[0]["granularity"] in ("15m", "30m", "1h") and hit[0]["p_value"] < ScanParams().alpha
    assert hit[0]["window_end"] - onset <= timedelta(hours=1)  # found within the hour
    # Only keys that contain the burst alarm, and the broad ones are explained by the topic.
    assert {(s["dimension"], s["key"]) for s in alarms} <= {("topic", "energy"), ("overall", "*"), ("source", "src0")}
    alerts, _ = group_episodes(alarms, {}, COOLDOWN)
    explain(con, alerts)
    assert [a["key"] for a in alerts if not a.get("explained_by")] == ["energy"]
    assert all(a["explained_by"] == "topic:energy" for a in alerts if a["key"] != "energy")


def test_flat_stream_gives_no_alarm():
    """Ten quiet days (~2,900 articles, 10 keys, every slot and length scanned): nothing fires."""
    assert _alarms(_con(_flat(seed=3))) == []


@pytest.mark.parametrize(("n", "k", "alarm"), [(600, 500, True), (6, 5, False)])
def test_count_awareness(n, k, alarm):
    start = T0 + timedelta(days=8, hours=12)
    con = _con(_burst(_flat() + _quiet_key(9 * 24), start, n, k, source="srcY", topic="energy"))
    assert bool([s for s in _alarms(con) if s["key"] == "srcY"]) is alarm


def test_episode_across_a_window_edge_is_one_alert():
    """Two halves of one episode on both sides of 04:00 (the old 4 h tumbling edge): one alert
    whose window spans the edge."""
    edge = T0 + timedelta(days=8, hours=4)
    rows = _burst(_burst(_flat(), edge - timedelta(hours=1), 9, 7, topic="energy"), edge, 9, 7, topic="energy")
    alarms = [s for s in _alarms(_con(rows)) if s["key"] == "energy"]
    alerts, _ = group_episodes(alarms, {}, COOLDOWN)
    assert len(alerts) == 1
    assert any(s["window_start"] < edge < s["window_end"] for s in alarms)


def test_key_without_history_borrows_the_overall_share():
    """A ticker never seen before: 25 of 30 negative pages (its expectation is the market's share);
    5 of 5 stays quiet."""
    at = T0 + timedelta(days=8, hours=9)
    big = _burst(_flat(), at, 30, 25, tickers=["NEWCO"])
    hit = [s for s in _alarms(_con(big)) if s["key"] == "NEWCO"]
    assert hit and 0.15 < hit[0]["baseline"] < 0.4
    small = _burst(_flat(), at, 5, 5, tickers=["NEWCO"])
    assert not [s for s in _alarms(_con(small)) if s["key"] == "NEWCO"]


def test_warm_up_and_unknown_overall_history_never_alarm():
    rows = _burst(_flat(days=2, per_hour=2), T0 + timedelta(hours=3), 60, 55, source="src0")
    assert _alarms(_con(rows)) == []  # the overall key has < min_history articles of history


def test_confusion_matrix_from_the_registry_row():
    cm = [[58, 30, 12], [3, 90, 7], [1, 5, 94]]  # rows true (neg, neu, pos), columns predicted
    row = {"model_version": "m1", "served": "sentiment: ensemble (w=0.25), topic: baseline",
           "heads": {"sentiment_labels": ["negative", "neutral", "positive"]},
           "metrics": {"sentiment": {"validation": {"ensemble": {"confusion_matrix": cm}}}}}
    conf = confusion_from_model(row)
    assert conf.sensitivity == pytest.approx(58.5 / 101.5) and conf.false_rate == pytest.approx(5 / 203)
    assert "ensemble" in conf.source and conf.true_share(np.array([conf.false_rate]))[0] == 0
    # No stored matrix (an old champion, a test model): identity, and it says why.
    for bad in ({"metrics": {}}, {"metrics": {"sentiment": {"validation": {}}}}, None):
        none = confusion_from_model(bad)
        assert (none.sensitivity, none.false_rate) == (1.0, 0.0) and none.source.startswith("none")


def test_noisy_classifier_floors_count_true_negatives():
    """A classifier that calls 58% of negatives: 4 predicted of 8 is ~6 true negatives (tested),
    while at face value 4 negatives sit under the floor of 5 (not even tested)."""
    kid = np.zeros(700, np.int64)
    s = np.arange(700, dtype=np.int64) + 10_000
    n = np.full(700, 2)
    k = (np.arange(700) % 50 == 0).astype(np.int64)  # 1% negative
    n[-4:], k[-4:] = 2, 1  # the last hour: 8 articles, 4 negative
    params = ScanParams(min_history=0, volume=False)
    plain = scan_arrays(kid, s, n, k, 0, params)
    noisy = scan_arrays(kid, s, n, k, 0, params, Confusion(0.58, 0.04, "test"))
    assert np.isnan(plain["p_value"][-1]) and noisy["p_value"][-1] < params.alpha


def test_explained_only_by_an_alert_known_when_the_broad_one_fires():
    con = _con(_burst(_flat(), T0 + timedelta(days=8, hours=9), 30, 25, topic="energy", source="src0"))
    broad = {"dimension": "source", "key": "src0", "window_start": T0 + timedelta(days=8, hours=9),
             "window_end": T0 + timedelta(days=8, hours=10), "last_window_end": T0 + timedelta(days=8, hours=10),
             "n": 34, "n_neg": 27, "baseline": 0.25}
    later = {"dimension": "topic", "key": "energy", "window_start": broad["window_start"],
             "window_end": broad["window_end"] + timedelta(minutes=15),
             "last_window_end": broad["window_end"] + timedelta(minutes=15)}
    assert explain(con, [dict(broad)], [later]) == 0  # it fired after: the source already paged
    stored = dict(broad)  # ... but the stored source alert's record is annotated after the fact
    assert explain(con, [stored], [later], known_first=False) == 1 and stored["explained_by"] == "topic:energy"
    earlier = {**later, "window_end": broad["window_end"]}
    a = dict(broad)
    assert explain(con, [a], [earlier]) == 1 and a["explained_by"] == "topic:energy"


def test_scan_arrays_keeps_input_order_and_lengths():
    rng = np.random.default_rng(0)
    kid = np.repeat([1, 0], 400)
    s = np.concatenate([np.arange(400), np.arange(400)]) + 5_000
    perm = rng.permutation(800)
    n, k = rng.integers(1, 5, 800), np.zeros(800, np.int64)
    out = scan_arrays(kid[perm], s[perm], n[perm], k[perm], 0, ScanParams(min_history=0))
    assert not out["is_spike"].any() and set(out["length"]) == {4}
    base = out["base_n"]
    first = (s[perm] - 5_000) < 96 + 672  # nothing before the longest window + baseline
    assert (base[first & ((s[perm] - 5_000) < 96)] == 0).all()


def test_settings_defaults_mirror_scan_params() -> None:
    from core.settings import Settings

    assert ScanParams.from_settings(Settings()) == ScanParams()


def test_report_picture_draws_the_fired_window(tmp_path) -> None:
    """The scan picture from stored windows and scan rows (thin hours included) is a PNG."""
    from warehouse.migrate import migrate
    from warehouse.monitor import MonitorParams, compute_windows, store_windows
    from warehouse.scan_alerts import store_scan
    from warehouse.scan_report import explained_lines, plot_scan_timelines

    con = _con(_burst(_flat(per_hour=3), T0 + timedelta(days=8, hours=9), 30, 25, topic="energy", source="src0"))
    migrate(con)
    cutoff = day_cutoff(con, None)
    params = ScanParams()
    compute_windows(con, MonitorParams(), cutoff, spike_test=False, keep_slots=True, slots_from=cutoff - params.lookback)
    alarms = detect(con, params, cutoff, Confusion(), slots_ready=True)
    store_windows(con, cutoff, "m")
    assert store_scan(con, cutoff, "m") > 0
    alerts, _ = group_episodes(alarms, {}, COOLDOWN)
    explain(con, alerts)
    rows = [{**a, "alert_id": f"a{i}", "severity": "high", "n_articles": a["n"], "n_negative": a["n_neg"]}
            for i, a in enumerate(alerts)]
    png = plot_scan_timelines(con, rows, tmp_path / "scan.png")
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_scan_timelines(con, [], tmp_path / "none.png") is None
    assert explained_lines(con) == []  # nothing stored in alerts here
