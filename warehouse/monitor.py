"""Sentiment windows and count-aware spike detection, in DuckDB (+ numpy for baselines).

Per granularity (15 min, 1 h, 4 h, 1 day) and dimension (overall, topic, ticker, source) every
window gets its article count, negatives, positives and mean score. The scored articles are read
twice (one aggregation per 15-minute slot x source x topic, one UNNEST of the tickers); coarser
windows are rolled up from the next finer ones (15m -> 1h -> 4h -> 1d). The trailing baselines
come from prefix sums + binary search in numpy (DuckDB's RANGE window frames were 5x slower).

**The spike test.** A window of key K is compared with K's *own* trailing baseline (the previous
``baseline_h`` hours, current window excluded). Negatives in the window are modelled as
beta-binomial: ``k ~ BetaBinomial(n, a, b)`` with ``a, b`` from the baseline's negatives and
non-negatives, down-weighted to at most ``baseline_cap`` pseudo-articles (news is over-dispersed
and drifts: a baseline of 50k articles must not make a 2-point wobble "significant"), plus a
prior of ``prior_strength`` pseudo-articles at the overall share (a thin key is shrunk towards
the market). The p-value is the upper tail ``P(X >= k)``. A window is a spike when

- it has at least ``min_articles`` articles and ``min_negative`` negatives (5 of 6 is no event),
- its negative share beats the baseline share by ``min_lift``,
- ``p < alpha``, and the overall baseline has ``min_history`` articles (no alerts while warming up).

The count-awareness comes from the test itself: 5/6 negative against a 25% baseline gives
p ~ 0.005 (and is not even tested: under ``min_negative``), while 500/600 gives p ~ 1e-13 (the
capped baseline bounds how sure the test can ever be). The 4-hour windows catch episodes that
are too thin per hour (a ticker with ~5 articles an hour) hours before the day closes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np

from warehouse.connection import sql_literal, transaction

GRANULARITIES: dict[str, tuple[str, timedelta]] = {
    "15m": ("INTERVAL 15 MINUTE", timedelta(minutes=15)),
    "1h": ("INTERVAL 1 HOUR", timedelta(hours=1)),
    "4h": ("INTERVAL 4 HOUR", timedelta(hours=4)),
    "1d": ("INTERVAL 1 DAY", timedelta(days=1)),
}
SLOT_US = 900_000_000  # 15 minutes, the finest window, in microseconds


@dataclass(frozen=True)
class MonitorParams:
    """Knobs of windowing and the spike test (defaults mirror ``Settings.monitor_*``)."""

    granularities: tuple[str, ...] = ("15m", "1h", "4h", "1d")
    baseline_h: float = 168.0
    min_articles: int = 10
    min_negative: int = 6
    min_lift: float = 0.15
    alpha: float = 1e-3
    baseline_cap: float = 200.0
    prior_strength: float = 20.0
    min_history: int = 100

    @classmethod
    def from_settings(cls, settings) -> MonitorParams:
        """The parameters configured in ``Settings``."""
        return cls(granularities=tuple(settings.monitor_granularities), baseline_h=settings.monitor_baseline_h,
                   min_articles=settings.monitor_min_articles, min_negative=settings.monitor_min_negative,
                   min_lift=settings.monitor_min_lift, alpha=settings.monitor_alpha,
                   baseline_cap=settings.monitor_baseline_cap, prior_strength=settings.monitor_prior_strength,
                   min_history=settings.monitor_min_history)


LIVE_LAG_H = 48.0


def monitor_time_sql(live_lag_h: float = LIVE_LAG_H, a: str = "a", b: str = "b") -> str:
    """SQL for an article's monitor time (NULL: the article is not live news and is left out).

    ``published_at`` when the article has one (an old date puts it in old windows, whose alerts
    open without paging: ``alert_max_age_h``). An undated article is timed by ``ingested_at`` only
    when its ingest batch was live, i.e. the batch's newest publication time (``ingest_batches.
    watermark``) lies within ``live_lag_h`` hours of the batch's start: a feed pull whose other items
    are fresh. Undated rows of a historical dataset (gold news has 165), of a batch with no dates at
    all, or without a batch record, have no news time: they would land in the 'now' windows at the
    ingest instant and page about old news, so they are left out of the windows, the scan and the
    alerts (they are still scored and in ``v_scores``). ``a``/``b``: aliases of articles and
    ingest_batches (LEFT JOINed on batch_id).
    """
    lag = float(live_lag_h)
    return (f"coalesce({a}.published_at, CASE WHEN {b}.watermark >= {b}.started_at - to_seconds({lag * 3600}) "
            f"THEN {a}.ingested_at END)")


def create_monitor_input(con: duckdb.DuckDBPyConnection, model_version: str, live_lag_h: float = LIVE_LAG_H) -> None:
    """TEMP VIEW ``monitor_input``: one row per article scored by ``model_version`` that has a
    monitor time (:func:`monitor_time_sql`: undated rows of non-live batches are left out).

    Columns: article_id, ts (published_at, else ingested_at of a live batch), source, topic (the
    model's topic head), tickers, neg, pos (booleans from the sentiment head), score, title.
    """
    con.execute(
        "CREATE OR REPLACE TEMP VIEW monitor_input AS "
        "SELECT * FROM (SELECT s.article_id, " + monitor_time_sql(live_lag_h) + " AS ts, a.source, "
        "s.topic_label AS topic, a.tickers, s.sentiment_label = 'negative' AS neg, "
        "s.sentiment_label = 'positive' AS pos, s.sentiment_score AS score, a.title "
        "FROM scores s JOIN articles a USING (article_id) LEFT JOIN ingest_batches b ON b.batch_id = a.batch_id "
        f"WHERE s.model_version = {sql_literal(model_version)}) WHERE ts IS NOT NULL"
    )


def slot_counts(con: duckdb.DuckDBPyConnection, lo: datetime, source: str = "monitor_input",
                measures: bool = True) -> None:
    """TEMP TABLE ``mon_g1`` (s, dimension, key, n, n_neg, n_pos, sum_score): one row per 15-minute
    slot ``s`` (slots since the epoch) and key with articles from ``lo`` on.

    The scored articles are read twice: one aggregation per slot x source x topic (rolled up to the
    overall, source and topic keys), one UNNEST of the tickers (a ticker named twice counts once).
    Both detectors start from this table; the scan alone needs no ``measures`` (n_pos, sum_score).
    """
    # Time in 15-minute slots since the epoch (integers hash and sort faster than timestamps).
    slot = f"epoch_us(ts) // {SLOT_US}"
    agg = "sum(n) AS n, sum(n_neg) AS n_neg" + (", sum(n_pos) AS n_pos, sum(sum_score) AS sum_score" if measures else "")
    raw = ", sum(pos::INTEGER) AS n_pos, sum(score) AS sum_score" if measures else ""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE mon_st AS
        SELECT {slot} AS s, source, topic, count(*) AS n, sum(neg::INTEGER) AS n_neg{raw}
        FROM {source} WHERE ts >= $lo GROUP BY ALL
    """, {"lo": lo})
    # A ticker named twice counts once; list_distinct on every row cost 2.6 s of 10M rows against
    # 1.2 s when only the rare lists of 3+ go through it.
    tickers = ("CASE WHEN len(tickers) = 1 OR (len(tickers) = 2 AND tickers[1] <> tickers[2]) THEN tickers "
               "WHEN len(tickers) = 2 THEN [tickers[1]] ELSE list_distinct(tickers) END")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE mon_g1 AS
        SELECT s, 'overall' AS dimension, '*' AS key, {agg} FROM mon_st GROUP BY s
        UNION ALL SELECT s, 'source', source, {agg} FROM mon_st WHERE source IS NOT NULL GROUP BY s, source
        UNION ALL SELECT s, 'topic', topic, {agg} FROM mon_st WHERE topic IS NOT NULL GROUP BY s, topic
        UNION ALL SELECT s, 'ticker', t, count(*), sum(neg::INTEGER){raw} FROM (
            SELECT {slot} AS s, unnest({tickers}) AS t, neg{', pos, score' if measures else ''}
            FROM {source} WHERE ts >= $lo AND len(tickers) > 0) WHERE t IS NOT NULL GROUP BY s, t
    """, {"lo": lo})
    con.execute("DROP TABLE IF EXISTS mon_st")


def day_cutoff(con: duckdb.DuckDBPyConnection, since: datetime | None, source: str = "monitor_input") -> datetime | None:
    """``since`` (else the first article time in ``source``) truncated to its UTC day; None: no data.

    Windows are aligned to UTC days whatever the session's time zone.
    """
    if since is None:
        since = con.execute(f"SELECT min(ts) FROM {source}").fetchall()[0][0]
        if since is None:
            return None
    since_utc = since.astimezone(UTC) if since.tzinfo else since.replace(tzinfo=UTC)
    return since_utc.replace(hour=0, minute=0, second=0, microsecond=0)


def compute_windows(con: duckdb.DuckDBPyConnection, params: MonitorParams, since: datetime | None,
                    source: str = "monitor_input", spike_test: bool = True, keep_slots: bool = False,
                    slots_from: datetime | None = None) -> datetime | None:
    """Aggregate ``source`` into TEMP TABLE ``mon_windows`` with baselines and spike tests.

    Windows starting at or after ``cutoff`` (``since`` truncated to its day; the first data day
    when ``since`` is None) are complete and are the ones to store; the ``baseline_h`` hours
    before the cutoff are read only to form baselines. Returns the cutoff (None: no data).
    ``spike_test=False`` leaves p_value/is_spike empty (the scan detector decides instead);
    ``keep_slots`` keeps ``mon_g1`` (read from ``slots_from`` when that is earlier) for it.
    """
    cutoff = day_cutoff(con, since, source)
    if cutoff is None:
        return None
    lo = cutoff - timedelta(hours=params.baseline_h)
    slot_counts(con, min(lo, slots_from) if slots_from else lo, source)
    agg = "sum(n) AS n, sum(n_neg) AS n_neg, sum(n_pos) AS n_pos, sum(sum_score) AS sum_score"
    if slots_from and slots_from < lo:  # the scan's longer look-back: windows keep their own
        con.execute(f"CREATE OR REPLACE TEMP TABLE mon_w1 AS SELECT * FROM mon_g1 WHERE s >= {_slot(lo)}")
        first = "mon_w1"
    else:
        first = "mon_g1"
    # Coarser windows roll up from the coarsest finer one that divides them (15m -> 1h -> 4h -> 1d).
    sizes = sorted({int(GRANULARITIES[g][1] / timedelta(minutes=15)) for g in params.granularities} | {1})
    for i, k in enumerate(sizes[1:], start=1):
        f = max(x for x in sizes[:i] if k % x == 0)
        con.execute(f"CREATE OR REPLACE TEMP TABLE mon_g{k} AS SELECT s // {k} * {k} AS s, dimension, key, {agg} "
                    f"FROM {first if f == 1 else f'mon_g{f}'} GROUP BY ALL")
    cap, prior, slots = float(params.baseline_cap), float(params.prior_strength), round(params.baseline_h * 4)
    parts, views = [], []
    for g in params.granularities:  # POSITIONAL JOIN: _trailing returns its arrays in table order
        k = int(GRANULARITIES[g][1] / timedelta(minutes=15))
        views.append(f"mon_b{k}")
        table = first if k == 1 else f"mon_g{k}"
        con.register(views[-1], _trailing(con, table, slots))
        parts.append(f"SELECT '{g}' AS granularity, {k} AS k, * FROM {table} POSITIONAL JOIN mon_b{k}")
    # Baseline pseudo-counts: the key's own history capped at `cap`, plus `prior` at the overall share.
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE mon_windows AS
        WITH t AS ({' UNION ALL '.join(parts)})
        SELECT granularity, to_timestamp(s * 900) AS window_start, to_timestamp((s + k) * 900) AS window_end,
               dimension, key, n::INTEGER AS n, n_neg::INTEGER AS n_neg, n_pos::INTEGER AS n_pos, sum_score,
               base_n, base_neg, overall_base_n, overall_share, a_par, b_par, a_par / (a_par + b_par) AS base_share,
               NULL::DOUBLE AS p_value, NULL::DOUBLE AS surprise, false AS is_spike
        FROM (
            SELECT t.*, o.overall_base_n, o.overall_share,
                   t.base_neg * least(1.0, {cap} / greatest(t.base_n, 1)) + {prior} * o.overall_share AS a_par,
                   (t.base_n - t.base_neg) * least(1.0, {cap} / greatest(t.base_n, 1))
                       + {prior} * (1 - o.overall_share) AS b_par
            FROM t JOIN (
                SELECT granularity, s, base_n AS overall_base_n,
                       coalesce(base_neg / nullif(base_n, 0), n_neg / n) AS overall_share
                FROM t WHERE dimension = 'overall') o USING (granularity, s))
    """)
    for v in views:
        con.unregister(v)
    for t in ["mon_w1"] + [f"mon_g{k}" for k in sizes if k > 1 or not keep_slots]:
        con.execute(f"DROP TABLE IF EXISTS {t}")
    if spike_test:
        _spike_tests(con, params)
    return cutoff


