"""Prospective expectation-based scan for negative-sentiment spikes (issue 19), DuckDB + numpy.

At every 15-minute slot that has articles, for every key (overall, source, topic, ticker), the
detector looks at **every window length ending there** (15 min, 30 min, 1 h, 2 h, 4 h, 6 h, 8 h,
12 h, 1 day) and asks whether the window holds more negatives than the key's *expected* share.

- **Expected share.** The key's own history: the ``baseline_h`` hours that end where the longest
  window begins (so an episode never leaks into its own expectation), capped at ``baseline_cap``
  pseudo-articles (news drifts and is over-dispersed: 50k articles of history must not make a
  2-point wobble significant), plus ``prior_strength`` pseudo-articles at the overall share. The
  prior is the hierarchical shrinkage: a thin or brand-new key borrows the market's share, a busy
  key is dominated by its own.
- **Test.** Negatives in the window ~ BetaBinomial(n, a, b) with (a, b) the pseudo-counts above;
  the window's p-value is the exact upper tail P(X >= k) (for a given n it orders windows as the
  likelihood ratio against the expected share does, and it is a probability without a Monte
  Carlo null). The scan's p-value is the smallest over the lengths (and the two tests below)
  times their number (Bonferroni: a bound that holds however the overlapping windows correlate).
  A key alarms when it is below ``alpha``; the bound is per key and evaluation time, so ``alpha``
  sets the false-alarm rate across all keys and lengths together (measured on null data in
  ``bench/monitor.py``: 9 false alerts a year over 65 keys at 1e-4).
- **Volume.** An episode is more coverage *and* more negative coverage. A second test asks the
  same of the key's negatives counted against all articles in the window (expected: the key's
  baseline negatives per article overall, capped the same way), so a ticker whose coverage triples
  with a negative share that only doubles is seen; it needs ``min_negative_volume`` negatives (a
  rare ticker's five negative headlines in an hour stay below it) and the same minimum lift (a
  burst of neutral coverage never fires).
- **Classifier noise.** Counts are the classifier's predicted negatives. With the confusion
  matrix of the model whose scores are counted (``cpu-champion`` resolved) (sensitivity
  s = P(pred neg | neg), false rate f = P(pred neg | not neg)) a predicted share q means a true share (q - f) / (s - f); the minimum lift is required of the
  *true* shares and the negative floors count estimated true negatives, so a classifier that
  under-calls negatives (PhraseBank TF-IDF: s = 0.58) does not hide a real jump behind the floors.
  Without a stored matrix both are taken at face value (s = 1, f = 0).
- **Cheap first.** Every (row, length) passes integer gates (volume, negatives, lift) and a
  binomial tail (vectorised, never smaller than the beta-binomial one out here) before the exact
  beta-binomial tail is computed, so the 10M-row year stays within seconds.

Input: TEMP TABLE ``mon_g1`` (:func:`warehouse.monitor.slot_counts`). Output: TEMP VIEW
``mon_scan``, one row per (key, slot with articles) from the cutoff on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb
import numpy as np

from warehouse.monitor import SLOT_US

LENGTHS: dict[int, str] = {1: "15m", 2: "30m", 4: "1h", 8: "2h", 16: "4h", 24: "6h", 32: "8h", 48: "12h", 96: "1d"}


@dataclass(frozen=True)
class ScanParams:
    """Knobs of the scan detector (alpha mirrors ``Settings.monitor_scan_alpha``)."""

    lengths: tuple[int, ...] = tuple(LENGTHS)  # window lengths in 15-minute slots
    baseline_h: float = 168.0
    min_articles: int = 8
    min_negative: int = 5
    min_lift: float = 0.15
    alpha: float = 1e-4
    baseline_cap: float = 200.0
    prior_strength: float = 20.0
    min_history: int = 100
    volume: bool = True          # also test the key's negatives against all articles (see module doc)
    min_negative_volume: int = 8  # estimated true negatives before the volume test may fire
    # The prior's share: None = the overall key's baseline share (negatives: every key shrinks
    # towards the market). A count source whose keys split one whole (intents: each is a share of
    # all support messages) sets the share a key with no history is expected at (1 / intents).
    prior_share: float | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> ScanParams:
        """The parameters configured in ``Settings`` (shared knobs come from the monitor ones)."""
        return cls(baseline_h=settings.monitor_baseline_h, min_lift=settings.monitor_min_lift,
                   alpha=settings.monitor_scan_alpha, baseline_cap=settings.monitor_baseline_cap,
                   prior_strength=settings.monitor_prior_strength, min_history=settings.monitor_min_history)

    @property
    def lookback(self) -> timedelta:
        """How far before the first evaluated slot the scan reads (longest window + baseline)."""
        return timedelta(minutes=15 * max(self.lengths)) + timedelta(hours=self.baseline_h)


@dataclass(frozen=True)
class Confusion:
    """The sentiment head's negative-class error rates on its validation split."""

    sensitivity: float = 1.0  # P(predicted negative | truly negative)
    false_rate: float = 0.0   # P(predicted negative | not negative)
    source: str = "none"

    def true_share(self, q: np.ndarray) -> np.ndarray:
        """Predicted negative share -> estimated true negative share (clipped to [0, 1])."""
        return np.clip((q - self.false_rate) / (self.sensitivity - self.false_rate), 0.0, 1.0)


