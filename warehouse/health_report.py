"""The model health picture of the monitor report: per key (overall, then each source), one panel
over the last days: the domain classifier's AUC (reference vs the day's embeddings), the share of
low-confidence predictions, the share of unknown words and the baseline disagreement, with the
drifting days shaded and the number of checks that fired written above them. Matplotlib Agg
canvas (no pyplot state), like ``warehouse/scan_report.py``.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

MAX_KEYS = 4


def plot_health(frame: pd.DataFrame, out: Path) -> Path | None:
    """Draw ``frame`` (``warehouse.health.health_timeline``) into ``out``; None when it is empty."""
    if frame is None or not len(frame):
        return None
    keys = ["*"] + [k for k in frame.loc[frame.dimension == "source"]
                    .groupby("key")["n_articles"].sum().sort_values(ascending=False).index if k != "*"]
    keys = keys[:MAX_KEYS]
    fig = Figure(figsize=(10, 2.0 * len(keys)), dpi=72)
    FigureCanvasAgg(fig)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(len(keys), 1, i + 1)
        d = frame[(frame.key == key) & (frame.dimension == ("overall" if key == "*" else "source"))]
        x = pd.to_datetime(d.window_start, utc=True)
        for col, label in (("embedding_auc", "embedding AUC"), ("low_conf_share", "low-confidence share"),
                           ("unknown_rate", "unknown-word share"), ("disagreement", "baseline disagreement")):
            if d[col].notna().any():
                ax.plot(x, d[col], marker=".", lw=1.2, label=label)
        for ws, fired, drifting in zip(x, d.n_fired, d.drifting, strict=True):
            if drifting:
                ax.axvspan(ws, ws + pd.Timedelta(days=1), color="tab:red", alpha=0.18, lw=0)
                ax.text(ws + pd.Timedelta(hours=12), 1.02, str(int(fired)), ha="center", va="bottom",
                        fontsize=7, color="tab:red")
        ax.set_ylim(0, 1.12)
        ax.set_title(f"{'overall' if key == '*' else 'source ' + str(key)}: red = drifting day (checks fired)",
                     fontsize=9, loc="left")
        if i == 0:
            ax.legend(fontsize=7, loc="upper left", ncol=4)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def cached_plot(frame: pd.DataFrame, out: Path) -> Path | None:
    """:func:`plot_health`, or the previous picture when the health rows it shows did not change
    (the report is published every 15 minutes; the rows change once a day per key, or with new
    scores): ``health-latest.json`` next to the pictures remembers what was drawn last."""
    import hashlib
    import json

    if frame is None or not len(frame):
        return None
    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).values.tobytes()).hexdigest()
    memo = out.parent / "health-latest.json"
    try:
        last = json.loads(memo.read_text(encoding="utf-8"))
        if last.get("digest") == digest and Path(last.get("png", "")).is_file():
            return Path(last["png"])
    except (OSError, ValueError):
        pass
    png = plot_health(frame, out)
    if png is not None:
        memo.write_text(json.dumps({"digest": digest, "png": str(png)}), encoding="utf-8")
    return png


def health_markdown(frame: pd.DataFrame, summary: dict[str, Any], out: Path) -> list[str]:
    """Markdown lines for the monitor report: status, the picture (inline), the drifting days."""
    lines = ["", "## Model health", "",
             f"Model **{summary.get('model_version')}**: {summary.get('status', 'not run')}; reference: "
             f"{summary.get('reference') or 'none yet'}; {summary.get('days', 0)} day(s) checked, "
             f"{len(summary.get('new_alerts') or [])} new drift alert(s).", ""]
    png = cached_plot(frame, out)
    if png is not None:
        data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
        lines += [f"![model health](data:image/png;base64,{data})", "", f"(also saved as `{png}`)", ""]
    for d in (summary.get("drifting") or [])[:20]:
        lines.append(f"- drifting: {d}")
    return lines
