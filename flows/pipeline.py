"""The whole chain once: what ``make demo`` / ``newspulse demo`` runs.

Generate the seeded demo stream -> ingest articles, gold labels and click logs (each a validated
ingest run) -> optionally the public datasets -> a short domain pretraining of the backbone on the
ingested corpus -> multi-head fine-tuning on the gold labels, evaluated next to the TF-IDF
baseline, registered and promoted if it wins -> score every article with the champion ->
monitor: sentiment windows, spike alerts and their delivery -> recommendations for every click
log's users (click model, features, top-k).
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.finetune import finetune_flow
from flows.ingest import ingest_flow
from flows.monitor import monitor_flow
from flows.pretrain import pretrain_flow
from flows.recommend import recommend_flow
from flows.score import score_flow
from newspulse.settings import get_settings
from tasks.demo import generate_demo_stream

DEFAULT_DATASETS = [
    "financial_phrasebank", "ag_news", "bbc", "reuters", "cnbc", "guardian", "gold_news",
    "mind_titles", "mind_behaviors",
]


@flow(name="pipeline", flow_run_name="pipeline-seed{seed}-{days}d-{preset}", log_prints=True)
def pipeline_flow(
    seed: int = 7,
    days: int = 28,
    articles_per_day: int = 400,
    n_users: int = 300,
    datasets: list[str] | None = None,
    data_dir: str | None = None,
    train: bool = True,
    preset: str = "small",
    pretrain_budget_s: float = 90.0,
    finetune_budget_s: float = 150.0,
) -> dict[str, Any]:
    """Generate the demo stream, ingest it (plus ``datasets`` from ``data_dir``), then train.

    Training budgets keep the demo within a few minutes on 2 cores; with the public datasets the
    heads learn PhraseBank sentiment and AG News topics next to the demo stream's own labels.
    """
    settings = get_settings()
    paths = generate_demo_stream(str(settings.demo_dir), seed, days, articles_per_day, n_users)

    # The stream, its gold labels and its click logs are separate inputs of one source.
    # Bad records are part of the demo: the run must not fail on them, they go to quarantine.
    batches = ingest_flow(files=[paths["articles"], paths["labels"]], source="synthetic")
    batches += ingest_flow(files=[paths["behaviors"]], source="synthetic", file_format="mind_behaviors")
    if datasets:
        batches += ingest_flow(datasets=datasets, data_dir=data_dir or str(settings.data_dir))
    result: dict[str, Any] = {"paths": paths, "batches": batches}
    if train:
        result.update(_train(preset, pretrain_budget_s, finetune_budget_s, seed, real=bool(datasets)))

    # The champion (new, or from an earlier run) scores what it has not seen; the monitor
    # windows the scores and raises alerts. Both are no-ops when there is nothing new.
    result["score"] = score_flow()
    # The demo replays a month of history: its alerts are sent although their windows are old.
    result["monitor"] = monitor_flow(notify_backfill=True)
    # Per-user recommendations from the click logs (the demo's users, and MIND's when ingested).
    result["recommend"] = recommend_flow()
    return result


def _train(preset: str, pretrain_budget_s: float, finetune_budget_s: float, seed: int, real: bool) -> dict[str, Any]:
    """A short domain-adaptive pretraining, then the heads on top of it (subflows)."""
    pre = pretrain_flow(run_name=f"demo-{preset}", preset=preset, max_steps=400,
                        time_budget_s=pretrain_budget_s, seed=seed)
    model = finetune_flow(
        # With the public datasets the heads learn PhraseBank sentiment and AG News topics *and* the
        # demo stream's own labels, so the monitor can still be judged on the injected episodes.
        sentiment_datasets=["phrasebank_50agree", "synthetic"] if real else ["synthetic"],
        topic_datasets=["ag_news", "synthetic"] if real else ["synthetic"],
        base=pre["model_dir"], epochs=4, time_budget_s=finetune_budget_s, seed=seed, run_name="demo-finetune",
    )
    return {"pretrain": pre, "model": model}
