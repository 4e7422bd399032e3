"""What the scan detector's alarms become: stored scan rows, and ``explained_by`` between keys.

One episode moves several keys at once: a topic's bad day also lifts the overall share and the
share of the sources that carry it. The desk wants one page, at the key where the news is. An
overall or source alert (or a topic alert, against a ticker) is **explained** by a narrower alert
when the narrower key's articles inside the broad alert's window carry at least
``EXPLAINED_SHARE`` of the broad window's excess negatives (negatives above what the broad key
expected). Only narrower alerts already known when the broad one fires count (opened in the same
run or earlier, as the monitor flow sees them), so the bench measures what the flow does.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import duckdb

from warehouse.connection import transaction
from warehouse.scan import ScanParams, run_scan, scan_spikes

EXPLAINED_SHARE = 0.5
NARROWER = {"overall": ("topic", "ticker"), "source": ("topic", "ticker"), "topic": ("ticker",)}
_PRED = {"overall": "true", "topic": "topic = {v}", "source": "source = {v}", "ticker": "list_contains(tickers, {v})"}


def _pred(dimension: str, key: str) -> str:
    """SQL predicate selecting ``key``'s articles in ``monitor_input``-shaped tables."""
    return _PRED[dimension].format(v="'" + str(key).replace("'", "''") + "'")


def detect(con: duckdb.DuckDBPyConnection, params: ScanParams, cutoff: datetime, conf: Any,
           source: str = "monitor_input", slots_ready: bool = False, touched: str | None = None,
           counts: Callable[..., None] | None = None) -> list[dict]:
    """Run the scan from ``cutoff`` over ``source``; returns the alarms (``scan_spikes`` rows).

    ``slots_ready``: ``mon_g1`` was already built with the scan's look-back (the monitor flow builds
    it once for the windows and the scan). ``touched``: scan only these keys (see ``run_scan``).
    ``counts(con, lo, source, measures=False)`` builds ``mon_g1`` (per slot and key: n, and the
    counted events as n_neg) from ``source``: news sentiment by default
    (:func:`warehouse.monitor.slot_counts`), intents of support messages with
    :func:`warehouse.intent_monitor.intent_slot_counts`.
    """
    if not slots_ready:
        if counts is None:
            from warehouse.monitor import slot_counts as counts

        counts(con, cutoff - params.lookback, source, measures=False)
    run_scan(con, params, cutoff, conf, touched)
    con.execute("DROP TABLE IF EXISTS mon_g1")
    return scan_spikes(con, cutoff)


def explain(con: duckdb.DuckDBPyConnection, alerts: list[dict], known: list[dict] | None = None,
            source: str = "monitor_input", known_first: bool = True) -> int:
    """Set ``explained_by`` (``dimension:key``) on broad alerts that a narrower one explains.

    ``alerts`` are the new alerts (``group_episodes`` rows: window, n, n_neg, baseline); ``known``
    are stored unresolved alerts (dimension, key, window_start, window_end, last_window_end).
    ``known_first=False`` also accepts narrower alerts that fired later (annotating stored broad
    alerts after the fact: they already paged, but the record says why). Returns how many alerts
    were marked.
    """
    narrow = [a for a in alerts + (known or []) if a["dimension"] in ("topic", "ticker")]
    marked = 0
    for a in alerts:
        if a.get("explained_by"):
            continue
        kids = [c for c in narrow if c["dimension"] in NARROWER.get(a["dimension"], ()) and c is not a
                and (c["window_end"] <= a["window_end"] or not known_first)
                and c["last_window_end"] >= a["window_start"] and c["window_start"] <= a["last_window_end"]
                and (c["dimension"], c["key"]) != (a["dimension"], a["key"])]
        kids = list({(c["dimension"], c["key"]): c for c in kids}.values())
        if not kids:
            continue
        cols = ", ".join(f"count(*) FILTER ({_pred(c['dimension'], c['key'])}), "
                         f"count(*) FILTER (neg AND {_pred(c['dimension'], c['key'])})" for c in kids)
        row = con.execute(f"SELECT {cols} FROM {source} WHERE ts >= $ws AND ts < $we AND "
                          f"{_pred(a['dimension'], a['key'])}",
                          {"ws": a["window_start"], "we": a["window_end"]}).fetchall()[0]
        p0 = float(a["baseline"])
        excess = float(a["n_neg"]) - float(a["n"]) * p0
        # Of the narrower alerts that carry enough of the excess, name the narrowest (a ticker
        # before a topic that contains it), then the one that carries most.
        ok = [i for i in range(len(kids)) if excess > 0 and row[2 * i + 1] - row[2 * i] * p0 >= EXPLAINED_SHARE * excess]
        if ok:
            best = max(ok, key=lambda i: (kids[i]["dimension"] == "ticker", row[2 * i + 1] - row[2 * i] * p0))
            a["explained_by"] = f"{kids[best]['dimension']}:{kids[best]['key']}"
            marked += 1
    return marked


def store_scan(con: duckdb.DuckDBPyConnection, cutoff: datetime, model_version: str | None) -> int:
    """Replace the scanned keys' ``sentiment_scan`` rows after ``cutoff`` with ``mon_scan`` (one
    transaction); keys that were not scanned this run keep theirs."""
    with transaction(con):
        con.execute("DELETE FROM sentiment_scan WHERE window_end > ? AND (dimension, key) IN "
                    "(SELECT (dimension, key) FROM mon_keys)", [cutoff])
        n = con.execute("""
            INSERT INTO sentiment_scan BY NAME
            SELECT window_end, dimension, key, window_start, length AS window_length, n AS n_articles,
                   n_neg AS n_negative, expected AS expected_negative_share, base_n AS baseline_articles,
                   p_value, is_spike, ? AS model_version, now() AS computed_at
            FROM mon_scan WHERE window_end > ?
        """, [model_version, cutoff]).fetchall()[0][0]
    return int(n)


def band(expected: float, n: int, base_n: float, cap: float = 200.0, prior: float = 20.0, z: float = 3.0) -> float:
    """Upper edge of the expected share's band for a window of ``n`` articles: ``z`` standard
    deviations of the beta-binomial share (binomial spread plus the expectation's own)."""
    strength = min(float(base_n), cap) + prior
    var = expected * (1 - expected) * (1.0 / max(n, 1) + 1.0 / strength)
    return min(1.0, expected + z * var ** 0.5)

