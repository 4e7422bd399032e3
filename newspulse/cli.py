"""The ``newspulse`` command line: demo, ingest, SQL and warehouse status.

Heavy imports (Prefect, Great Expectations) happen inside the commands that need them, so
``newspulse sql`` answers quickly.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from newspulse.backbones_cli import register as register_backbone_commands
from newspulse.serve_cli import register as register_serve_commands
from newspulse.demo_report import cli_name, print_monitoring, print_recommend_summary, print_recommendations
from core.settings import get_settings, settings_env, use_local_env
from newspulse.terminal import console
from newspulse.terminal import batches_table as _batches_table
from newspulse.terminal import check_format as _check_format
from newspulse.terminal import fail as _fail
from newspulse.terminal import print_result as _print_result

app = typer.Typer(help="NewsPulse: news and finance text -> sentiment alerts and recommendation features.",
                  no_args_is_help=True, add_completion=False)
ingest_app = typer.Typer(help="Ingest files, feeds or public datasets into the warehouse.", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")
models_app = typer.Typer(help="The model registry: list, show, promote, roll back.", no_args_is_help=True)
app.add_typer(models_app, name="models")
alerts_app = typer.Typer(help="Sentiment spike alerts: list, show, ack, resolve.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")
labels_app = typer.Typer(help="Human labels: export the relabel queue, import what people labelled.",
                          no_args_is_help=True)
app.add_typer(labels_app, name="labels")
register_serve_commands(app)  # newspulse serve | stop | provision (newspulse/serve_cli.py)
register_backbone_commands(app)  # newspulse backbones list | fetch | show (newspulse/backbones_cli.py)


def _offline_env() -> None:
    # Nothing here may phone home: no hub downloads, no telemetry. The ephemeral Prefect server
    # gets the local-server tuning (LOCAL_PREFECT_SERVER_ENV).
    use_local_env()


def _pairs(values: list[str] | None, what: str) -> dict[str, str] | None:
    if not values:
        return None
    out = {}
    for item in values:
        if "=" not in item:
            raise typer.BadParameter(f"{what} must look like field=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def _run_flow(fn: Any, **kwargs: Any) -> Any:
    """Run a flow, turning a failed run into a clean exit code 1 with its message."""
    state = fn(**kwargs, return_state=True)
    if not state.is_completed():
        try:
            state.result()
        except Exception as exc:  # noqa: BLE001 - show the user the reason (one line), then exit non-zero
            _fail(f"{fn.name} run ended {state.type.value}: {type(exc).__name__}: {exc}", 1)
        _fail(f"{fn.name} run ended {state.type.value}: {state.message}", 1)
    return state.result()


@app.command()
def demo(
    data_dir: Annotated[Path | None, typer.Option(help="Also ingest the public datasets from this folder "
                                                       "(default: $NEWSPULSE_DATA_DIR if set).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic stream.")] = 7,
    days: Annotated[int, typer.Option(help="Days of synthetic news (every article goes through a "
                                            "135M-parameter model: more days cost minutes on a CPU).")] = 14,
    articles_per_day: Annotated[int, typer.Option(help="Synthetic articles per day.")] = 200,
    users: Annotated[int, typer.Option(help="Synthetic users with click logs.")] = 300,
    train: Annotated[bool, typer.Option(help="Also pretrain + fine-tune a model (a few minutes).")] = True,
    base: Annotated[str | None, typer.Option(help="Backbone for the demo model (default: NEWSPULSE_DEFAULT_BACKBONE, "
                                                  "smollm2-135m; a preset such as small is pretrained first).")] = None,
    support: Annotated[bool, typer.Option(help="Also a support inbox with an injected outage: triaged, and "
                                               "its intent surges monitored.")] = True,
) -> None:
    """Generate the demo stream, ingest and validate it, train a model, print what landed where."""
    _offline_env()
    from flows.pipeline import DEFAULT_DATASETS, pipeline_flow
    from warehouse.query import run_readonly, table_counts

    with _demo_receiver() as receiver:
        settings = get_settings()
        data_dir = data_dir or settings.data_dir
        console.rule("[bold]NewsPulse demo")
        console.print(f"warehouse: {settings.warehouse_path}   demo data: {settings.demo_dir}")
        if data_dir:
            console.print(f"public datasets from {data_dir}")
        out = _run_flow(
            pipeline_flow, seed=seed, days=days, articles_per_day=articles_per_day, n_users=users,
            datasets=DEFAULT_DATASETS if data_dir else None, data_dir=str(data_dir) if data_dir else None,
            train=train, base=base, support=support,
        )
        batches = out["batches"]
        if batches:
            console.print(_batches_table(batches, "Ingested batches (read = inserted + duplicate + quarantined)"))
        else:
            console.print("[yellow]no new input: the demo data was already ingested (re-runs insert nothing)")
        counts = table_counts(settings, ["articles", "labels", "behaviors", "quarantine", "ingest_batches", "validation_runs"])
        table = Table(title="Warehouse")
        table.add_column("table")
        table.add_column("rows", justify="right")
        for name, n in counts.items():
            table.add_row(name, str(n))
        console.print(table)
        reasons = run_readonly(settings, "SELECT unnest(reasons) AS reason, count(*) AS n FROM quarantine "
                                         "GROUP BY 1 ORDER BY n DESC, reason LIMIT 8")
        if reasons.rows:
            console.print("[bold]Top quarantine reasons")
            _print_result(reasons, "table")
        if "model" in out:
            pre = out["pretrain"]
            console.rule("[bold]Model")
            if pre:
                console.print(f"pretraining: {pre['steps']} steps, validation perplexity {pre['val_perplexity']:.1f}, "
                              f"{pre['tokens_per_s']:.0f} tokens/s")
            console.print(out["model"]["card"], markup=False, highlight=False)
            console.print(f"[bold]{out['model']['model_version']}[/bold]: {out['model']['reason']}")
        print_monitoring(out, settings, receiver)
        print_recommendations(out, settings)
        cli = cli_name()
        console.print(f"\nTry: [cyan]{cli} sql \"SELECT source, count(*) FROM v_articles GROUP BY 1\"[/cyan]"
                      f"   |   [cyan]{cli} alerts list[/cyan]   |   [cyan]{cli} models list[/cyan]"
                      f"   |   [cyan]{cli} generate \"Shares of\"[/cyan]   |   [cyan]{cli} sql \"SELECT * FROM "
                      "v_ticket_queue LIMIT 10\"[/cyan]")


@contextmanager
def _demo_receiver() -> Iterator[Any]:
    """A loopback webhook receiver for the demo's alerts, unless the user configured delivery.

    Points the alert settings at it for the duration of the demo, then restores the environment.
    """
    from core.settings import Settings

    configured = get_settings()  # environment and .env
    if configured.alert_webhook_url is not None or configured.alert_block != Settings.model_fields["alert_block"].default:
        yield None
        return
    from newspulse.receiver import WebhookReceiver

    with WebhookReceiver() as receiver, settings_env({
        "NEWSPULSE_ALERT_WEBHOOK_URL": receiver.url, "NEWSPULSE_ALERT_BLOCK": "custom-webhook/newspulse-demo-alerts",
        "NEWSPULSE_ALERT_ALLOW_PRIVATE_URLS": "true",  # the receiver listens on 127.0.0.1
    }):
        yield receiver


@ingest_app.command("files")
def ingest_files(
    patterns: Annotated[list[str], typer.Argument(help="Files or globs (CSV, TSV, JSONL, Parquet).")],
    source: Annotated[str, typer.Option(help="Source name recorded on every row.")] = "files",
    file_format: Annotated[str | None, typer.Option("--format", help="csv | jsonl | parquet | mind_behaviors "
                                                    "(default: from the suffix).")] = None,
    map_: Annotated[list[str] | None, typer.Option("--map", help="field=column, e.g. body=Description.")] = None,
    default: Annotated[list[str] | None, typer.Option(help="field=value for fields the file lacks, "
                                                      "e.g. task=sentiment.")] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of CSV files.")] = "utf-8",
) -> None:
    """Ingest local files; files already ingested in the same version are skipped."""
    from sources.files import expand_globs

    if unmatched := expand_globs(patterns)[1]:
        _fail(f"no such file: {', '.join(unmatched)}")
    _offline_env()
    from flows.ingest import ingest_flow

    batches = _run_flow(ingest_flow, files=patterns, source=source, file_format=file_format,
                        column_map=_pairs(map_, "--map"), defaults=_pairs(default, "--default"), encoding=encoding)
    console.print(_batches_table(batches, "Ingested") if batches else "[yellow]nothing new to ingest")


@ingest_app.command("support")
def ingest_support(
    patterns: Annotated[list[str], typer.Argument(help="Support exports or globs (CSV, TSV, JSONL, Parquet).")],
    source: Annotated[str, typer.Option(help="Inbox name recorded on every message.")] = "support",
    channel: Annotated[str | None, typer.Option(help="Channel for messages whose file has none "
                                                "(email, chat, app, phone ...).")] = None,
    file_format: Annotated[str | None, typer.Option("--format", help="csv | jsonl | parquet "
                                                    "(default: from the suffix).")] = None,
    map_: Annotated[list[str] | None, typer.Option("--map", help="field=column, e.g. text=Message, "
                                                   "label=Intent.")] = None,
    default: Annotated[list[str] | None, typer.Option(help="field=value for fields the file lacks.")] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of CSV / JSONL files.")] = "utf-8",
) -> None:
    """Ingest customer-support messages into `support_messages` (versions already ingested are skipped)."""
    from sources.files import expand_globs

    files, unmatched = expand_globs(patterns)
    if unmatched:
        _fail(f"no such support file: {', '.join(unmatched)}")
    defaults = _pairs(default, "--default") or {}
    if channel:
        defaults.setdefault("channel", channel)
    _offline_env()
    from flows.ingest import ingest_flow

    batches = _run_flow(ingest_flow, files=[str(f) for f in files], source=source, file_format=file_format,
                        column_map=_pairs(map_, "--map"), defaults=defaults or None, encoding=encoding,
                        target="support_messages")
    console.print(_batches_table(batches, "Ingested") if batches else "[yellow]nothing new to ingest")


@ingest_app.command("feed")
def ingest_feed(
    url: Annotated[str, typer.Argument(help="RSS or Atom URL (http/https).")],
    source: Annotated[str, typer.Option(help="Source name for this feed.")] = "rss",
) -> None:
    """Pull one RSS/Atom feed (conditional GET: unchanged feeds cost one request)."""
    _offline_env()
    from flows.ingest import ingest_flow

    batches = _run_flow(ingest_flow, feeds={source: url})
    console.print(_batches_table(batches, "Ingested") if batches else "[yellow]feed unchanged")


@ingest_app.command("dataset")
def ingest_dataset(
    names: Annotated[list[str], typer.Argument(help="Dataset names (see `newspulse ingest datasets`).")],
    data_dir: Annotated[Path | None, typer.Option(help="Folder of the public datasets.")] = None,
) -> None:
    """Ingest public datasets from their native files."""
    _offline_env()
    from flows.ingest import ingest_flow

    root = data_dir or get_settings().data_dir
    if not root:
        _fail("give --data-dir or set NEWSPULSE_DATA_DIR (the folder of the public datasets; see README, "
              "Public datasets)")
    from sources.datasets import DATASETS
    from sources.support import SUPPORT_DATASETS

    known = {**DATASETS, **SUPPORT_DATASETS}
    for name in names:  # a typo or a missing folder: one line and a non-zero exit, before any run
        if name not in known:
            _fail(f"unknown dataset {name!r}; known: {', '.join(known)}")
        if not (Path(root) / known[name].folder).is_dir():
            _fail(f"dataset {name!r}: folder {Path(root) / known[name].folder} not found")
    batches = _run_flow(ingest_flow, datasets=names, data_dir=str(root))
    console.print(_batches_table(batches, "Ingested") if batches else "[yellow]nothing new to ingest")


@ingest_app.command("datasets")
def list_datasets() -> None:
    """List the public datasets the loaders know."""
    from sources.datasets import DATASETS
    from sources.support import SUPPORT_DATASETS

    table = Table(title="Known datasets")
    for col in ("name", "folder", "files", "into"):
        table.add_column(col)
    for spec in [*DATASETS.values(), *SUPPORT_DATASETS.values()]:
        table.add_row(spec.name, spec.folder, spec.pattern, spec.target)
    console.print(table)


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="One SQL query; the connection is read-only and sandboxed.")],
    fmt: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
    limit: Annotated[int, typer.Option(help="Most rows to print.")] = 100,
) -> None:
    """Query the warehouse read-only (views are documented in README.md)."""
    import duckdb

    from warehouse.query import run_readonly

    _check_format(fmt)
    try:
        result = run_readonly(get_settings(), query, limit=limit)
    except FileNotFoundError as exc:
        _fail(exc, 1)
    except duckdb.Error as exc:  # DuckDB's "LINE 1: ... ^^^" pointer needs a monospaced block: one line instead
        lines = str(exc).splitlines()
        message = " ".join(line for line in lines[:next((i for i, x in enumerate(lines) if x.startswith("LINE ")),
                                                        len(lines))])
        _fail(f"{type(exc).__name__}: {message}")
    _print_result(result, fmt)


@app.command()
def status() -> None:
    """Sources, their batches and freshness, the latest batches, scoring, alert and support-triage status
    (with the intents the routing table leaves to the default queue)."""
    from warehouse.query import run_readonly

    settings = get_settings()
    if not Path(settings.warehouse_path).exists():
        console.print(f"[yellow]no warehouse at {settings.warehouse_path} yet: run `newspulse demo`")
        _print_triage_status(settings)
        raise typer.Exit(0)
    _print_result(run_readonly(settings, "SELECT * FROM v_source_freshness ORDER BY source"), "table")
    _print_result(run_readonly(settings, "SELECT batch_id, source, status, rows_read, rows_inserted, rows_duplicate,"
                               " rows_quarantined FROM v_ingest_batches ORDER BY finished_at DESC LIMIT 10"), "table")
    _print_news_status(settings)
    _print_triage_status(settings)


def _print_news_status(settings: Any) -> None:
    """The news models, scoring, alerts and recommendations part of ``newspulse status``."""
    from warehouse.query import run_readonly

    version = run_readonly(settings, "SELECT model_version FROM model_registry WHERE stage = 'champion'")
    if not version.rows:
        console.print("no champion model yet: `newspulse finetune` (or `newspulse demo`) trains one")
        return
    try:  # what the hourly scorer serves and v_scores shows (the champion while no student holds it)
        cpu = run_readonly(settings, "SELECT model_version FROM v_serving WHERE alias = 'cpu-champion'").rows[0][0]
    except Exception:  # noqa: BLE001 - a warehouse no flow has migrated since the serving aliases came
        cpu = version.rows[0][0]
    _print_result(run_readonly(settings, f"""
        SELECT '{version.rows[0][0]}' AS champion, '{cpu}' AS cpu_champion,
               (SELECT count(*) FROM articles) AS articles,
               (SELECT count(*) FROM v_scores) AS scored_by_cpu_champion,
               (SELECT max(finished_at) FROM score_runs) AS last_score_run,
               (SELECT max(computed_at) FROM sentiment_windows) AS last_monitor_run,
               (SELECT count(*) FROM v_open_alerts) AS open_alerts,
               (SELECT count(*) FROM alerts WHERE status = 'pending') AS undelivered_alerts"""), "table")
    _print_result(run_readonly(settings, """
        SELECT source AS click_log, max(finished_at) AS last_recommend_run, arg_max(as_of, finished_at) AS as_of,
               arg_max(users, finished_at) AS users, arg_max(rows_written, finished_at) AS recommendations,
               round(arg_max(metrics->>'$.click_model.auc', finished_at)::DOUBLE, 4) AS click_model_auc
        FROM v_rec_runs GROUP BY 1 ORDER BY 1"""), "table")


def _print_triage_status(settings: Any) -> None:
    """Support triage in ``newspulse status``: the routing table (and the intents it misses, which go
    to the default queue), the intent model, queues, urgent tickets and drafts."""
    from models.routing import RoutingError, load_routing
    from warehouse.query import run_readonly

    try:
        table = load_routing(settings.routing_table)
    except (RoutingError, OSError) as exc:
        console.print(f"[red]routing table unusable, triage runs fail until it is fixed: {exc}")
    else:
        console.print(f"routing table {table.source}: {len(table.routes)} intent(s) routed"
                      + (f", [yellow]{len(table.missing)} missing, routed to queue {table.default_queue!r}: "
                         f"{', '.join(table.missing)}" if table.missing else ", none missing"))
    if not Path(settings.warehouse_path).exists():
        return
    try:
        _print_result(run_readonly(settings, """
            WITH champ AS (SELECT model_version FROM v_serving WHERE alias = 'intent-champion')
            SELECT (SELECT model_version FROM champ) AS intent_champion,
                   (SELECT count(*) FROM support_messages) AS support_messages,
                   (SELECT count(*) FROM support_messages m WHERE NOT EXISTS (SELECT 1 FROM support_scores s
                        WHERE s.message_id = m.message_id AND s.model_version IN (SELECT model_version FROM champ)))
                       AS awaiting_triage,
                   (SELECT count(*) FROM v_ticket_queue) AS human_queue,
                   (SELECT count(*) FROM v_ticket_queue WHERE urgent) AS urgent,
                   (SELECT count(*) FROM v_reply_drafts) AS reply_drafts,
                   (SELECT max(committed_at) FROM support_scores) AS last_triage_run"""), "table")
        unrouted = run_readonly(settings, """
            SELECT intent_label AS unrouted_intent, count(*) AS messages, max(scored_at) AS last_seen
            FROM v_support_triage WHERE intent_label IS NOT NULL AND reasons LIKE '%not in routing table%'
            GROUP BY 1 ORDER BY 2 DESC, 1""")
    except Exception:  # noqa: BLE001 - a warehouse no flow has migrated since triage came (migration 010)
        return
    if unrouted.rows:
        _print_result(unrouted, "table")


@app.command()
def triage(
    limit: Annotated[int | None, typer.Option(help="Triage at most this many messages, newest first "
                                               "(default NEWSPULSE_TRIAGE_MAX_ROWS_PER_RUN).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Messages per triage task (default "
                                                    "NEWSPULSE_TRIAGE_BATCH_SIZE).")] = None,
) -> None:
    """Triage new support messages once (what `triage-every-5-min` runs): intent, sentiment, queue, urgency,
    and a reply draft (auto-answer) or a person; see v_ticket_queue and v_reply_drafts."""
    _offline_env()
    from models.replies import KnowledgeBaseError, load_kb
    from models.routing import RoutingError, load_routing

    settings = get_settings()
    try:  # a broken routing table or answers file is the user's to fix: one line, before any flow starts
        load_routing(settings.routing_table)
        load_kb(settings.reply_kb)
    except (RoutingError, KnowledgeBaseError, OSError, ValueError) as exc:
        console.print(f"[red]{' '.join(str(exc).split())}", soft_wrap=True)
        raise typer.Exit(2) from exc
    from flows.triage import triage_flow

    out = _run_flow(triage_flow, limit=limit, batch_size=batch_size)
    missing = out.get("missing_intents") or []
    if missing:
        console.print(f"[yellow]routing table misses {len(missing)} intent(s), sent to the default queue: "
                      f"{', '.join(missing)}")
    if not out.get("rows_inserted"):
        console.print(f"nothing triaged: {out.get('reason') or 'nothing new'}")
        return
    queues = ", ".join(f"{q['queue']} {q['messages']}" for q in out.get("queues", []))
    console.print(f"triaged {out['rows_inserted']} message(s) with {out['model_version']}: {out['urgent']} urgent, "
                  f"{out['auto_answered']} auto-answered as drafts (coverage {out['coverage']:.1%}); queues: {queues}")


@app.command("generate-stream")
def generate_stream_cmd(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the stream to.")],
    seed: Annotated[int, typer.Option()] = 7,
    days: Annotated[int, typer.Option()] = 28,
    articles_per_day: Annotated[int, typer.Option()] = 400,
    users: Annotated[int, typer.Option()] = 300,
) -> None:
    """Write the seeded synthetic stream (articles, labels, click logs, ground truth) only."""
    from sources.synthetic import SyntheticConfig, generate_stream, summarize

    if days < 2 or articles_per_day < 1 or users < 1:
        _fail(f"need --days >= 2, --articles-per-day >= 1 and --users >= 1, not {days}, {articles_per_day}, {users}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"cannot write to {out_dir}: {exc.strerror or exc}")
    stream = generate_stream(out_dir, SyntheticConfig(seed=seed, days=days, articles_per_day=articles_per_day,
                                                      n_users=users))
    console.print(summarize(stream))


@app.command()
def migrate() -> None:
    """Create or upgrade the warehouse schema (safe to run any time)."""
    from warehouse.connection import connect
    from warehouse.migrate import current_version
    from warehouse.migrate import migrate as apply

    settings = get_settings()
    with connect(settings) as con:
        applied = apply(con)
        console.print(f"applied {applied or 'nothing'}; schema version {current_version(con)}")


@app.command()
def pretrain(
    base: Annotated[str, typer.Option(help="A pretrained backbone to train further (smollm2-135m, a model "
                                           "directory) or a preset trained from scratch (tiny | small | base).")] = "small",
    run_name: Annotated[str, typer.Option(help="Run folder; re-running the same name resumes.")] = "pretrain",
    incremental: Annotated[bool, typer.Option(help="Only articles ingested since this run name's last run.")] = False,
    steps_per_run: Annotated[int | None, typer.Option(help="Train this many more steps than the checkpoint has.")] = None,
    max_steps: Annotated[int, typer.Option()] = 2000,
    batch_size: Annotated[int, typer.Option()] = 16,
    time_budget_s: Annotated[float | None, typer.Option(help="Stop (and checkpoint) after this long.")] = None,
    vocab_size: Annotated[int, typer.Option()] = 8000,
    max_docs: Annotated[int | None, typer.Option(help="Use at most this many articles.")] = None,
) -> None:
    """Domain-adaptive (continued) causal-LM pretraining on the ingested corpus (resumable)."""
    _offline_env()
    from models.catalogue import BackboneError, resolve

    settings = get_settings()
    try:
        resolve(base, settings.backbones_dir, settings.runs_dir)
    except BackboneError as exc:
        _fail(exc)
    from flows.pretrain import pretrain_flow

    out = _run_flow(pretrain_flow, run_name=run_name, base=base, incremental=incremental, steps_per_run=steps_per_run,
                    max_steps=max_steps, batch_size=batch_size, time_budget_s=time_budget_s, vocab_size=vocab_size,
                    max_docs=max_docs)
    if out.get("skipped"):
        console.print(f"no new articles: {out['model_dir']} is unchanged")
        return
    before = out.get("val_perplexity_before")
    console.print(f"steps {out['steps']} (resumed from {out['resumed_from']}) on {out['corpus']['written']} articles "
                  f"({out['corpus']['excluded']} labelled left out); held-out perplexity "
                  f"{f'{before:.1f} -> ' if before else ''}{out['val_perplexity']:.1f}, {out['tokens_per_s']:.0f} "
                  f"tokens/s -> {out['model_dir']}")
    if out.get("stopped_by") == "time_budget":
        console.print(f"[yellow]stopped at step {out['steps']} of {out.get('max_steps')}: the time budget"
                      f"{f' of {time_budget_s:g} s' if time_budget_s else ''} ran out (re-run with the same "
                      "--run-name to resume)")


@app.command()
def finetune(
    sentiment: Annotated[list[str] | None, typer.Option(help="Sentiment datasets in `labels` (repeatable).")] = None,
    topic: Annotated[list[str] | None, typer.Option(help="Topic datasets in `labels` (repeatable).")] = None,
    topic_top_k: Annotated[int | None, typer.Option(help="Keep the k most frequent topics.")] = None,
    intent: Annotated[list[str] | None, typer.Option(help="Intent datasets (support messages with gold intents, "
                                                          "e.g. banking77; repeatable): trains the triage "
                                                          "intent model for `intent-champion` instead of "
                                                          "the news heads.")] = None,
    base: Annotated[str | None, typer.Option(help="Backbone: a catalogue name (`newspulse backbones list`; default "
                                                  "NEWSPULSE_DEFAULT_BACKBONE, smollm2-135m), a preset (tiny|small|"
                                                  "base), pretrain:<run>, var/runs/<run>, a model directory or a "
                                                  "cached hub id.")] = None,
    recipe: Annotated[str, typer.Option(help="frozen (features + heads, the CPU default) | lora | full (the GPU "
                                             "default) | auto.")] = "auto",
    epochs: Annotated[int, typer.Option()] = 6,
    batch_size: Annotated[int, typer.Option()] = 32,
    lr: Annotated[float | None, typer.Option(help="Default: 5e-5 for full fine-tuning of a pretrained "
                                                  "backbone, else 3e-4.")] = None,
    lora: Annotated[bool, typer.Option(help="The same as --recipe lora.")] = False,
    time_budget_s: Annotated[float | None, typer.Option()] = None,
    file: Annotated[list[str] | None, typer.Option(help="Your own labelled CSV/Parquet/JSONL file(s).")] = None,
    dataset_name: Annotated[str, typer.Option(help="Dataset name for --file rows.")] = "custom",
    task: Annotated[str, typer.Option(help="sentiment | topic | intent, for --file rows.")] = "sentiment",
    text_column: Annotated[str, typer.Option()] = "text",
    label_column: Annotated[str, typer.Option()] = "label",
    label_map: Annotated[list[str] | None, typer.Option("--map-label", help="theirs=ours, e.g. bearish=negative.")] = None,
) -> None:
    """Fine-tune the sentiment and topic heads (or, with --intent, the intent head), evaluate next to the
    baseline, register the model."""
    _offline_env()
    from models.catalogue import BackboneError, resolve

    if recipe not in ("auto", "frozen", "lora", "full"):
        _fail(f"--recipe must be auto, frozen, lora or full, not {recipe!r}")
    if task not in ("sentiment", "topic", "intent"):
        _fail(f"--task must be sentiment, topic or intent, not {task!r}")
    if (intent or (file and task == "intent")) and (sentiment or topic or (file and task != "intent")):
        _fail("an intent model is trained on its own: give --intent (or --task intent files) "
              "without --sentiment/--topic datasets")
    settings = get_settings()
    try:  # a wrong --base is the user's mistake: one line, before any flow starts
        with console.status("preparing the backbone"):
            resolve(base or settings.default_backbone, settings.backbones_dir, settings.runs_dir)
    except BackboneError as exc:
        _fail(exc)
    from flows.finetune import finetune_flow

    out = _run_flow(finetune_flow, sentiment_datasets=sentiment, topic_datasets=topic, topic_top_k=topic_top_k,
                    intent_datasets=intent,
                    base=base, recipe=recipe, epochs=epochs, batch_size=batch_size, lr=lr, lora=lora,
                    time_budget_s=time_budget_s,
                    labelled_files=file, dataset_name=dataset_name, task=task, text_column=text_column,
                    label_column=label_column, label_map=_pairs(label_map, "--map-label"))
    console.print(out["card"], markup=False, highlight=False)
    console.print(f"[bold]{out['model_version']}[/bold]: {out['reason']}")


@app.command()
def distill(
    teacher: Annotated[str, typer.Option(help="The teacher: a registered version or `champion`.")] = "champion",
    student: Annotated[str, typer.Option(help="The student: teacher:N (the teacher's first N layers, its "
                                              "tokenizer and embeddings) or a preset (tiny | small | base), "
                                              "trained from scratch with its own tokenizer.")] = "teacher:10",
    sentiment: Annotated[list[str] | None, typer.Option(help="Sentiment datasets (default: the teacher's).")] = None,
    topic: Annotated[list[str] | None, typer.Option(help="Topic datasets (default: the teacher's).")] = None,
    epochs: Annotated[int, typer.Option()] = 6,
    batch_size: Annotated[int, typer.Option()] = 32,
    lr: Annotated[float, typer.Option()] = 3e-4,
    temperature: Annotated[float, typer.Option(help="Softmax temperature of the soft targets.")] = 2.0,
    alpha: Annotated[float, typer.Option(help="Weight of the soft-target loss (1 - alpha: gold labels).")] = 0.5,
    max_pool: Annotated[int | None, typer.Option(help="Unlabelled articles the teacher labels, at most.")] = 20000,
    time_budget_s: Annotated[float | None, typer.Option(help="Stop training the student after this long.")] = None,
    run_name: Annotated[str, typer.Option(help="Run folder under var/runs.")] = "distill",
) -> None:
    """Distil the teacher into a small student on unlabelled articles; register it through the gate."""
    _offline_env()
    from models.distill import DistillInputError, check_student

    try:  # the user's mistakes are one line and exit 2, before any flow starts
        check_student(student)
        if not 0.0 <= alpha <= 1.0 or temperature <= 0:
            raise DistillInputError(f"--alpha must be in [0, 1] and --temperature above 0, not {alpha} and {temperature}")
        if teacher != "champion":
            from warehouse.registry import get_model

            with _registry_con() as con:
                if get_model(con, teacher) is None:
                    raise DistillInputError(f"no model version {teacher!r} in the registry (see `newspulse models list`)")
    except DistillInputError as exc:
        _fail(exc)
    from flows.distill import distill_flow

    state = distill_flow(teacher=teacher, student_base=student, sentiment_datasets=sentiment, topic_datasets=topic,
                         epochs=epochs, batch_size=batch_size, lr=lr, temperature=temperature, alpha=alpha,
                         max_pool=max_pool, time_budget_s=time_budget_s, run_name=run_name, return_state=True)
    if not state.is_completed():
        try:
            state.result()
        except DistillInputError as exc:  # an empty pool, no champion yet: bad input, not a crash
            _fail(f"{exc}")
        except Exception as exc:  # noqa: BLE001 - show the user the reason, then exit non-zero
            _fail(f"distill run ended {state.type.value}: {type(exc).__name__}: {exc}", 1)
        _fail(f"distill run ended {state.type.value}: {state.message}", 1)
    out = state.result()
    console.print(out["card"], markup=False, highlight=False)
    console.print(f"[bold]{out['model_version']}[/bold]: {out['reason']}")


def _require_warehouse() -> Any:
    """The settings, once the warehouse file exists; otherwise one line and exit 1."""
    settings = get_settings()
    if not Path(settings.warehouse_path).exists():
        _fail(f"no warehouse at {settings.warehouse_path}: run `newspulse demo` or `newspulse ingest` first", 1)
    return settings


@contextmanager
def _registry_con(write: bool = False) -> Iterator[Any]:
    """A warehouse connection for the registry commands; no warehouse yet is one line, exit 1."""
    from warehouse.connection import connect, connect_readonly

    settings = _require_warehouse()
    with (connect(settings) if write else connect_readonly(settings, sandboxed=False)) as con:
        yield con


ALIAS_HELP = ("champion (score-gpu, the teacher, recommendations), cpu-champion (score-hourly, what analysts see) "
              "or intent-champion (the triage intent model).")


@contextmanager
def _registry_writer() -> Iterator[Any]:
    """A read-write registry connection with pending migrations applied (a warehouse from before
    the serving aliases gets them here, as any flow run would give them)."""
    from warehouse.migrate import migrate

    with _registry_con(write=True) as con:
        migrate(con)
        yield con


@models_app.command("list")
def models_list(fmt: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table") -> None:
    """Every model version with its stage, the aliases it serves and validation scores; then who serves what."""
    from warehouse.query import run_readonly

    _check_format(fmt)
    settings = _require_warehouse()
    _print_result(run_readonly(settings, "SELECT * FROM v_models ORDER BY created_at DESC"), fmt)
    if fmt == "table":  # csv/json stay one parseable document
        try:
            serving = run_readonly(settings, "SELECT alias, model_version, held, scored_by FROM v_serving ORDER BY alias")
        except Exception:  # noqa: BLE001 - a warehouse no flow has migrated since the aliases came
            return
        _print_result(serving, fmt)


@models_app.command("show")
def models_show(version: Annotated[str, typer.Argument(help="A version, `champion`, `cpu-champion` or "
                                                            "`intent-champion`.")] = "champion") -> None:
    """Print a version's model card."""
    from warehouse.registry import get_model

    with _registry_con() as con:
        row = get_model(con, version)
    if row is None:
        _fail(f"no model {version!r}", 1)
    card = Path(row["artifact_path"]) / "MODEL_CARD.md"
    console.print(card.read_text(encoding="utf-8") if card.exists() else row, markup=False, highlight=False)


