"""Triage tasks: plan batches, triage a batch, commit every batch, publish the run summary.

Only paths, ids and small dicts travel between tasks. A batch task loads the intent model (and the
sentiment model) once per process through :func:`load_scorer` and never opens DuckDB; the commit
is the single writer (DESIGN.md). Tests replace :func:`load_scorer` / :func:`load_rewriter` with
fakes.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from models.replies import Answer, Rewrite, load_kb
from models.routing import RoutingTable, load_routing
from models.triage_batch import (
    auto_answer_threshold,
    chat_rewriter,
    has_chat_template,
    lm_chat_generate,
    output_paths,
    triage_file,
)
from core.settings import Settings
from tasks.warehouse import writer_slot
from warehouse.connection import connect
from warehouse.triage import (
    INTENT_ALIAS,
    SENTIMENT_ALIAS,
    commit_triage,
    export_untriaged,
    resolve_alias,
    run_summary,
    staged_batches,
    unrouted_intents,
)

_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()
_KEEP_MODELS = 3  # intent model, sentiment model, rewriting LM


def _cached(key: str, load: Any) -> Any:
    with _MODELS_LOCK:
        if key not in _MODELS:
            while len(_MODELS) >= _KEEP_MODELS:  # a long-lived worker frees the oldest model
                _MODELS.pop(next(iter(_MODELS)))
            _MODELS[key] = load()
        return _MODELS[key]


def load_scorer(artifact_path: str, precision: str | None = None) -> Any:
    """The served model at ``artifact_path`` (``.score(texts)``, ``.info``), loaded once per process."""
    from models.serving import ServedModel

    return _cached(f"scorer|{artifact_path}|{precision}", lambda: ServedModel(Path(artifact_path), precision=precision))


def load_rewriter(settings: Settings, artifact_path: str) -> Rewrite | None:
    """The instruct rewrite hook, or None: ``reply_rewrite`` off, or the model's tokenizer has no chat template."""
    if not settings.reply_rewrite:
        return None
    from models.generate import load_lm

    model, tokenizer = _cached(f"lm|{artifact_path}", lambda: load_lm(Path(artifact_path)))
    if not has_chat_template(tokenizer):
        return None
    return chat_rewriter(lm_chat_generate(model, tokenizer))


def load_triage_config(settings: Settings) -> tuple[RoutingTable, dict[str, Answer]]:
    """The routing table and approved answers the settings name (the shipped ones by default).

    Raises ``RoutingError`` / ``KnowledgeBaseError`` naming every bad row or entry.
    """
    return load_routing(settings.routing_table), load_kb(settings.reply_kb)


def _precision(settings: Settings) -> str:
    from tasks.score import score_precision

    return score_precision(settings)


@task(name="plan-triage", cache_policy=NO_CACHE)
def plan_triage(settings: Settings, batch_size: int, limit: int | None = None) -> dict[str, Any]:
    """Check the routing table and answers, resolve the models, stage the untriaged messages.

    Returns ``{triage_run_id, model_version, artifact_path, sentiment_version, sentiment_path, run_dir,
    inputs, missing_intents, started_at, flow_run_id, reason}``; ``inputs`` is empty when there is
    nothing to triage or no intent model yet (``reason`` says which).
    """
    log = get_run_logger()
    table, kb = load_triage_config(settings)  # a broken table fails the run here, before any work
    started = datetime.now(UTC)
    run_id = f"t{started:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    run_dir = settings.staging_dir / f"triage-{run_id}"
    plan: dict[str, Any] = {"triage_run_id": run_id, "model_version": None, "inputs": [], "run_dir": str(run_dir),
                            "missing_intents": list(table.missing), "default_queue": table.default_queue,
                            "answers": len(kb), "started_at": started.isoformat(), "reason": None,
                            "flow_run_id": str(flow_run.get_id()) if flow_run.get_id() else None}
    if table.missing:
        log.warning("routing table %s has no row for %d intent(s); they go to queue %r: %s", table.source,
                    len(table.missing), table.default_queue, ", ".join(table.missing))
    with writer_slot(settings), connect(settings) as con:
        intent = resolve_alias(con, INTENT_ALIAS)
        if intent is None:
            plan["reason"] = f"no intent model yet: no model holds {INTENT_ALIAS} (train one with the finetune flow)"
            log.warning("nothing to triage: %s", plan["reason"])
            return plan
        sentiment = resolve_alias(con, SENTIMENT_ALIAS)
        plan["inputs"] = export_untriaged(con, intent["model_version"], run_dir, batch_size, limit)
    plan.update(model_version=intent["model_version"], artifact_path=intent["artifact_path"],
                sentiment_version=sentiment["model_version"] if sentiment else None,
                sentiment_path=sentiment["artifact_path"] if sentiment else None)
    if not plan["inputs"]:
        plan["reason"] = "no new messages"
    log.info("%s: %d batch(es) to triage with %s (sentiment: %s)", run_id, len(plan["inputs"]),
             intent["model_version"], plan["sentiment_version"] or "none")
    return plan


