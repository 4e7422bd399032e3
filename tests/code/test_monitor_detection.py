"""Behaviour of the spike detector (warehouse.monitor) on small, hand-built DuckDB inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import pytest

from warehouse.monitor import MonitorParams, compute_windows, group_episodes, spike_windows

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
COLS = ["article_id", "ts", "source", "topic", "tickers", "neg", "pos", "score", "title"]


def _con(rows: list[tuple]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.execute("CREATE TABLE monitor_input (article_id VARCHAR, ts TIMESTAMPTZ, source VARCHAR, topic VARCHAR, "
                "tickers VARCHAR[], neg BOOLEAN, pos BOOLEAN, score DOUBLE, title VARCHAR)")
    con.executemany("INSERT INTO monitor_input VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return con


def _flat(days: int = 10, per_hour: int = 12, neg_share: float = 0.25, seed: int = 0) -> list[tuple]:
    """A flat stream: per_hour articles an hour, 3 sources, 3 topics, 4 tickers, i.i.d. negatives."""
    rng = np.random.default_rng(seed)
    rows = []
    for h in range(days * 24):
        for j in range(per_hour):
            i = len(rows)
            ts = T0 + timedelta(hours=h, seconds=int(rng.integers(0, 3600)))
            neg = bool(rng.random() < neg_share)
            rows.append((f"a{i}", ts, f"src{i % 3}", ("markets", "macro", "energy")[j % 3],
                         [f"TK{i % 4}"] if j % 2 else [], neg, not neg and bool(rng.random() < 0.4),
                         -1.0 if neg else 0.0, f"t{i}"))
    return rows


def _burst(rows: list[tuple], start: datetime, n: int, n_neg: int, **kw) -> list[tuple]:
    out = list(rows)
    for j in range(n):
        i = len(out)
        out.append((f"b{i}", start + timedelta(seconds=j * 3600 // n), kw.get("source", "src0"),
                    kw.get("topic", "markets"), kw.get("tickers", []), j < n_neg, False, -1.0 if j < n_neg else 0.0, f"b{i}"))
    return out


def _spikes(con, params=MonitorParams()) -> list[dict]:
    return spike_windows(con, compute_windows(con, params, None))


def test_tiny_burst_of_rare_key_gives_no_spike():
    rows = _burst(_flat(), T0 + timedelta(days=6, hours=14), 5, 5, tickers=["RARE"])
    assert not [s for s in _spikes(_con(rows)) if s["key"] == "RARE"]


def test_spike_in_flat_stream_found_at_right_key_and_window():
    onset = T0 + timedelta(days=7, hours=15)
    rows = _burst(_flat(), onset, 30, 25, topic="energy", source="src0")
    spikes = _spikes(_con(rows))
    hit = [s for s in spikes if (s["dimension"], s["key"]) == ("topic", "energy")]
    assert hit, spikes
    first = min(hit, key=lambda s: (s["window_end"], s["granularity"] != "15m"))
    assert first["window_start"] <= onset < first["window_end"]
    assert any(s["granularity"] == "1h" and s["window_start"] == onset for s in hit)
    assert first["observed"] > first["baseline"] + 0.3 and first["p_value"] < MonitorParams().alpha
    # Nothing else in the flat stream is a spike except keys that contain the burst.
    assert {(s["dimension"], s["key"]) for s in spikes} <= {("topic", "energy"), ("overall", "*"), ("source", "src0")}


@pytest.mark.parametrize(("n", "k", "spike"), [(600, 500, True), (6, 5, False)])
def test_count_awareness(n, k, spike):
    # srcY has its own history: one article an hour, a quarter of them negative.
    rows = _flat() + [(f"y{h}", T0 + timedelta(hours=h, minutes=30), "srcY", "macro", [], h % 4 == 0, False, 0.0, "y")
                      for h in range(7 * 24)]
    start = T0 + timedelta(days=7, hours=12)
    con = _con(_burst(rows, start, n, k, source="srcY", topic="energy"))
    hit = [s for s in _spikes(con) if s["key"] == "srcY" and s["granularity"] == "1h"]
    assert bool(hit) is spike
    row = con.execute("""SELECT base_share, is_spike, p_value FROM mon_windows WHERE granularity = '1h'
        AND dimension = 'source' AND key = 'srcY' AND window_start = ?""", [start]).fetchall()[0]
    assert 0.2 < row[0] < 0.3
    if spike:
        assert row[1] and row[2] < 1e-10  # the capped baseline bounds how sure the test can be
    else:  # 5 of 6 is below the volume floor: not even tested
        assert not row[1] and row[2] is None


def test_cooldown_groups_repeats_and_later_spike_opens_new_alert():
    def spike(h: int, g: str = "1h") -> dict:
        ws = T0 + timedelta(hours=h)
        return {"granularity": g, "dimension": "ticker", "key": "ACME", "window_start": ws,
                "window_end": ws + (timedelta(hours=1) if g == "1h" else timedelta(hours=4)), "n": 20, "n_neg": 15,
                "observed": 0.75, "baseline": 0.25, "p_value": 1e-6}
    cooldown = timedelta(hours=12)
    spikes = sorted([spike(10), spike(11), spike(8, "4h"), spike(14), spike(40)], key=lambda s: s["window_end"])
    new, extended = group_episodes(spikes, {}, cooldown)
    assert [a["window_start"] for a in new] == [T0 + timedelta(hours=10), T0 + timedelta(hours=40)]
    assert new[0]["last_window_end"] == T0 + timedelta(hours=15) and extended == {}
    # A stored alert still within its cooldown is extended instead of duplicated.
    new2, ext2 = group_episodes([spike(20)], {("ticker", "ACME"): T0 + timedelta(hours=15)}, cooldown)
    assert new2 == [] and ext2 == {("ticker", "ACME"): T0 + timedelta(hours=21)}


def test_window_counts_exact_for_hand_built_example():
    rows = [("1", T0 + timedelta(minutes=1), "s1", "macro", ["AAA", "BBB"], True, False, -0.8, "x"),
            ("2", T0 + timedelta(minutes=14), "s1", "energy", ["AAA", "AAA"], False, True, 0.6, "x"),
            ("3", T0 + timedelta(minutes=20), "s2", "macro", [], True, False, -0.4, "x"),
            ("4", T0 + timedelta(hours=5), "s2", "macro", ["BBB"], False, False, 0.0, "x")]
    con = _con(rows)
    compute_windows(con, MonitorParams(), None)
    got = {r[:4]: r[4:] for r in con.execute(
        "SELECT granularity, dimension, key, window_start, n, n_neg, n_pos, round(sum_score, 6), base_n "
        "FROM mon_windows").fetchall()}
    m15, h4, d = T0 + timedelta(minutes=15), T0 + timedelta(hours=4), T0 + timedelta(hours=5)
    assert got[("15m", "overall", "*", T0)] == (2, 1, 1, -0.2, 0)
    assert got[("15m", "overall", "*", m15)] == (1, 1, 0, -0.4, 2)
    assert got[("15m", "ticker", "AAA", T0)] == (2, 1, 1, -0.2, 0)  # duplicate ticker counted once
    assert got[("15m", "ticker", "BBB", d)] == (1, 0, 0, 0.0, 1)
    assert got[("1h", "overall", "*", T0)] == (3, 2, 1, -0.6, 0)
    assert got[("1h", "topic", "macro", T0)] == (2, 2, 0, -1.2, 0)
    assert got[("1h", "source", "s1", T0)] == (2, 1, 1, -0.2, 0)
    assert got[("4h", "overall", "*", h4)] == (1, 0, 0, 0.0, 3)
    assert got[("1d", "overall", "*", T0)] == (4, 2, 1, -0.6, 0)
    assert got[("1d", "ticker", "BBB", T0)] == (2, 1, 0, -0.8, 0)
    assert len([k for k in got if k[0] == "1d"]) == 1 + 2 + 2 + 2  # overall, 2 sources, 2 topics, 2 tickers
    w = con.execute("SELECT window_end - window_start FROM mon_windows WHERE granularity = '4h' LIMIT 1").fetchall()
    assert w[0][0] == timedelta(hours=4)


def test_no_spike_during_warm_up():
    # The very first hours: a huge negative burst, but the overall baseline is still under min_history.
    rows = _burst(_flat(days=3, per_hour=2), T0 + timedelta(hours=1), 60, 55, source="src0")
    con = _con(rows)
    params = MonitorParams(min_history=100)
    early = [s for s in _spikes(con, params) if s["window_start"] < T0 + timedelta(hours=3)]
    assert early == []
    # The same burst after the warm-up is found.
    rows = _burst(_flat(days=5, per_hour=2), T0 + timedelta(days=4, hours=1), 60, 55, source="src0")
    assert [s for s in _spikes(_con(rows), params) if s["key"] == "src0"]


def test_settings_defaults_mirror_monitor_params() -> None:
    from core.settings import Settings
    from warehouse.monitor import MonitorParams

    assert MonitorParams.from_settings(Settings()) == MonitorParams()


def test_filling_day_window_does_not_swallow_the_next_episode() -> None:
    """A day window still filling must not anchor the cooldown at midnight (review finding)."""
    from datetime import UTC, datetime, timedelta

    from warehouse.monitor import group_episodes

    day = datetime(2026, 10, 5, tzinfo=UTC)

    def spike(g: str, start: datetime, hours: float) -> dict:
        return {"granularity": g, "dimension": "topic", "key": "energy", "window_start": start,
                "window_end": start + timedelta(hours=hours), "n": 30, "n_neg": 24, "observed": 0.8,
                "baseline": 0.25, "p_value": 1e-8}

    # 03:00 run: the 02:00 burst is significant on 1h, and the whole (unfinished) day too.
    first, _ = group_episodes([spike("1h", day + timedelta(hours=2), 1), spike("1d", day, 24)], {},
                              timedelta(hours=12), horizon=day + timedelta(hours=3))
    assert len(first) == 1 and first[0]["last_window_end"] == day + timedelta(hours=3)
    # 19:00 run: a second burst at 18:00, 15 h after the first ended; the day window is still significant.
    anchors = {("topic", "energy"): first[0]["last_window_end"]}
    new, extended = group_episodes([spike("1h", day + timedelta(hours=18), 1), spike("1d", day, 24)], anchors,
                                   timedelta(hours=12), horizon=day + timedelta(hours=19))
    assert [a["window_start"] for a in new] == [day + timedelta(hours=18)] and extended == {}