@models_app.command("promote")
def models_promote(version: Annotated[str, typer.Argument()],
                   alias: Annotated[str, typer.Option(help=ALIAS_HELP)] = "champion",
                   reason: Annotated[str, typer.Option()] = "promoted by hand") -> None:
    """Move ALIAS (default champion) to VERSION (no gate: an operator's decision, recorded as such)."""
    from warehouse.registry import check_alias, promote

    try:
        check_alias(alias)
        with _registry_writer() as con:
            promote(con, version, reason, alias=alias)
    except (KeyError, ValueError) as exc:  # unknown version or alias, or it holds the alias already
        _fail(exc.args[0] if exc.args else exc, 1)
    console.print(f"{version} is now the {alias}")


@models_app.command("rollback")
def models_rollback(alias: Annotated[str, typer.Option(help=ALIAS_HELP)] = "champion") -> None:
    """Give ALIAS (default champion) back to the model its holder replaced.

    Rolling back the first cpu-champion clears it: the hourly scorer serves the champion again.
    """
    from warehouse.registry import check_alias, resolve, rollback

    try:
        check_alias(alias)
        with _registry_writer() as con:
            demoted, restored = rollback(con, alias)
            fallback = resolve(con, alias) if restored is None else None
    except ValueError as exc:
        _fail(f"{exc}", 1)
    if restored is not None:
        console.print(f"rolled back: {demoted} no longer holds {alias}, {restored} is the {alias} again")
    else:
        console.print(f"rolled back: {demoted} no longer holds {alias}; it falls back to the champion "
                      f"{fallback['model_version'] if fallback else '(none yet)'}")


