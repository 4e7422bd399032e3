"""The monitor's last step: fill the relabel queue (issue 17 item 2).

Reads the served model's (``cpu-champion``) recent, unlabelled scores (``warehouse.label_queue``),
asks the version's TF-IDF baseline for a second opinion, ranks and picks with
``models.active.build_queue`` (uncertainty, disagreement, alert evidence, drifted sources;
near-duplicates collapsed, a per-source share) and stores at most what is left of today's cap.
``newspulse labels export`` hands the queue to people, ``newspulse labels import`` brings their
labels back into the ``relabel`` dataset, which the weekly fine-tune trains on.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core.settings import Settings
from tasks.warehouse import writer_slot
from warehouse import label_queue as db_queue
from warehouse import registry as db_registry
from warehouse.connection import connect


def load_baseline(model: dict[str, Any]) -> Any | None:
    """The version's TF-IDF sentiment baseline, or None (:func:`models.baseline.load_version_baseline`)."""
    from models.baseline import load_version_baseline

    return load_version_baseline(model.get("artifact_path"))


def fill(con: duckdb.DuckDBPyConnection, settings: Settings, *, now: datetime | None = None,
         drifted_sources: list[str] | None = None, baseline: Any | None = "auto") -> dict[str, Any]:
    """Queue today's share of candidates on ``con``; returns what happened (no Prefect here).

    ``drifted_sources`` add to the drifting sources ``model_health`` names (empty when unknown).
    ``baseline``: a fitted ``TfidfLogReg``, None for none, or "auto" (the served version's own).
    """
    from models.active import build_queue

    now = now or datetime.now(UTC)
    model = db_registry.resolve(con, "cpu-champion")
    if model is None:
        return {"queued": 0, "reason": "no served model yet"}
    version = model["model_version"]
    day = now.astimezone(UTC).date()
    room = settings.label_queue_per_day - db_queue.queued_on(con, day)
    if room <= 0:
        return {"queued": 0, "model_version": version, "reason": f"today's cap of {settings.label_queue_per_day} is full"}
    since = now - timedelta(hours=settings.label_queue_lookback_h)
    drifted = sorted(set(db_queue.drifted_sources(con, version, since)) | set(drifted_sources or []))
    alerts = db_queue.alert_articles(con, since)
    frame = db_queue.candidates(con, version, since, settings.label_queue_candidates, alerts, drifted)
    if frame.empty:
        return {"queued": 0, "model_version": version, "candidates": 0, "drifted_sources": drifted}
    if baseline == "auto":
        baseline = load_baseline(model)
    probs = baseline.predict_proba(frame.text.fillna("").tolist()) if baseline is not None else None
    if probs is not None and list(baseline.labels) != ["negative", "neutral", "positive"]:
        order = [list(baseline.labels).index(lab) for lab in ("negative", "neutral", "positive")]
        probs = probs[:, order]
    known = db_queue.known_texts(con, (since.astimezone(UTC)).date())
    picks = build_queue(frame, room, baseline_probs=probs, max_share=settings.label_queue_max_source_share,
                        uncertain_margin=settings.label_queue_uncertain_margin, known_texts=known,
                        threshold=settings.label_queue_duplicate_jaccard)
    queued = db_queue.store(con, picks, version, day, now)
    reasons: dict[str, int] = {}
    for rs in picks.reasons if not picks.empty else []:
        for r in rs:
            reasons[r] = reasons.get(r, 0) + 1
    return {"queued": queued, "model_version": version, "candidates": int(len(frame)), "room": room,
            "drifted_sources": drifted, "alerted_articles": len(alerts), "reasons": reasons,
            "sources": picks.source.value_counts().to_dict() if not picks.empty else {},
            "duplicates_collapsed": int(picks.duplicates.map(len).sum()) if not picks.empty else 0,
            "baseline": baseline is not None}


@task(name="fill-label-queue", cache_policy=NO_CACHE)
def fill_label_queue(settings: Settings, drifted_sources: list[str] | None = None) -> dict[str, Any]:
    """The relabel queue's share of today, under the writer slot (see :func:`fill`)."""
    if not settings.label_queue_enabled:
        return {"queued": 0, "reason": "label_queue_enabled is off"}
    with writer_slot(settings), connect(settings) as con:
        out = fill(con, settings, drifted_sources=drifted_sources)
    get_run_logger().info("relabel queue: %d queued (%s)", out.get("queued", 0),
                          out.get("reason") or f"{out.get('candidates', 0)} candidates, reasons {out.get('reasons')}")
    return out
