"""``newspulse serve | stop | provision``: NewsPulse on a local Prefect server (``make serve``/``make stop``)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.settings import Settings, get_settings, use_local_env

console = Console()


def _settings(port: int | None) -> Settings:
    settings = get_settings()
    return settings.model_copy(update={"serve_port": port}) if port else settings


def serve(
    port: Annotated[int | None, typer.Option(help="API/UI port (default NEWSPULSE_SERVE_PORT, 4200).")] = None,
    deploy: Annotated[bool, typer.Option(help="Deploy prefect.yaml (idempotent).")] = True,
) -> None:
    """Start a Prefect server on loopback, provision it, deploy every flow, start a worker per pool."""
    use_local_env()
    from newspulse.serve import serve as start

    settings = _settings(port)
    served = start(settings, deploy=deploy, log=console.print)
    table = Table(title="NewsPulse on Prefect")
    table.add_column("process")
    table.add_column("state")
    for name in served.started:
        table.add_row(name, "started")
    for name in served.running:
        table.add_row(name, "already running")
    console.print(table)
    console.print(f"UI: [cyan]{served.ui_url}[/cyan]  (Deployments, Runs, Artifacts, Automations)   "
                  f"API: {served.api_url}\nlogs and pids: {settings.serve_dir}   stop with [cyan]make stop[/cyan]\n"
                  f"run the whole chain now: [cyan]PREFECT_API_URL={served.api_url} "
                  f".venv/bin/prefect deployment run pipeline/pipeline-demo[/cyan]")


def stop(port: Annotated[int | None, typer.Option(help="Only to find the settings; stops what serve recorded.")] = None) -> None:
    """Stop exactly the server and workers that ``newspulse serve`` started (workers first)."""
    from newspulse.serve import stop as end

    stopped = end(_settings(port))
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing of ours was running")


def provision() -> None:
    """Create or update pools, the writer limit, the alert block and the spike automation on the
    server at PREFECT_API_URL (idempotent)."""
    use_local_env()
    from newspulse.provision import provision as run

    for name, status in run(get_settings()).items():
        console.print(f"{name}: {status}")


def register(app: typer.Typer) -> None:
    """Add the commands to the ``newspulse`` app."""
    app.command()(serve)
    app.command()(stop)
    app.command()(provision)
