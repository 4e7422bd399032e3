"""Recommendation tasks: export a click log's inputs, train the click model, rank users per
shard, commit every shard, publish the run report.

Only paths, ids and small dicts travel between tasks. The click model trainer and the rankers read
the exported Parquet files and never open DuckDB, so they can run on a GPU worker (the trainer is
tagged ``gpu``) or any CPU worker; the commit is the single writer (DESIGN.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import threading
import uuid
import zlib
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from core.settings import Settings
from tasks.warehouse import writer_slot
from warehouse import registry as db_registry
from warehouse.connection import connect
from warehouse.recommend import click_log_sources, commit_recommendations, export_rec_inputs, newest_impression, \
    record_rec_run

CLICK_MODELS_KEPT = 5  # per source; the newest is the one the rankers load
# settings.rec_click_standardize: z-score the item vectors before the news tower, picked on the
# early-stopping slice in bench/recommend.py for SmolLM2 vectors (valid AUC 0.588 -> 0.633 on the
# picked pooling, 0.603 -> 0.632 on the bare last token).
_CLICK_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()


def rec_params(settings: Settings):
    """The ranking knobs of ``settings`` as a :class:`models.recommend.RecParams`."""
    from models.recommend import RecParams

    return RecParams(candidate_hours=settings.rec_candidate_hours, popularity_hours=settings.rec_popularity_hours,
                     max_candidates=settings.rec_max_candidates, top_k=settings.rec_top_k,
                     profile_half_life=settings.rec_profile_half_life,
                     topic_prior_strength=settings.rec_topic_prior_strength,
                     cold_popularity_weight=settings.rec_cold_popularity_weight)


@task(name="list-click-logs", cache_policy=NO_CACHE)
def list_click_logs(settings: Settings) -> list[str]:
    """The ``behaviors`` sources to build recommendations for."""
    with writer_slot(settings), connect(settings) as con:
        return click_log_sources(con)


@task(name="plan-recommendations", cache_policy=NO_CACHE)
def plan_recommendations(settings: Settings, source: str, as_of: str | None = None) -> dict[str, Any]:
    """Resolve the champion and ``as_of`` (default: the log's newest impression), export the inputs.

    Returns the plan: ids, paths, counts and ``n_shards``; ``reason`` is set when there is nothing
    to do (no champion yet, no impressions in the window).
    """
    started = datetime.now(UTC)
    run_id = f"r{started:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    run_dir = settings.staging_dir / f"recommend-{run_id}"
    plan: dict[str, Any] = {"rec_run_id": run_id, "source": source, "started_at": started.isoformat(),
                            "run_dir": str(run_dir), "reason": None}
    with writer_slot(settings), connect(settings) as con:
        champion = db_registry.get_model(con, "champion")
        when = datetime.fromisoformat(as_of) if as_of else newest_impression(con, source)
        if champion is None:
            return {**plan, "reason": "no champion yet: run the finetune flow first"}
        if when is None:
            return {**plan, "reason": f"no impressions from {source!r}"}
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        counts = export_rec_inputs(con, source=source, model_version=champion["model_version"], as_of=when,
                                   history_days=settings.rec_history_days,
                                   candidate_hours=settings.rec_candidate_hours, out_dir=run_dir)
    plan.update(counts, model_version=champion["model_version"], as_of=when.isoformat(),
                n_shards=max(1, math.ceil(counts["users"] / settings.rec_users_per_shard)))
    if not counts["impressions"]:
        shutil.rmtree(run_dir, ignore_errors=True)
        plan["reason"] = f"no impressions from {source!r} in the {settings.rec_history_days:g} days before {when}"
    logger = get_run_logger()
    if counts["events_unmapped"]:
        logger.warning("%s: %d click-log events name items with no article (no text): left out",
                       source, counts["events_unmapped"])
    if counts["items_without_embedding"]:
        logger.warning("%s: %d items have no %s embedding yet (run the score flow): they are not candidates",
                       source, counts["items_without_embedding"], champion["model_version"])
    return plan


@task(name="discard-recommend-plan", cache_policy=NO_CACHE)
def discard_plan(plan: dict[str, Any]) -> None:
    """Remove a plan's exported files (it is replaced by a fresh export)."""
    shutil.rmtree(plan["run_dir"], ignore_errors=True)


def _click_model_dir(settings: Settings, plan: dict[str, Any]) -> Path:
    """Same source, backbone, as_of and log contents -> same folder: re-runs reuse the model."""
    from models.recommend import FEATURE_NAMES

    key = json.dumps([plan["model_version"], plan["as_of"], plan["impressions"], plan["events"],
                      settings.rec_history_days, settings.rec_click_epochs, FEATURE_NAMES,
                      settings.rec_side_features, settings.rec_feature_cut_hours, settings.rec_click_refit,
                      settings.rec_click_standardize])
    safe_source = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in plan["source"])
    return settings.click_models_dir / safe_source / f"{plan['model_version']}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