@app.command()
def score(
    model_version: Annotated[str, typer.Option(help="A registered version, `champion` (what score-gpu serves) or "
                                                    "`cpu-champion` (what score-hourly serves).")] = "champion",
    shard_size: Annotated[int | None, typer.Option(help="Articles per shard (one task each).")] = None,
    limit: Annotated[int | None, typer.Option(help="Score at most this many articles.")] = None,
    runner: Annotated[str | None, typer.Option(help="Where shards run: `threads` (one at a time, here) or `dask` "
                                                    "(default: NEWSPULSE_SCORE_TASK_RUNNER, else threads).")] = None,
    workers: Annotated[int | None, typer.Option(help="Processes of the local Dask cluster (default: "
                                                     "NEWSPULSE_SCORE_DASK_WORKERS, else 2).")] = None,
    dask_address: Annotated[str | None, typer.Option(help="Scheduler of an existing Dask cluster to use instead "
                                                          "of a local one (implies --runner dask).")] = None,
) -> None:
    """Score every article the model has not scored yet (all heads + embedding in one pass)."""
    _offline_env()
    from flows.score import score_flow

    if runner not in (None, "threads", "dask"):
        _fail(f"--runner must be `threads` or `dask`, not {runner!r}")
    for name, value in (("--shard-size", shard_size), ("--limit", limit), ("--workers", workers)):
        if value is not None and value < 1:
            _fail(f"{name} must be at least 1, not {value}")
    from warehouse.registry import get_model

    with _registry_con() as con:  # an unknown version is one line before any flow starts
        if get_model(con, model_version) is None:
            _fail(f"no model {model_version!r}: see `newspulse models list` (train one with `newspulse finetune`)", 1)
    out = _run_flow(score_flow, model_version=model_version, shard_size=shard_size, limit=limit,
                    task_runner=runner, workers=workers, dask_address=dask_address)
    if not out.get("rows_inserted"):
        console.print(f"nothing scored: {out.get('reason', 'nothing new')}")
        return
    console.print(f"scored {out['rows_inserted']} articles with {out['model_version']} "
                  f"({out['shards']} shard(s) on {out['task_runner']}, {out['docs_per_s']} docs/s)")