def confusion_from_model(row: dict[str, Any] | None) -> Confusion:
    """The served sentiment head's validation confusion matrix from a ``model_registry`` row: the
    monitored model's (``cpu-champion`` resolved), since its labels are the counts being tested.

    Reads ``metrics.sentiment.validation.<served kind>.confusion_matrix`` (rows true, columns
    predicted, in ``heads.sentiment_labels`` order). A row without one, or a matrix that cannot
    tell negatives apart (s - f < 0.05), gives the identity (``source`` says why).
    """
    try:
        served = str(row.get("served") or "gpt")  # 'gpt', 'ensemble (w=..)', 'baseline' or per head
        if "sentiment:" in served:
            served = served.split("sentiment:", 1)[1].split(",")[0]
        kind = "ensemble" if "ensemble" in served else "baseline" if "baseline" in served else "gpt"
        labels = list((row.get("heads") or {}).get("sentiment_labels") or ["negative", "neutral", "positive"])
        cm = np.asarray(row["metrics"]["sentiment"]["validation"][kind]["confusion_matrix"], dtype=float)
        i = labels.index("negative")
    except (KeyError, TypeError, ValueError, AttributeError):
        return Confusion(source="none (the monitored model has no stored validation confusion matrix)")
    rest = [j for j in range(len(labels)) if j != i]
    if cm.shape != (len(labels), len(labels)) or cm[i].sum() == 0 or cm[rest].sum() == 0:
        return Confusion(source="none (the stored confusion matrix is empty)")
    rows = int(cm.sum())
    cm = cm + 0.5  # a validation split of ~100 rows: 31/31 must not become a certain 1.0
    s, f = cm[i, i] / cm[i].sum(), cm[rest, i].sum() / cm[rest].sum()
    if s - f < 0.05:
        return Confusion(source=f"none (sensitivity {s:.2f} vs false rate {f:.2f}: no signal)")
    return Confusion(float(s), float(f), f"{row.get('model_version')} validation ({kind}, {rows} rows)")


