"""The monitor report: sentiment timelines of the keys that alerted, and the open-alerts table.

Reads ``sentiment_windows`` and ``alerts``; draws with matplotlib's Agg canvas (no pyplot state,
safe in worker threads). The markdown embeds the PNG as a data URI so the Prefect UI shows it
without a file server; the PNG is also written next to the warehouse for people and tools.
"""

from __future__ import annotations

import base64
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from warehouse.alerts import OPEN_STATUSES
from warehouse.connection import fetch_dicts


def report_keys(con: duckdb.DuckDBPyConnection, alert_ids: list[str], limit: int = 4) -> list[dict[str, Any]]:
    """The alerts to draw: those of this run, else the newest open ones (at most ``limit``)."""
    if alert_ids:
        marks = ", ".join("?" for _ in alert_ids)
        rows = fetch_dicts(con, f"SELECT * FROM alerts WHERE alert_id IN ({marks}) "
                                f"ORDER BY dimension = 'overall', p_value LIMIT {limit}",
                           alert_ids)
    else:
        rows = fetch_dicts(con, f"SELECT * FROM alerts WHERE status IN {OPEN_STATUSES} "
                                f"ORDER BY window_end DESC LIMIT {limit}")
    return rows


def timeline(con: duckdb.DuckDBPyConnection, dimension: str, key: str, start, end,
             granularity: str = "1h") -> pd.DataFrame:
    """Windows of one key between ``start`` and ``end`` (negative share, baseline, volume)."""
    return con.execute(
        "SELECT window_start, n_articles, negative_share, baseline_negative_share, is_spike "
        "FROM sentiment_windows WHERE granularity = ? AND dimension = ? AND key = ? "
        "AND window_start >= ? AND window_start < ? ORDER BY window_start",
        [granularity, dimension, key, start, end],
    ).df()


def plot_timelines(con: duckdb.DuckDBPyConnection, alerts: list[dict[str, Any]], path: Path,
                   days_before: float = 3.0, days_after: float = 1.0) -> Path | None:
    """One panel per alert: negative share vs the key's baseline, volume bars, the alert span.

    Hourly panels for alerts found on 15-minute or hourly windows; 4-hour panels for those found
    on 4-hour or daily windows (thin keys, whose hourly share jumps between 0 and 1).
    """
    if not alerts:
        return None
    fig = Figure(figsize=(9, 2.4 * len(alerts)), dpi=80)
    FigureCanvasAgg(fig)
    for i, a in enumerate(alerts, start=1):
        ax = fig.add_subplot(len(alerts), 1, i)
        lo = a["window_start"] - timedelta(days=days_before)
        hi = a["last_window_end"] + timedelta(days=days_after)
        gran = "1h" if a["granularity"] in ("15m", "1h") else "4h"
        df = timeline(con, a["dimension"], a["key"], lo, hi, gran)
        if df.empty and gran != "1h":  # 4h windows not configured: hourly it is
            gran, df = "1h", timeline(con, a["dimension"], a["key"], lo, hi, "1h")
        if df.empty:
            ax.set_title(f"{a['dimension']} {a['key']}: no windows stored", fontsize=9)
            continue
        ts = pd.to_datetime(df.window_start)
        vol = ax.twinx()
        hours = 1 if gran == "1h" else 4
        vol.bar(ts, df.n_articles, width=hours / 24, align="edge", color="#d0d7de", alpha=0.6)
        vol.set_ylabel(f"articles / {gran}", fontsize=8)
        ax.set_zorder(vol.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.plot(ts, df.negative_share, color="#cf222e", lw=1.2, label="negative share")
        ax.plot(ts, df.baseline_negative_share, color="#57606a", lw=1, ls="--", label="baseline")
        spikes = df[df.is_spike]
        ax.scatter(pd.to_datetime(spikes.window_start), spikes.negative_share, color="#cf222e", s=18, zorder=3)
        ax.axvspan(a["window_start"], a["last_window_end"], color="#ffebe9", alpha=0.8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("negative share", fontsize=8)
        ax.set_title(f"{a['dimension']} {a['key']}: {a['severity']} alert {a['alert_id']} ({gran} windows)", fontsize=9)
        ax.tick_params(labelsize=7)
        if i == 1:
            ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def open_alerts_table(con: duckdb.DuckDBPyConnection, limit: int = 20) -> list[dict[str, Any]]:
    """Rows for the open-alerts table of the report."""
    return fetch_dicts(con, f"""
        SELECT alert_id, status, severity, dimension, key, granularity,
               strftime(window_start, '%Y-%m-%d %H:%M') AS window_start,
               round(observed, 3) AS observed, round(baseline, 3) AS baseline, n_negative, n_articles,
               printf('%.1e', p_value) AS p_value
        FROM alerts WHERE status IN {OPEN_STATUSES} ORDER BY window_end DESC LIMIT {int(limit)}""")


def markdown_report(summary: dict[str, Any], rows: list[dict[str, Any]], png: Path | None) -> str:
    """The monitor report as markdown: counts, the timeline picture, the open alerts."""
    lines = ["# Sentiment monitor", "",
             f"Model **{summary.get('model_version')}**, windows from {summary.get('cutoff')}: "
             f"{summary.get('windows', 0)} windows stored, {summary.get('spikes', 0)} significant, "
             f"**{len(summary.get('new_alerts', []))} new alert(s)**, {summary.get('extended', 0)} extended; "
             f"delivered {len(summary.get('delivered', []))}, pending {summary.get('pending', 0)}.", ""]
    if png is not None and Path(png).exists():
        data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
        lines += ["## Sentiment timeline of the alerted keys", "",
                  f"![sentiment timeline](data:image/png;base64,{data})", "", f"(also saved as `{png}`)", ""]
    lines += ["## Open alerts", ""]
    if rows:
        cols = list(rows[0])
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(str(r[c]).replace("|", "/") for c in cols) + " |" for r in rows]
    else:
        lines.append("No open alerts.")
    return "\n".join(lines) + "\n"


def prune_reports(folder: Path, keep: int = 200, pattern: str = "monitor-*.png") -> int:
    """Delete all but the newest ``keep`` report pictures (one is written every 15 minutes)."""
    files = sorted(Path(folder).glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[keep:]:
        old.unlink(missing_ok=True)
    return max(0, len(files) - keep)
