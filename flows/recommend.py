"""Nightly recommendation features: per-user scored candidates from click logs and the champion.

For each click-log source: export its recent impressions and the articles they touch (one short
write-locked task) -> fit the click model on those impressions, an NRMS-style user encoder over
the champion's item embeddings (or reuse it when nothing changed) -> rank every user's candidates
in shards (profiles, topic affinity, popularity, recency, sentiment, click probability) -> replace
each ranked user's rows in `rec_features` in one transaction -> report the click model against
the popularity and cosine baselines. Re-runs replace, never duplicate.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows.score import score_flow
from core.settings import get_settings
from tasks.recommend import (
    commit_recommendation_shards, discard_plan, list_click_logs, plan_recommendations, publish_recommend_report,
    rank_user_shard, train_click_model_task)
from tasks.warehouse import migrate_warehouse


def _run_name() -> str:
    return f"recommend-{datetime.now(UTC):%Y%m%d-%H%M}"


@flow(name="recommend", flow_run_name=_run_name,
      # Shards one at a time by default: numpy and torch already use every core in each.
      task_runner=ThreadPoolTaskRunner(max_workers=1))
def recommend_flow(sources: list[str] | None = None, as_of: str | None = None, retrain: bool = False,
                   embed_missing: bool = True) -> dict[str, Any]:
    """Build ``rec_features`` for every click-log source (or ``sources``).

    ``as_of`` (ISO time) ranks as seen at that moment; the default is each log's newest
    impression, so a replayed log is served at its own end. ``retrain`` refits the click model
    even when one exists for the same backbone and log state. Item vectors are the ``champion``
    alias's stored ``embeddings`` (for a pretrained champion, SmolLM2's frozen pooled states),
    never recomputed for an article that already has one; ``embed_missing`` first scores the
    articles that version has not embedded yet (the score flow, uncapped), so every clicked or
    fresh item has a vector.
    """
    settings = get_settings()
    migrate_warehouse(settings)
    results: dict[str, Any] = {}
    for source in sources or list_click_logs(settings):
        plan = plan_recommendations(settings, source, as_of)
        if not plan["reason"] and plan["items_without_embedding"] and embed_missing:
            # Item vectors come from the champion's stored embeddings (one row per article and
            # model version, computed once by the score flow): embed what that exact version has
            # not (never the cpu-champion, a student whose vectors the click model was not fit on),
            # then export again.
            discard_plan(plan)
            score_flow(model_version=plan["model_version"], all_unscored=True)
            plan = plan_recommendations(settings, source, as_of)
        if plan["reason"]:
            results[source] = {"source": source, "rows_written": 0, "reason": plan["reason"]}
            continue
        click = train_click_model_task(settings, plan, retrain)
        futures = [rank_user_shard.submit(settings, plan, click, shard) for shard in range(plan["n_shards"])]
        stats = [f.result() for f in futures]
        summary = commit_recommendation_shards(settings, plan, click, stats)
        publish_recommend_report(summary)
        results[source] = summary
    return results