def _bb_sf(k: np.ndarray, n: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Beta-binomial upper tail P(X >= k) (few calls: only rows that passed the cheap screen)."""
    from scipy.stats import betabinom

    return np.clip(betabinom.sf(k - 1, n, np.maximum(a, 1e-9), np.maximum(b, 1e-9)), 1e-300, 1.0)


def scan_arrays(kid: np.ndarray, s: np.ndarray, n: np.ndarray, k: np.ndarray, overall: int,
                params: ScanParams, conf: Confusion = Confusion()) -> dict[str, np.ndarray]:
    """The scan over per-slot counts: one output row per input row, in input order.

    ``kid`` (key id), ``s`` (15-minute slot), ``n``/``k`` (articles/negatives in that slot) with
    at most one row per (kid, slot); ``overall`` is the overall key's id. Returns ``length`` (slots
    of the most significant window ending at the slot, 4 when none was tested), ``n_w``/``k_w``
    (its counts), ``expected`` (expected negative share), ``base_n``, ``overall_base_n``,
    ``p_value`` (scan p-value, NaN when no length came near significance) and ``is_spike``.
    """
    order, out = _scan_sorted(kid, s, n, k, overall, params, conf)
    inverse = np.empty(len(s), np.int64)
    inverse[order] = np.arange(len(s))
    return {name: col[inverse] for name, col in out.items()}


def _scan_sorted(kid: np.ndarray, s: np.ndarray, n: np.ndarray, k: np.ndarray, overall: int,
                 params: ScanParams, conf: Confusion) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """:func:`scan_arrays` in (key, slot) order: returns that ``order`` and the columns."""
    rows = len(s)
    code = kid.astype(np.int64) * (1 << 40) + s.astype(np.int64)
    order = np.argsort(code, kind="stable")
    c = code[order]
    cum_n = np.concatenate([[0], np.cumsum(n[order].astype(np.int64))])
    cum_k = np.concatenate([[0], np.cumsum(k[order].astype(np.int64))])
    idx = np.arange(1, rows + 1)

    def trailing(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = np.searchsorted(c, c - start + 1, "left"), np.searchsorted(c, c - stop + 1, "left")
        return cum_n[hi] - cum_n[lo], cum_k[hi] - cum_k[lo]

    longest = max(params.lengths)
    base_n, base_k = trailing(longest + round(params.baseline_h * 4), longest)
    # The overall key's baseline at the same slot (it has a row wherever any key has one).
    ko = kid[order] == overall
    so, obn, obk = s[order][ko], base_n[ko], base_k[ko]
    j = np.clip(np.searchsorted(so, s[order]), 0, max(len(so) - 1, 0))
    o_n = obn[j] if len(so) else np.zeros(rows, np.int64)
    o_share = np.where(o_n > 0, (obk[j] if len(so) else 0) / np.maximum(o_n, 1), np.nan)
    w = np.minimum(1.0, params.baseline_cap / np.maximum(base_n, 1))
    prior = np.nan_to_num(o_share, nan=0.0) if params.prior_share is None else np.full(rows, params.prior_share)
    a = base_k * w + params.prior_strength * prior
    b = (base_n - base_k) * w + params.prior_strength * (1 - prior)
    expected = a / np.maximum(a + b, 1e-12)
    exp_true = conf.true_share(expected)
    warm = (o_n >= params.min_history) & (a > 0)
    # The floors in predicted counts (cheap compares on every row): true share >= expected + lift
    # and true negatives >= min_negative, through q = f + (s - f) * true share.
    sf = conf.sensitivity - conf.false_rate
    share_floor = np.where(warm, conf.false_rate + sf * (exp_true + params.min_lift), np.inf)

    from scipy.special import bdtrc  # binomial upper tail; scipy.stats (1 s to import) only when needed

    m = len(params.lengths)
    best_p = np.full(rows, np.inf)
    best_len = np.full(rows, 4, np.int64)
    nw, kw = trailing(4, 0)  # the hourly window describes rows that were never tested
    nw, kw = nw.copy(), kw.copy()
    # Volume: the key's negatives as a share of *all* articles in the window (a surge of a key's
    # coverage that is also more negative is stronger evidence than its share alone).
    a2 = base_k * w + 0.5
    b2 = np.maximum(o_n - base_k, 0) * w + 0.5
    rate = a2 / (a2 + b2)
    tests = 2 if params.volume else 1
    for length in params.lengths:
        lo = np.searchsorted(c, c - length + 1, "left")
        wn, wk = cum_n[idx] - cum_n[lo], cum_k[idx] - cum_k[lo]
        cand = np.flatnonzero((wn >= params.min_articles) & (wk >= wn * share_floor)
                              & (wk >= conf.false_rate * wn + sf * params.min_negative - 1e-9))
        if not len(cand):
            continue
        wn_all = wn[ko][j[cand]] if len(so) else wn[cand]  # all articles in the same window
        # the floors count estimated true negatives, not predicted ones
        true_k = conf.true_share(wk[cand] / np.maximum(wn[cand], 1)) * wn[cand]
        # Screen: the binomial tail is below the beta-binomial one this far above the mean.
        ps = bdtrc(wk[cand] - 1, wn[cand], expected[cand])
        if tests == 2:
            vol = true_k >= params.min_negative_volume
            ps = np.minimum(ps, np.where(vol, bdtrc(wk[cand] - 1, wn_all, rate[cand]), 1.0))
        near = ps * m * tests < params.alpha
        close = cand[near]
        if not len(close):
            continue
        p = _bb_sf(wk[close], wn[close], a[close], b[close])
        if tests == 2:
            vol, n_all = vol[near], wn_all[near]
            q = np.ones(len(close))
            q[vol] = _bb_sf(wk[close][vol], n_all[vol], a2[close][vol], b2[close][vol])
            p = np.minimum(p, q)
        better = p < best_p[close]
        sel = close[better]
        best_p[sel], best_len[sel], nw[sel], kw[sel] = p[better], length, wn[sel], wk[sel]
    p_scan = np.where(np.isfinite(best_p), np.minimum(1.0, best_p * m * tests), np.nan)
    out = {"length": best_len, "n_w": nw, "k_w": kw, "expected": expected, "base_n": base_n,
           "overall_base_n": o_n, "p_value": p_scan, "is_spike": np.nan_to_num(p_scan, nan=1.0) < params.alpha}
    return order, out


def run_scan(con: duckdb.DuckDBPyConnection, params: ScanParams, cutoff: datetime,
             conf: Confusion = Confusion(), touched: str | None = None) -> int:
    """TEMP VIEW ``mon_scan`` from ``mon_g1``: the scan at every slot with articles from ``cutoff``.

    Columns: dimension, key, window_start, window_end, length (label), n, n_neg, observed,
    expected, base_n, overall_base_n, p_value, is_spike. ``touched`` names a relation of
    (dimension, key): only those keys are scanned (the keys with new scores; the overall key,
    whose share is every key's prior, is always one of them). Returns the rows written.
    """
    only = (f" WHERE dimension = 'overall' OR (dimension, key) IN (SELECT (dimension, key) FROM {touched})"
            if touched else "")
    con.execute("CREATE OR REPLACE TEMP TABLE mon_keys AS SELECT dimension, key, "
                "(row_number() OVER () - 1)::INTEGER AS kid FROM (SELECT DISTINCT dimension, key FROM mon_g1" + only + ")")
    d = con.execute("SELECT k.kid, g.s, g.n::BIGINT AS n, g.n_neg::BIGINT AS n_neg FROM mon_g1 g JOIN mon_keys k USING (dimension, key)").fetchnumpy()
    ov = con.execute("SELECT kid FROM mon_keys WHERE dimension = 'overall'").fetchall()
    cut = int(cutoff.timestamp() * 1_000_000) // SLOT_US
    order, res = _scan_sorted(d["kid"], d["s"], d["n"], d["n_neg"], ov[0][0] if ov else -1, params, conf)
    d = {"kid": d["kid"][order], "s": d["s"][order]}
    keep = d["s"] >= cut
    labels = np.array([LENGTHS.get(x, f"{x * 15}m") for x in params.lengths] + ["1h"])
    uniq, inv = np.unique(res["length"][keep], return_inverse=True)  # a handful of lengths
    index = {x: i for i, x in enumerate(params.lengths)}
    li = np.array([index.get(int(x), len(params.lengths)) for x in uniq], np.int64)[inv]
    frame = {"kid": d["kid"][keep], "s": d["s"][keep].astype(np.int64), "li": li, "len": res["length"][keep]}
    frame.update({name: res[name][keep] for name in ("n_w", "k_w", "expected", "base_n", "overall_base_n",
                                                     "p_value", "is_spike")})
    # A view over the arrays, not a table: the alarms query reads a handful of rows, and storing
    # (sentiment_scan) reads them all once; materialising 2M rows first cost ~0.5 s on 10M scores.
    # The arrays stay registered until the next scan on this connection replaces them.
    con.register("mon_scan_np", frame)
    con.register("mon_scan_labels", {"li": np.arange(len(labels)), "label": labels})
    con.execute("""
        CREATE OR REPLACE TEMP VIEW mon_scan AS
        SELECT k.dimension, k.key, to_timestamp((x.s + 1 - x.len) * 900) AS window_start,
               to_timestamp((x.s + 1) * 900) AS window_end, l.label AS length, x.n_w::INTEGER AS n,
               x.k_w::INTEGER AS n_neg, x.k_w / greatest(x.n_w, 1) AS observed, x.expected, x.base_n,
               x.overall_base_n, CASE WHEN isnan(x.p_value) THEN NULL ELSE x.p_value END AS p_value, x.is_spike
        FROM mon_scan_np x JOIN mon_keys k USING (kid) JOIN mon_scan_labels l USING (li)
    """)
    return int(keep.sum())


def scan_spikes(con: duckdb.DuckDBPyConnection, cutoff: datetime) -> list[dict]:
    """Alarms from ``cutoff`` on, in detection order, shaped like ``monitor.spike_windows`` rows
    (``granularity`` is the length of the window that fired)."""
    cur = con.execute("""
        SELECT length AS granularity, dimension, key, window_start, window_end, n, n_neg, observed,
               expected AS baseline, p_value, 'scan' AS detector
        FROM mon_scan WHERE is_spike AND window_end > ?
        ORDER BY window_end, window_end - window_start, dimension, key
    """, [cutoff])
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