def _slot(ts: datetime) -> int:
    """The 15-minute slot number (since the epoch) that holds ``ts``."""
    return int(ts.timestamp() * 1_000_000) // SLOT_US


def _trailing(con: duckdb.DuckDBPyConnection, table: str, slots: int) -> dict[str, np.ndarray]:
    """Per row of ``table`` (s, dimension, key, n, n_neg), in table order: the key's articles and
    negatives in the ``slots`` 15-minute slots before ``s`` (prefix sums + binary search; DuckDB's
    RANGE window frames were 5x slower here)."""
    d = con.execute(f"SELECT hash(dimension, key) AS pk, s, n, n_neg FROM {table}").fetchnumpy()  # 64-bit key id
    _, part = np.unique(d["pk"], return_inverse=True)
    key = part.astype(np.int64) * (1 << 40) + d["s"].astype(np.int64)
    order = np.argsort(key, kind="stable")
    ks = key[order]
    lo, hi = np.searchsorted(ks, ks - slots, "left"), np.searchsorted(ks, ks, "left")
    out = {}
    for col, name in (("n", "base_n"), ("n_neg", "base_neg")):
        cum = np.concatenate([[0], np.cumsum(d[col][order].astype(np.int64))])
        out[name] = np.empty(len(ks), np.int64)
        out[name][order] = cum[hi] - cum[lo]
    return out


