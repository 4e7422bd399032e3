"""The monitor picture for the scan detector: why a key paged, at a glance.

Per alerted key, hourly: volume bars, the negative share of each hour as faint dots (sized by
volume, so a thin hour that jumps between 0 and 1 does not shout), the share over the fired
window's length ending at each hour, the key's **expected share with its band** (the upper edge is
3 standard deviations of that share at that volume, the expectation's own uncertainty included),
and the **window that fired** (shaded, labelled with its length, counts and p-value), with the
episode's later extension in a lighter shade. Reads ``sentiment_windows`` (hourly counts) and
``sentiment_scan`` (expected share); draws with matplotlib's Agg canvas (no pyplot state).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from warehouse.scan_alerts import band


def hourly(con: duckdb.DuckDBPyConnection, dimension: str, key: str, start, end) -> pd.DataFrame:
    """Hourly volume, negatives and the expected share (last scan of the hour) of one key."""
    return con.execute("""
        SELECT w.window_start AS hour, w.n_articles AS n, w.n_negative AS k, e.expected, e.base_n
        FROM sentiment_windows w LEFT JOIN (
            SELECT time_bucket(INTERVAL 1 HOUR, window_end - INTERVAL 1 MICROSECOND) AS hour,
                   arg_max(expected_negative_share, window_end) AS expected,
                   arg_max(baseline_articles, window_end) AS base_n
            FROM sentiment_scan WHERE dimension = $d AND key = $k AND window_end > $s AND window_end <= $e
            GROUP BY 1) e ON e.hour = w.window_start
        WHERE w.granularity = '1h' AND w.dimension = $d AND w.key = $k AND w.window_start >= $s AND w.window_start < $e
        ORDER BY 1
    """, {"d": dimension, "k": key, "s": start, "e": end}).df()


def plot_scan_timelines(con: duckdb.DuckDBPyConnection, alerts: list[dict[str, Any]], path: Path,
                        days_before: float = 2.0, days_after: float = 1.0) -> Path | None:
    """One panel per alert (see the module docstring); returns the PNG path (None: no alerts)."""
    if not alerts:
        return None
    fig = Figure(figsize=(9, 2.6 * len(alerts)), dpi=80)
    FigureCanvasAgg(fig)
    for i, a in enumerate(alerts, start=1):
        ax = fig.add_subplot(len(alerts), 1, i)
        lo = a["window_start"] - timedelta(days=days_before)
        df = hourly(con, a["dimension"], a["key"], lo, a["last_window_end"] + timedelta(days=days_after))
        if df.empty:
            ax.set_title(f"{a['dimension']} {a['key']}: no windows stored", fontsize=9)
            continue
        # Hours without articles have no window row: put them back (0 articles) so rolling sums
        # run over hours, not rows.
        grid = pd.date_range(pd.Timestamp(df.hour.min()), pd.Timestamp(df.hour.max()), freq="1h")
        df = df.assign(hour=pd.to_datetime(df.hour)).set_index("hour").reindex(grid).rename_axis("hour").reset_index()
        df[["n", "k"]] = df[["n", "k"]].fillna(0)
        ts = pd.to_datetime(df.hour)
        vol = ax.twinx()
        vol.bar(ts, df.n, width=1 / 24, align="edge", color="#d0d7de", alpha=0.6)
        vol.set_ylabel("articles / hour", fontsize=8)
        ax.set_zorder(vol.get_zorder() + 1)
        ax.patch.set_visible(False)
        share = df.k / df.n.where(df.n > 0)
        ax.scatter(ts + pd.Timedelta(minutes=30), share, s=3 + 25 * df.n / max(df.n.max(), 1), color="#cf222e",
                   alpha=0.35, label="negative share of the hour (dot size = volume)")
        # The share over the fired window's length, ending at each hour, against the band that
        # length's volume allows: a thin hour's 0-or-1 jumps do not cross it, the episode does.
        hours = max(1, int(np.ceil((a["window_end"] - a["window_start"]) / timedelta(hours=1))))
        roll_n = df.n.rolling(hours, min_periods=1).sum()
        roll = df.k.rolling(hours, min_periods=1).sum() / roll_n.where(roll_n > 0)
        exp = df.expected.ffill()
        upper = [band(e, int(n), b if b == b else 0) if e == e and n > 0 else np.nan
                 for e, n, b in zip(exp, roll_n, df.base_n.ffill(), strict=True)]
        end = ts + pd.Timedelta(hours=1)
        ax.plot(end, roll, color="#cf222e", lw=1.3, label="negative share over the fired window's length")
        ax.plot(end, exp, color="#57606a", lw=1.2, label="expected share")
        ax.fill_between(end, exp, upper, color="#57606a", alpha=0.18, label="band (3 sd at that length's volume)")
        ax.axvspan(a["window_start"], a["window_end"], color="#ff8182", alpha=0.35)
        if a["last_window_end"] > a["window_end"]:
            ax.axvspan(a["window_end"], a["last_window_end"], color="#ffebe9", alpha=0.8)
        ax.annotate(f"fired: {a['granularity']} window, {a['n_negative']}/{a['n_articles']} negative, "
                    f"p={a['p_value']:.1e}", xy=(a["window_end"], 0.95), fontsize=7, ha="left", va="top")
        ax.set_ylim(0, 1)
        ax.set_ylabel("negative share", fontsize=8)
        why = f", explained by {a['explained_by']}" if a.get("explained_by") else ""
        ax.set_title(f"{a['dimension']} {a['key']}: {a['severity']} alert {a['alert_id']}{why} "
                     f"(lines over {hours} h)", fontsize=9)
        ax.tick_params(labelsize=7)
        if i == 1:
            ax.legend(loc="upper left", fontsize=6)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def explained_lines(con: duckdb.DuckDBPyConnection, limit: int = 20) -> list[str]:
    """Markdown lines for open alerts that a narrower alert explains (they did not page)."""
    rows = con.execute(
        "SELECT alert_id, dimension, key, granularity, window_start, explained_by FROM alerts "
        "WHERE explained_by IS NOT NULL AND status <> 'resolved' ORDER BY window_end DESC LIMIT ?", [limit]).fetchall()
    if not rows:
        return []
    return ["## Explained alerts (not paged)", ""] + [
        f"- `{aid}` {dim} {key} ({gran} window from {ws:%Y-%m-%d %H:%M}): explained by {by}"
        for aid, dim, key, gran, ws, by in rows] + [""]