@task(name="train-click-model", cache_policy=NO_CACHE, tags=["gpu"])
def train_click_model_task(settings: Settings, plan: dict[str, Any], retrain: bool = False) -> dict[str, Any]:
    """Fit the click model on the window's impressions, then refit it on all of them for the best
    epoch count (``rec_click_refit``); or reuse an existing one.

    The usable impressions are cut in time order (:func:`models.train_click.time_slices`): the
    oldest 80% fit, the next 10% pick the epoch (early stopping), the newest 10% are held out.
    Returns ``{click_model: folder or None, metrics}``; the metrics compare the model with the
    popularity and embedding-cosine baselines on the held-out slice only, which neither the fit
    nor the epoch choice saw; ``metrics["evaluated_on"]`` says so in the ``rec_runs`` row.
    """
    from models.click import ClickConfig, Impressions, save_click_model, score_impressions
    from models.rank_metrics import evaluate_impressions
    from models.recommend import (
        FEATURE_NAMES, cosine_scores, impressions_from_events, load_rec_inputs, log_click_rate, popularity_scores,
        streaming_features)
    from models.train_click import time_slices, train_click_model

    logger = get_run_logger()
    out = _click_model_dir(settings, plan)
    if (out / "click_config.json").exists() and not retrain:
        meta = json.loads((out / "click_config.json").read_text(encoding="utf-8"))
        logger.info("reusing click model %s", out)
        return {"click_model": str(out), "metrics": meta.get("extra", {}).get("metrics", {}), "reused": True}
    inputs = load_rec_inputs(plan["events_path"], plan["items_path"])
    imps, meta = impressions_from_events(inputs)
    usable = [i for i, lab in enumerate(imps.labels) if 0 < lab.sum() < len(lab)]
    if len(usable) < settings.rec_min_train_impressions:
        logger.warning("%d usable impressions (< %d): no click model, ranking by hand-made score",
                       len(usable), settings.rec_min_train_impressions)
        return {"click_model": None, "metrics": {"usable_impressions": len(usable)}, "reused": False}
    # Impressions are in time order: fit on the oldest, pick the epoch on the next slice, report on
    # the newest. Reporting on the early-stopping slice (as this task once did) flatters the model.
    fit_pos, stop_pos, held_pos = time_slices(len(usable))
    fit_idx, stop_idx, held_idx = ([usable[i] for i in pos] for pos in (fit_pos, stop_pos, held_pos))
    # Popularity, click rate and age as the nightly batch would have served them at each impression
    # (the popularity baseline, and the click model's wide part when rec_side_features is on).
    imps.features = streaming_features(inputs, imps, meta, ctr0=log_click_rate(imps, fit_idx),
                                       cut_hours=settings.rec_feature_cut_hours)

    def subset(idx: list[int]) -> Impressions:
        return Impressions([imps.history[i] for i in idx], [imps.candidates[i] for i in idx],
                           [imps.labels[i] for i in idx], [imps.features[i] for i in idx])

    train, early_stop, heldout = subset(fit_idx), subset(stop_idx), subset(held_idx)
    cfg = ClickConfig(d_item=inputs.vectors.shape[1], epochs=settings.rec_click_epochs,
                      n_features=len(FEATURE_NAMES) if settings.rec_side_features else 0,
                      standardize=settings.rec_click_standardize)
    model, stats = train_click_model(inputs.vectors, train, cfg, valid=early_stop, progress=True,
                                     time_budget_s=settings.rec_click_time_budget_s, device=settings.rec_device)
    times = meta["time"]
    metrics = {
        "evaluated_on": (f"held-out newest {len(held_idx)} usable impressions ({times.iloc[held_idx[0]]} to "
                         f"{times.iloc[held_idx[-1]]}), after the {len(stop_idx)} early-stopping ones: "
                         "seen by neither the fit nor the epoch choice"),
        "fit_impressions": len(fit_idx), "early_stopping_impressions": len(stop_idx),
        "heldout_impressions": len(held_idx), "early_stopping_to": str(times.iloc[stop_idx[-1]]),
        "heldout_from": str(times.iloc[held_idx[0]]),
        "heldout_to": str(times.iloc[held_idx[-1]]),
        # Older names, still read by `newspulse recommend` (valid_* = the held-out slice it reports).
        "train_impressions": len(fit_idx), "valid_impressions": len(held_idx),
        "click_model": evaluate_impressions(heldout.labels, score_impressions(model, inputs.vectors, heldout)),
        "popularity": evaluate_impressions(heldout.labels, popularity_scores(heldout)),
        "cosine": evaluate_impressions(heldout.labels, cosine_scores(heldout, inputs.vectors)),
        "early_stopping_auc": (stats.get("best_valid") or {}).get("auc"),
        "epochs_run": stats.get("epochs_run"), "best_epoch": stats.get("best_epoch"),
        "train_seconds": round(stats.get("seconds", 0.0), 1),
    }
    if settings.rec_click_refit:
        # Serve a model that has seen the newest impressions too: refit on all of them for the
        # epochs that validated best. The figures above describe the validated fit.
        model, refit = train_click_model(inputs.vectors, subset(usable), replace(cfg, epochs=max(1, stats["best_epoch"])),
                                         progress=True, time_budget_s=settings.rec_click_time_budget_s,
                                         device=settings.rec_device)
        metrics.update(refit_impressions=len(usable), refit_seconds=round(refit.get("seconds", 0.0), 1))
    tmp = out.with_name(out.name + f".tmp-{uuid.uuid4().hex[:6]}")
    save_click_model(model, tmp, extra={"metrics": metrics, "source": plan["source"],
                                        "model_version": plan["model_version"], "as_of": plan["as_of"]})
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)
    _prune_click_models(out.parent, keep=CLICK_MODELS_KEPT)
    logger.info("click model %s: valid AUC %.3f (popularity %.3f, cosine %.3f)", out.name,
                metrics["click_model"]["auc"], metrics["popularity"]["auc"], metrics["cosine"]["auc"])
    return {"click_model": str(out), "metrics": metrics, "reused": False}