@app.command()
def monitor(
    full: Annotated[bool, typer.Option(help="Recompute every window, not only those touched by new scores.")] = False,
    notify_backfill: Annotated[bool, typer.Option(help="Also send alerts about windows older than "
                                                       "NEWSPULSE_ALERT_MAX_AGE_H (a replay).")] = False,
) -> None:
    """Windows, spike detection, alerts and their delivery for the cpu-champion's scores (the champion
    while no student holds it); prints what was found."""
    _offline_env()
    from flows.monitor import monitor_flow

    out = _run_flow(monitor_flow, full_recompute=full, notify_backfill=notify_backfill)
    console.print(f"{out.get('windows', 0)} windows, {out.get('spikes', 0)} significant, "
                  f"{len(out.get('new_alerts', []))} new alert(s), {len(out.get('delivered', []))} delivered, "
                  f"{out.get('stale', 0)} too old to send, {out.get('pending', 0)} pending; "
                  f"report: {out.get('report_png') or '-'}")


@app.command()
def recommend(
    source: Annotated[list[str] | None, typer.Option(help="Click-log source(s) (default: every one).")] = None,
    as_of: Annotated[str | None, typer.Option(help="Rank as seen at this ISO time (default: each log's newest "
                                                   "impression).")] = None,
    retrain: Annotated[bool, typer.Option(help="Refit the click model even if one fits this log state.")] = False,
) -> None:
    """Build per-user recommendations (rec_features) and print the click model against the baselines."""
    _offline_env()
    from flows.recommend import recommend_flow

    out = _run_flow(recommend_flow, sources=source or None, as_of=as_of, retrain=retrain)
    if not out:
        console.print("no click logs in the warehouse: ingest MIND-format behaviors first")
    for name, summary in out.items():
        print_recommend_summary(name, summary)