def _spike_tests(con: duckdb.DuckDBPyConnection, params: MonitorParams) -> None:
    """Fill p_value, surprise and is_spike of ``mon_windows`` (beta-binomial, candidates only)."""
    from scipy.stats import betabinom

    cand = con.execute(f"""
        SELECT rowid, n, n_neg, a_par, b_par FROM mon_windows
        WHERE n >= {int(params.min_articles)} AND n_neg >= {int(params.min_negative)}
          AND n_neg / n - base_share >= {float(params.min_lift)} AND overall_base_n >= {int(params.min_history)}
    """).fetchnumpy()
    if not len(cand["rowid"]):
        return
    p = betabinom.sf(cand["n_neg"] - 1, cand["n"], np.maximum(cand["a_par"], 1e-9), np.maximum(cand["b_par"], 1e-9))
    con.register("mon_tested", {"rid": cand["rowid"], "p_value": np.clip(p, 1e-300, 1.0)})
    try:
        con.execute(f"""
            UPDATE mon_windows SET p_value = t.p_value, surprise = -log10(t.p_value),
                                   is_spike = t.p_value < {float(params.alpha)}
            FROM mon_tested t WHERE mon_windows.rowid = t.rid
        """)
    finally:
        con.unregister("mon_tested")


def store_windows(con: duckdb.DuckDBPyConnection, cutoff: datetime, model_version: str | None) -> int:
    """Replace ``sentiment_windows`` from ``cutoff`` on with ``mon_windows`` (one transaction)."""
    with transaction(con):
        con.execute("DELETE FROM sentiment_windows WHERE window_start >= ?", [cutoff])
        n = con.execute("""
            INSERT INTO sentiment_windows BY NAME
            SELECT window_start, granularity, dimension, key, window_end, n AS n_articles, n_neg AS n_negative,
                   n_pos AS n_positive, n_neg / n AS negative_share, sum_score / n AS mean_score,
                   base_n AS baseline_articles, base_share AS baseline_negative_share, p_value, surprise, is_spike,
                   ? AS model_version, now() AS computed_at
            FROM mon_windows WHERE window_start >= ?
        """, [model_version, cutoff]).fetchall()[0][0]
    return int(n)