def _prune_click_models(folder: Path, keep: int) -> list[str]:
    """Delete all but the ``keep`` newest click models of one source (older log states are never reused)."""
    models = sorted((p for p in folder.iterdir() if p.is_dir() and ".tmp-" not in p.name),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in models[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return [p.name for p in models[keep:]]


def _click_model(path: str):
    from models.click import load_click_model

    with _LOCK:
        if path not in _CLICK_MODELS:
            _CLICK_MODELS.clear()
            _CLICK_MODELS[path] = load_click_model(Path(path))
        return _CLICK_MODELS[path]


def shard_of(user_id: str, n_shards: int) -> int:
    """Stable user -> shard assignment (crc32, the same on every worker and run)."""
    return zlib.crc32(user_id.encode("utf-8")) % n_shards


@task(name="rank-user-shard", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def rank_user_shard(settings: Settings, plan: dict[str, Any], click: dict[str, Any], shard: int) -> dict[str, Any]:
    """Profiles, features and top-k for one shard of users -> ``recs-/profiles-NNNNN.parquet``."""
    from models.click import score_users
    from models.recommend import (
        candidate_pool, impressions_from_events, load_rec_inputs, pool_features, popularity, rank_users,
        topic_click_shares, user_histories)

    run_dir = Path(plan["run_dir"])
    recs_path, prof_path = run_dir / f"recs-{shard:05d}.parquet", run_dir / f"profiles-{shard:05d}.parquet"
    if prof_path.exists():  # a retried task: this shard is done
        return {"shard": shard, "skipped": True}
    params, as_of = rec_params(settings), datetime.fromisoformat(plan["as_of"])
    inputs = load_rec_inputs(plan["events_path"], plan["items_path"])
    imps, meta = impressions_from_events(inputs)
    users = user_histories(imps, meta)
    users = users[[shard_of(u, plan["n_shards"]) == shard for u in users["user_id"]]].reset_index(drop=True)
    pop = popularity(inputs, as_of, params.popularity_hours)
    pool = candidate_pool(inputs, as_of, params, pop)
    clicked = np.concatenate([c[lab == 1] for c, lab in zip(imps.candidates, imps.labels, strict=True)] or [[]])
    prior = topic_click_shares(inputs.topics, clicked.astype(np.int64))
    logits = None
    if click.get("click_model") and len(pool) and len(users):
        model = _click_model(click["click_model"])
        side = pool_features(inputs, imps, pool, as_of) if model.cfg.n_features else None
        logits = score_users(model, inputs.vectors, list(users["history"]), pool, device=settings.rec_device,
                             logits=True, features=side)
    recs, profiles = rank_users(inputs, users, pool, pop, as_of, params, logits, prior)
    constants = {"source": plan["source"], "model_version": plan["model_version"], "rec_run_id": plan["rec_run_id"],
                 "as_of": pd.Timestamp(as_of)}
    _write_atomic(recs.assign(**constants), recs_path)
    _write_atomic(profiles.assign(**constants), prof_path)
    return {"shard": shard, "users": len(users), "cold_start_users": int((profiles["n_clicks"] == 0).sum()),
            "rows": len(recs), "candidates": len(pool), "skipped": False}


def _write_atomic(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)


@task(name="commit-recommendations", cache_policy=NO_CACHE)
def commit_recommendation_shards(settings: Settings, plan: dict[str, Any], click: dict[str, Any],
                                 shard_stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Replace the ranked users' rows in one transaction, record the run, drop the staging folder."""
    run_dir = Path(plan["run_dir"])
    recs = sorted(str(p) for p in run_dir.glob("recs-*.parquet"))
    profiles = sorted(str(p) for p in run_dir.glob("profiles-*.parquet"))
    done = [s for s in shard_stats if not s.get("skipped")]
    summary = {
        "rec_run_id": plan["rec_run_id"], "source": plan["source"], "model_version": plan["model_version"],
        "click_model": click.get("click_model"), "as_of": plan["as_of"],
        "users": sum(s["users"] for s in done), "cold_start_users": sum(s["cold_start_users"] for s in done),
        "candidates": max((s["candidates"] for s in done), default=0),
        "events_unmapped": plan["events_unmapped"], "items_without_embedding": plan["items_without_embedding"],
        "metrics": click.get("metrics") or {},
    }
    with writer_slot(settings), connect(settings) as con:
        result = commit_recommendations(con, recs, profiles, source=plan["source"], model_version=plan["model_version"])
        summary.update(rows_written=result["rows_inserted"], rows_replaced=result["rows_replaced"],
                       users=result["users"] or summary["users"])
        record_rec_run(con, {**summary, "flow_run_id": str(flow_run.get_id()) if flow_run.get_id() else None,
                             "started_at": datetime.fromisoformat(plan["started_at"]),
                             "finished_at": datetime.now(UTC), "as_of": datetime.fromisoformat(plan["as_of"])})
    if len(profiles) == plan["n_shards"]:
        shutil.rmtree(run_dir, ignore_errors=True)
    get_run_logger().info("%s: %d rows for %d users (%d cold start) from %d candidates; %d rows replaced",
                          plan["source"], summary["rows_written"], summary["users"], summary["cold_start_users"],
                          summary["candidates"], summary["rows_replaced"])
    return summary


@task(name="publish-recommend-report", cache_policy=NO_CACHE)
def publish_recommend_report(summary: dict[str, Any]) -> None:
    """Prefect UI: a table of the run and a markdown report of the click model vs the baselines."""
    create_table_artifact(key=f"recommend-run-{_slug(summary['source'])}", table=[{k: summary.get(k) for k in (
        "rec_run_id", "source", "model_version", "as_of", "users", "cold_start_users", "candidates", "rows_written",
        "rows_replaced", "events_unmapped", "items_without_embedding")}],
        description=f"Recommendation run {summary['rec_run_id']}")
    m = summary.get("metrics") or {}
    lines = [f"# Recommendations for `{summary['source']}` as of {summary['as_of']}", "",
             f"{summary['users']} users ({summary['cold_start_users']} cold start), {summary['candidates']} candidates, "
             f"{summary['rows_written']} rows in `rec_features`.", ""]
    if "click_model" in m and isinstance(m["click_model"], dict):
        lines += [f"Held-out newest {m['valid_impressions']} impressions, after the early-stopping slice "
                  f"(fit on {m['train_impressions']}; {m.get('evaluated_on', '')}):", "",
                  "| ranker | AUC | MRR | nDCG@5 | nDCG@10 |", "|---|---|---|---|---|"]
        for name in ("click_model", "popularity", "cosine"):
            r = m[name]
            lines.append(f"| {name} | {r['auc']:.4f} | {r['mrr']:.4f} | {r['ndcg@5']:.4f} | {r['ndcg@10']:.4f} |")
    else:
        lines.append("No click model this run (too few impressions): hand-made score of similarity, topic and popularity.")
    create_markdown_artifact(key=f"recommend-report-{_slug(summary['source'])}", markdown="\n".join(lines),
                             description="Click model vs baselines")


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower())