@app.command()
def recs(
    user_id: Annotated[str, typer.Argument(help="A user id from the click logs.")],
    source: Annotated[str | None, typer.Option(help="Click-log source (needed when two logs share the id).")] = None,
    limit: Annotated[int, typer.Option(help="Most rows to show.")] = 10,
    fmt: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
) -> None:
    """A user's current recommendations with the features behind each (v_user_recommendations)."""
    from warehouse.query import run_readonly

    _check_format(fmt)
    if limit < 1:
        _fail(f"--limit must be at least 1, not {limit}")
    settings = _require_warehouse()
    # Rounded in SQL: the features are FLOAT (float32) and would print as 0.8482000231742859 in any format.
    features = ["round(score, 4) AS score", "round(click_prob, 4) AS click_prob", "round(similarity, 4) AS similarity",
                "round(topic_affinity, 4) AS topic_affinity", "round(recency_h, 1) AS recency_h",
                "round(popularity, 4) AS popularity", "round(sentiment, 3) AS sentiment", "cold_start"]
    if fmt == "table" and console.width < 120:  # a narrow terminal: the ranking, not every feature
        features = features[:2]
    sql = (f"SELECT source, rank, title, topic, {', '.join(features)} FROM v_user_recommendations "
           f"WHERE user_id = ? AND (? IS NULL OR source = ?) ORDER BY source, rank LIMIT {int(limit)}")
    result = run_readonly(settings, sql, params=[user_id, source, source])
    if not result.rows:
        _fail(f"no recommendations for {user_id!r}: run `newspulse recommend` (or the user is unknown)", 1)
    _print_result(result, fmt)


