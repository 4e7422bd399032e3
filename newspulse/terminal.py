"""Terminal output shared by every command: one console, tables that fit it, one-line errors.

Plain presentation helpers (rich, typer): numbers rounded for people, ids never wrapped, long text
cut to what the other columns leave, CSV/JSON for machines. Nothing here touches the warehouse.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

# Wide enough for the batch tables when output is piped (CI logs, `make demo | tee`); COLUMNS, when
# set, is the width everywhere (rich reads it).
console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 140)
FORMATS = ("table", "csv", "json")
# Table cells: ids are never wrapped; long text is cut with an ellipsis instead of wrapped word by word.
TEXT_COLUMNS = {"title", "text", "body", "message", "explained_by", "input", "reasons", "raw_preview", "draft_text",
                "top_headline", "note", "artifact_path", "evidence", "details"}

BATCH_COLUMNS = ["source", "input", "rows_read", "rows_inserted", "rows_duplicate", "rows_quarantined",
                 "labels_inserted", "status"]


def fail(message: object, code: int = 2) -> NoReturn:
    """A user's mistake (exit 2) or a missing thing (exit 1): one red line, no traceback."""
    console.print(" ".join(str(message).split()), style="red", soft_wrap=True, markup=False, highlight=False)
    raise typer.Exit(code)


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        fail(f"--format must be table, csv or json, not {fmt!r}")


def is_id(column: str) -> bool:
    return column.endswith("_id") or column in ("key", "model_version", "alias")


def cell(value: Any) -> str:
    """A value as people read it: floats to 4 significant digits (no float32 noise), times to the second."""
    if value is None:
        return ""
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.4g}"
    if isinstance(value, dt.datetime):
        utc = value.utcoffset() in (None, dt.timedelta(0))
        return value.strftime("%Y-%m-%d %H:%M:%S" if utc else "%Y-%m-%d %H:%M:%S%z")
    return str(value)


def batches_table(batches: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, show_lines=False)
    for col in BATCH_COLUMNS:
        table.add_column(col.replace("rows_", ""), justify="right" if col.startswith(("rows", "labels")) else "left")
    for b in batches:
        name = Path(str(b["input"])).name or str(b["input"])
        table.add_row(*[name if c == "input" else str(b[c]) for c in BATCH_COLUMNS])
    if batches:
        totals = {c: sum(int(b[c]) for b in batches) for c in BATCH_COLUMNS if c.startswith(("rows", "labels"))}
        table.add_row("[bold]total", "", *[f"[bold]{totals[c]}" for c in BATCH_COLUMNS[2:-1]], "")
    return table


def print_result(result: Any, fmt: str) -> None:
    if fmt == "json":
        console.print_json(json.dumps([dict(zip(result.columns, r, strict=True)) for r in result.rows], default=str))
        return
    if fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(result.columns)
        writer.writerows(result.rows)
        return
    cells = [[cell(v) for v in row] for row in result.rows]
    widest = [max((len(r[i]) for r in cells), default=0) for i in range(len(result.columns))]
    # Long text gets what the other columns leave of the terminal (3 = borders and padding per column).
    others = sum(max(w, len(c)) + 3 for c, w in zip(result.columns, widest, strict=True)
                 if c not in TEXT_COLUMNS)
    n_text = sum(1 for c in result.columns if c in TEXT_COLUMNS) or 1
    text_width = max(12, (console.width - others - 1) // n_text - 3)
    table = Table(show_lines=False)
    for i, col in enumerate(result.columns):
        if is_id(col):  # an id split over two lines cannot be copied
            table.add_column(col, no_wrap=True, min_width=min(widest[i], 40))
        elif col in TEXT_COLUMNS:
            table.add_column(col, no_wrap=True, overflow="ellipsis", min_width=min(widest[i], 12), max_width=text_width)
        else:
            table.add_column(col, overflow="fold", justify="right" if result.rows and isinstance(
                result.rows[0][i], (int, float)) and not isinstance(result.rows[0][i], bool) else "left")
    for row in cells:
        table.add_row(*row)
    console.print(table)
    if result.truncated:
        console.print(f"[yellow]first {len(result.rows)} rows shown; use --limit to see more")