@task(name="triage-batch", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def triage_batch_task(settings: Settings, plan: dict[str, Any], input_path: str) -> dict[str, Any]:
    """Score, route and draft one staged batch into its ``scores-``/``drafts-`` Parquet files."""
    scores_path, _ = output_paths(input_path)
    if scores_path.exists():  # a retried or resumed task: the batch is done
        return {"path": str(scores_path), "skipped": True}
    log = get_run_logger()
    precision = _precision(settings)
    scorer = load_scorer(plan["artifact_path"], precision)
    sentiment = None
    if plan.get("sentiment_path") and plan["sentiment_path"] != plan["artifact_path"]:
        try:
            sentiment = load_scorer(plan["sentiment_path"], precision)
        except Exception as exc:  # noqa: BLE001 - sentiment only sharpens urgency; triage goes on
            log.warning("sentiment model %s could not be loaded (%s): sentiment left empty",
                        plan["sentiment_version"], exc)
    table, kb = load_triage_config(settings)
    threshold = auto_answer_threshold(scorer.info) if settings.triage_auto_answer else None
    rewrite = load_rewriter(settings, plan["artifact_path"])
    extra = {"scored_at": datetime.now(UTC), "triage_run_id": plan["triage_run_id"], "flow_run_id": plan["flow_run_id"]}
    stats = triage_file(input_path, scorer, table, kb, extra=extra, sentiment_scorer=sentiment,
                        sentiment_model_version=plan["sentiment_version"] if sentiment else plan["model_version"],
                        threshold=threshold, rewrite=rewrite)
    auto = (scorer.info or {}).get("auto_answer") or {}
    return {"path": str(scores_path), "skipped": False, "threshold": threshold,
            "threshold_reason": auto.get("reason") if isinstance(auto, dict) else None, **vars(stats)}


@task(name="commit-triage", cache_policy=NO_CACHE)
def commit_triage_task(settings: Settings, plan: dict[str, Any], batch_stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Insert every triaged batch into ``support_scores``/``reply_drafts`` (one transaction); summarise the run."""
    run_dir = Path(plan["run_dir"])
    done = staged_batches(run_dir)
    with writer_slot(settings), connect(settings) as con:
        result = commit_triage(con, run_dir, plan["model_version"])
        summary = run_summary(con, plan["triage_run_id"])
        unrouted = unrouted_intents(con)
    if len(done) == len(plan["inputs"]):
        shutil.rmtree(run_dir, ignore_errors=True)  # everything is in the warehouse now
    fresh = [s for s in batch_stats if not s.get("skipped")]
    thresholds = {s.get("threshold") for s in fresh}
    summary.update({
        "triage_run_id": plan["triage_run_id"], "model_version": plan["model_version"],
        "sentiment_version": plan.get("sentiment_version"), "batches": len(plan["inputs"]),
        "batches_committed": len(done), "rows_inserted": result.rows_inserted,
        "rows_duplicate": result.rows_duplicate, "drafts_inserted": result.drafts_inserted,
        "threshold": thresholds.pop() if len(thresholds) == 1 else None,
        "threshold_reason": next((s.get("threshold_reason") for s in fresh if s.get("threshold_reason")), None),
        **{k: sum(int(s.get(k) or 0) for s in fresh) for k in ("not_scored", "score_failed", "rewritten")},
        "missing_intents": plan["missing_intents"], "default_queue": plan["default_queue"],
        "unrouted": unrouted,
    })
    get_run_logger().info("triaged %d message(s) (%d already there): %d auto-answered, %d urgent, %d draft(s)",
                          result.rows_inserted, result.rows_duplicate, summary["auto_answered"], summary["urgent"],
                          result.drafts_inserted)
    return summary


def triage_markdown(summary: dict[str, Any]) -> str:
    """The run report: counts per queue, urgent, auto-answered, coverage, unrouted intents."""
    thr = summary.get("threshold")
    lines = [
        f"# Triage run {summary.get('triage_run_id')}",
        "",
        f"Intent model `{summary.get('model_version')}`, sentiment model `{summary.get('sentiment_version') or 'none'}`.",
        f"{summary.get('messages', 0)} message(s) triaged, {summary.get('urgent', 0)} urgent, "
        f"{summary.get('auto_answered', 0)} auto-answered (coverage {summary.get('coverage', 0.0):.1%}), "
        f"auto-answer threshold {f'{thr:.3f}' if thr is not None else 'none'}"
        + (f" ({summary['threshold_reason']})" if summary.get("threshold_reason") else "") + ".",
        f"Not scored (empty or non-English, sent to a person): {summary.get('not_scored', 0)}; "
        f"scoring failed (sent to a person): {summary.get('score_failed', 0)}; "
        f"drafts rewritten by the model: {summary.get('rewritten', 0)}.",
        "",
        "| queue | messages | urgent | auto-answered | human |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {q['queue']} | {q['messages']} | {q['urgent']} | {q['auto_answered']} | {q['human']} |"
              for q in summary.get("queues", [])]
    missing = summary.get("missing_intents") or []
    lines += ["", f"Routing table rows missing for {len(missing)} intent(s) (sent to `{summary.get('default_queue')}`)"
              + (": " + ", ".join(f"`{m}`" for m in missing) if missing else ".")]
    unrouted = summary.get("unrouted") or []
    if unrouted:
        lines += ["", "| unrouted intent | messages so far |", "|---|---:|"]
        lines += [f"| {u['intent']} | {u['messages']} |" for u in unrouted]
    return "\n".join(lines) + "\n"


@task(name="publish-triage-report", cache_policy=NO_CACHE)
def publish_triage_report(summary: dict[str, Any]) -> None:
    """A markdown artifact with the run's summary (Prefect UI)."""
    create_markdown_artifact(key="triage-run", markdown=triage_markdown(summary),
                             description=f"Triage run {summary.get('triage_run_id')}")