@alerts_app.command("list")
def alerts_list(
    status: Annotated[str, typer.Option(help="open (pending, delivering, open, acked) | pending | acked | "
                                            "resolved | all")] = "open",
    limit: Annotated[int, typer.Option(help="Most rows to show.")] = 50,
    fmt: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
) -> None:
    """Alerts, newest first."""
    from warehouse.query import run_readonly

    from warehouse.alerts import OPEN_STATUSES

    where = {"open": f"WHERE status IN {OPEN_STATUSES}", "all": ""}.get(
        status, f"WHERE status = '{status}'" if status in ("pending", "delivering", "acked", "resolved") else None)
    if where is None:
        _fail(f"unknown status {status!r}: use open, pending, delivering, acked, resolved or all")
    _check_format(fmt)
    if limit < 1:
        _fail(f"--limit must be at least 1, not {limit}")
    settings = _require_warehouse()
    columns = ["alert_id", "status", "severity", "dimension", "key", "granularity", "window_start",
               "round(observed_negative_share, 3) AS observed_negative_share",
               "round(baseline_negative_share, 3) AS baseline_negative_share", "n_negative", "n_articles",
               "notified_at", "explained_by"]
    if fmt == "table" and console.width < 120:  # a narrow terminal: what it is and how bad, ids whole
        columns = ["alert_id", "severity", "dimension", "key", "strftime(window_start, '%m-%d %H:%M') AS window",
                   "round(observed_negative_share, 2) AS neg_share"]
    sql = f"SELECT {', '.join(columns)} FROM v_alerts {where} ORDER BY window_end DESC LIMIT {int(limit)}"
    _print_result(run_readonly(settings, sql), fmt)