def spike_windows(con: duckdb.DuckDBPyConnection, cutoff: datetime) -> list[dict]:
    """Significant windows from ``cutoff`` on, in detection order (window end, finest first)."""
    cur = con.execute("""
        SELECT granularity, dimension, key, window_start, window_end, n, n_neg, n_neg / n AS observed,
               base_share AS baseline, p_value
        FROM mon_windows WHERE is_spike AND window_start >= ?
        ORDER BY window_end, CASE granularity WHEN '15m' THEN 0 WHEN '1h' THEN 1 WHEN '4h' THEN 2 ELSE 3 END,
                 dimension, key
    """, [cutoff])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def severity(p_value: float, observed: float, baseline: float, alpha: float) -> str:
    """'critical' for overwhelming and large spikes, 'high' for very strong ones, else 'medium'."""
    if p_value < alpha * 1e-6 and observed - baseline >= 0.3:
        return "critical"
    if p_value < alpha * 1e-2:
        return "high"
    return "medium"


def group_episodes(spikes: list[dict], last_end: dict[tuple[str, str], datetime],
                   cooldown: timedelta, horizon: datetime | None = None
                   ) -> tuple[list[dict], dict[tuple[str, str], datetime]]:
    """One alert per episode: a key's spike within ``cooldown`` of its last alert extends it.

    ``spikes`` come in detection order (:func:`spike_windows`); ``last_end`` maps (dimension, key)
    to the ``last_window_end`` of the key's latest open alert. The first spike of an episode
    opens a new alert (a copy of the spike with ``last_window_end``); later ones, at any
    granularity, only push ``last_window_end`` forward. Returns the new alerts and the new
    ``last_window_end`` of stored alerts that were extended.

    ``horizon`` (the newest article time) caps every end: the current 4h or day window is still
    filling, and its nominal end lies in the future; letting it anchor the cooldown would
    swallow the next episode on the key. For the same reason a window longer than the cooldown
    (a day) never extends an episode: it cannot tell whether the episode is still going.
    """
    ends = dict(last_end)
    opened: dict[tuple[str, str], dict] = {}
    extended: dict[tuple[str, str], datetime] = {}
    new: list[dict] = []
    for s in spikes:
        k = (s["dimension"], s["key"])
        end = s["window_end"] if horizon is None else min(s["window_end"], horizon)
        prev = ends.get(k)
        if prev is not None and s["window_start"] <= prev + cooldown:
            if end > prev and s["window_end"] - s["window_start"] <= cooldown:
                ends[k] = end
                if k in opened:
                    opened[k]["last_window_end"] = end
                else:
                    extended[k] = end
            continue
        alert = {**s, "last_window_end": end}
        new.append(alert)
        opened[k] = alert
        ends[k] = end
    return new, extended


def evidence(con: duckdb.DuckDBPyConnection, spike: dict, limit: int = 5, source: str = "monitor_input") -> list[dict]:
    """The most negative articles of the window for the key (what a person reads first)."""
    where = {"overall": "true", "topic": "topic = $key", "source": "source = $key",
             "ticker": "list_contains(tickers, $key)"}[spike["dimension"]]
    cur = con.execute(
        f"SELECT article_id, title, source, ts, round(score, 3) AS score FROM {source} "
        f"WHERE ts >= $start AND ts < $end AND {where} ORDER BY score, article_id LIMIT {int(limit)}",
        {"key": spike["key"], "start": spike["window_start"], "end": spike["window_end"]}
        if spike["dimension"] != "overall" else {"start": spike["window_start"], "end": spike["window_end"]},
    )
    cols = [d[0] for d in cur.description]
    return [{**dict(zip(cols, row, strict=True)), "ts": str(row[3])} for row in cur.fetchall()]