@alerts_app.command("show")
def alerts_show(alert_id: Annotated[str, typer.Argument(help="An alert id (or a unique prefix).")]) -> None:
    """One alert with its evidence (the most negative headlines)."""
    from warehouse.alerts import get_alert

    with _registry_con() as con:
        row = get_alert(con, alert_id)
    if row is None:
        _fail(f"no alert {alert_id!r}", 1)
    console.print_json(json.dumps(row, default=str))


def _set_alert(alert_id: str, status: str, note: str | None) -> None:
    from warehouse.alerts import set_status

    import duckdb

    try:
        with _registry_con(write=True) as con:
            row = set_status(con, alert_id, status, note)
    except (KeyError, ValueError) as exc:
        _fail(exc.args[0] if exc.args else exc, 1)
    except duckdb.IOException as exc:  # a flow holds the warehouse for writing right now
        _fail(f"the warehouse is busy (a flow is writing): try again in a moment ({exc})", 1)
    console.print(f"alert {row['alert_id']} ({row['dimension']} {row['key']}) is now {row['status']}")


@alerts_app.command("ack")
def alerts_ack(alert_id: Annotated[str, typer.Argument(help="An alert id (or a unique prefix).")],
               note: Annotated[str | None, typer.Option(help="Why, or who is on it.")] = None) -> None:
    """Acknowledge an alert: someone is looking at it."""
    _set_alert(alert_id, "acked", note)


@alerts_app.command("resolve")
def alerts_resolve(alert_id: Annotated[str, typer.Argument(help="An alert id (or a unique prefix).")],
                   note: Annotated[str | None, typer.Option(help="What it was.")] = None) -> None:
    """Resolve an alert: the episode is over or explained."""
    _set_alert(alert_id, "resolved", note)


LABEL_FORMATS = ("csv", "labelstudio")


@labels_app.command("export")
def labels_export(
    fmt: Annotated[str, typer.Option("--format", help="csv (fill in label, annotator, labelled_at) | labelstudio "
                                                     "(JSON tasks with the served label as a pre-annotation)")] = "csv",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: standard output).")] = None,
    status: Annotated[str, typer.Option(help="queued | labelled | all")] = "queued",
    day: Annotated[str | None, typer.Option(help="Only rows queued on this UTC day (YYYY-MM-DD).")] = None,
    limit: Annotated[int | None, typer.Option(help="Most rows (best first).")] = None,
) -> None:
    """The relabel queue (filled by every monitor run), best first, for people to label."""
    from warehouse import label_queue as db_queue
    from warehouse import labels as db_labels

    if fmt not in LABEL_FORMATS:
        _fail(f"--format must be csv or labelstudio, not {fmt!r}")
    if status not in ("queued", "labelled", "all"):
        _fail(f"--status must be queued, labelled or all, not {status!r}")
    if limit is not None and limit < 1:
        _fail(f"--limit must be at least 1, not {limit}")
    try:
        when = dt.date.fromisoformat(day) if day else None
    except ValueError:
        _fail(f"--day must be a date like 2026-12-05, not {day!r}")
    import duckdb

    with _registry_con() as con:
        try:
            rows = db_queue.export_rows(con, None if status == "all" else status, when, limit)
        except duckdb.CatalogException:
            rows = None
    if rows is None or rows.empty:
        _fail("the relabel queue has no such rows: `newspulse monitor` fills it from the served model's scores", 1)
    if fmt == "csv":
        text = db_labels.to_csv_frame(rows).to_csv(index=False)
    else:
        text = json.dumps(db_labels.to_labelstudio(rows), indent=1, ensure_ascii=False, default=str) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    console.print(f"exported {len(rows)} rows to {output} ({fmt})", markup=False, highlight=False)


@labels_app.command("import")
def labels_import(
    file: Annotated[Path, typer.Argument(help="A labelled CSV (article_id, label[, task, annotator, labelled_at]) or "
                                             "a Label Studio JSON export.")],
    fmt: Annotated[str | None, typer.Option("--format", help="csv | labelstudio (default: from the suffix)")] = None,
    annotator: Annotated[str | None, typer.Option(help="Who labelled the rows that name nobody.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset the labels land in (default: relabel, which "
                                                      "the weekly fine-tune trains on).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Import labels (validated; bad rows quarantined with reasons; a corrected label replaces the old, kept in history)."""
    import duckdb

    from warehouse import labels as db_labels

    if fmt is not None and fmt not in LABEL_FORMATS:
        _fail(f"--format must be csv or labelstudio, not {fmt!r}")
    if not file.exists():
        _fail(f"no input file {file}")
    if not file.is_file():
        _fail(f"{file} is not a file")
    settings = get_settings()
    try:
        with _registry_writer() as con:
            summary = db_labels.import_file(con, file, settings, annotator=annotator, fmt=fmt, dataset=dataset)
    except ValueError as exc:
        _fail(exc)
    except duckdb.IOException as exc:
        _fail(f"the warehouse is busy (a flow is writing): try again in a moment ({exc})", 1)
    out = summary.as_dict()
    if as_json:
        console.print_json(json.dumps(out))
        return
    if summary.already_imported:
        console.print(f"{file} was imported before (batch {summary.batch_id}): nothing changed", markup=False)
        return
    console.print(f"{summary.rows_read} rows: {summary.rows_inserted} new labels, {summary.rows_replaced} replaced "
                  f"(old ones in label_history), {summary.rows_unchanged} unchanged, {summary.rows_superseded} "
                  f"superseded, {summary.rows_unlabelled} unlabelled, {summary.rows_quarantined} quarantined "
                  f"(batch {summary.batch_id}, dataset {summary.dataset})", markup=False, highlight=False)
    if summary.rows_quarantined:
        console.print(f"see why: newspulse sql \"SELECT record_no, reasons, raw_preview FROM v_quarantine "
                      f"WHERE batch_id = '{summary.batch_id}'\"", markup=False, highlight=False, soft_wrap=True)


TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq", ".jsonl", ".ndjson", ".json")


def _read_table(path: Path) -> "Any":
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix in (".jsonl", ".ndjson"):
        return pd.read_json(path, lines=True, dtype=False, encoding_errors="replace")
    if suffix == ".json":  # one JSON array of records (what --output x.json writes), else JSON lines
        try:
            return pd.read_json(path, orient="records", dtype=False, encoding_errors="replace")
        except ValueError:
            return pd.read_json(path, lines=True, dtype=False, encoding_errors="replace")
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding_errors="replace",
                       sep="\t" if suffix == ".tsv" else ",")


def _write_table(df: "Any", path: Path) -> None:
    """Write in the format the suffix names (TABLE_SUFFIXES; the caller refuses any other)."""
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".parquet", ".pq"):
        df.to_parquet(path, index=False)
    elif suffix in (".jsonl", ".ndjson"):
        df.to_json(path, orient="records", lines=True, force_ascii=False)
    elif suffix == ".json":
        df.to_json(path, orient="records", force_ascii=False)
    else:
        df.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")


@app.command()
def predict(
    input: Annotated[Path, typer.Option("--input", help="CSV, TSV, Parquet or JSONL file.")],
    output: Annotated[Path, typer.Option("--output", help="Where to write (format from the suffix).")],
    text_column: Annotated[str, typer.Option()] = "text",
    model: Annotated[str, typer.Option(help="A version, `champion`, `cpu-champion` or `intent-champion` "
                                            "(the triage intent model: intent, confidence and top-3).")] = "champion",
    batch_size: Annotated[int, typer.Option()] = 64,
) -> None:
    """Score a file with a registered model: labels and probabilities per head, per row
    (an intent model: the intent, its confidence and the top-3 intents)."""
    from models.serving import ServedModel
    from warehouse.registry import get_model

    # Every mistake in the arguments or the input file is one line, before the model loads.
    if not input.is_file():
        _fail(f"no input file {input}" if not input.exists() else f"{input} is not a file")
    if output.suffix.lower() not in TABLE_SUFFIXES:
        _fail(f"--output {output}: write .csv, .tsv, .parquet, .jsonl or .json (the format follows the suffix)")
    if output.is_dir():
        _fail(f"--output {output} is a folder: name a file")
    if batch_size < 1:
        _fail(f"--batch-size must be at least 1, not {batch_size}")
    try:
        df = _read_table(input)
    except (ValueError, OSError, UnicodeError, ImportError) as exc:
        import pandas as pd

        if isinstance(exc, pd.errors.EmptyDataError) or input.stat().st_size == 0:
            _fail(f"cannot read {input}: the file is empty")
        first = str(exc).splitlines()[0] if str(exc) else ""
        _fail(f"cannot read {input} as {input.suffix.lstrip('.').upper() or 'CSV'} (is it a text table?): "
              f"{type(exc).__name__}: {first}")
    if text_column not in df.columns:
        _fail(f"no column {text_column!r} in {input}; columns are {list(df.columns)[:20]} (use --text-column)")
    if df.empty:
        _fail(f"{input} has a header but no rows")
    with _registry_con() as con:
        row = get_model(con, model)
    if row is None:
        _fail(f"no model {model!r}: train one with `newspulse finetune`", 1)
    texts = df[text_column].astype("string").fillna("").tolist()
    notes = ["empty text" if not t.strip() else ("invalid bytes replaced" if "\ufffd" in t else "") for t in texts]
    served = ServedModel(Path(row["artifact_path"]), precision=_precision())
    scored = served.predict_frame(texts, batch_size=batch_size)
    if "intent_top3" in scored:  # 77 probability columns help nobody: the top-3, readable in any format
        scored = scored.drop(columns=[c for c in scored.columns if c.startswith("intent_p_")])
        scored["intent_top3"] = ["; ".join(f"{t['intent']} {t['p']:.2f}" for t in top) for top in scored.intent_top3]
        scored["intent_confidence"] = scored.intent_confidence.round(4)
    notes = [n or ("truncated to the model's context" if tr else "") for n, tr in zip(notes, scored.pop("truncated"), strict=True)]
    out = pd_concat(df, scored)
    out["note"] = notes
    out["model_version"] = row["model_version"]
    try:
        _write_table(out, output)
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror or exc}", 1)
    console.print(f"scored {len(out)} rows with {row['model_version']} ({row['served']}) -> {output}; "
                  f"{sum(1 for n in notes if n)} row(s) with a note")
    if "intent_top3" in out:
        _print_intents(texts, out)


def _print_intents(texts: list[str], out: "Any", limit: int = 10) -> None:
    """The first rows' intent, confidence and top-3 as a terminal table (the file has them all)."""
    table = Table(title=f"Intents (first {min(limit, len(out))} of {len(out)} rows)")
    table.add_column("text", overflow="ellipsis", no_wrap=True, max_width=48)
    table.add_column("intent")
    table.add_column("conf.", justify="right")
    table.add_column("top-3", overflow="fold")
    for text, (_, r) in zip(texts[:limit], out.head(limit).iterrows()):
        table.add_row(text, str(r.intent_label), f"{r.intent_confidence:.2f}", str(r.intent_top3))
    console.print(table)


def _precision() -> str:
    """bf16 or fp32 for this machine's forward passes (NEWSPULSE_PRECISION; 'auto' probes once, cached)."""
    from models.precision import resolve_precision

    settings = get_settings()
    return resolve_precision(settings.precision, cache_file=settings.precision_cache)


def pd_concat(left: "Any", right: "Any") -> "Any":
    """Input columns then the predictions, side by side (prediction names win on a clash)."""
    import pandas as pd

    return pd.concat([left.drop(columns=[c for c in right.columns if c in left.columns]).reset_index(drop=True),
                      right.reset_index(drop=True)], axis=1)


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument()],
    model: Annotated[str, typer.Option(help="A version, `champion`, a model directory, or a catalogue backbone "
                                            "(smollm2-135m).")] = "champion",
    max_new_tokens: Annotated[int, typer.Option()] = 40,
    top_p: Annotated[float, typer.Option()] = 0.9,
    temperature: Annotated[float, typer.Option()] = 0.8,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Continue a prompt with the language-model head of a model."""
    from models.generate import generate_text

    from models.catalogue import SHIPPED, BackboneError, resolve

    path = Path(model)
    if model in SHIPPED:
        try:
            path = Path(resolve(model, get_settings().backbones_dir).ref)
        except BackboneError as exc:
            _fail(f"{exc}")
    if not path.is_dir():
        from warehouse.registry import get_model

        with _registry_con() as con:
            row = get_model(con, model)
        if row is None:
            _fail(f"no model {model!r}", 1)
        path = Path(row["artifact_path"])
    console.print(generate_text(path, prompt, max_new_tokens=max_new_tokens, top_p=top_p,
                                temperature=temperature, seed=seed))


if __name__ == "__main__":
    app()
