"""The whole chain once: what ``make demo`` / ``newspulse demo`` runs.

Generate the seeded demo stream -> ingest articles, gold labels and click logs (each a validated
ingest run) -> optionally the public datasets -> a short domain pretraining of the backbone on the
ingested corpus when the backbone is one of our own presets (a pretrained catalogue backbone such as
SmolLM2-135M, the default, is adapted directly: its weekly domain pretraining is too slow for a
demo on CPU) -> multi-head fine-tuning on the gold labels (the frozen recipe on CPU), evaluated
next to the TF-IDF baseline and on the real-text golden set, registered and promoted if it wins -> score every article with the hourly CPU model (cpu-champion) ->
monitor: sentiment windows, spike alerts and their delivery, and incident spikes of the triaged
support inbox (its own generated stream with an injected outage) -> recommendations for every click
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
from core.settings import get_settings
from sources.seed_labels import SEED_DATASET, SEED_HEADLINES
from sources.synthetic_support import DATASET as SUPPORT_TRAIN_DATASET
from tasks.demo import generate_demo_stream, generate_support_demo_stream

from flows.triage import triage_flow

DEMO_PER_INTENT = 30  # BANKING77 train rows per intent for the demo's intent model

DEFAULT_DATASETS = [
    "financial_phrasebank", "ag_news", "bbc", "reuters", "cnbc", "guardian", "gold_news",
    "mind_titles", "mind_behaviors",
]


@flow(name="pipeline", flow_run_name="pipeline-seed{seed}-{days}d", log_prints=True)
def pipeline_flow(
    seed: int = 7,
    days: int = 14,
    articles_per_day: int = 200,
    n_users: int = 300,
    datasets: list[str] | None = None,
    data_dir: str | None = None,
    train: bool = True,
    base: str | None = None,
    pretrain_budget_s: float = 90.0,
    finetune_budget_s: float = 150.0,
    max_length: int = 48,
    seed_labels: bool = True,
    support: bool = True,
    support_per_day: int = 200,
) -> dict[str, Any]:
    """Generate the demo stream, ingest it (plus ``datasets`` from ``data_dir``), then train.

    ``seed_labels`` also ingests the 600 hand-written realistic headlines the project ships
    (:mod:`sources.seed_labels`) and trains the sentiment head on them next to the stream's labels.
    ``base`` is the backbone (default ``settings.default_backbone``); a preset (``tiny``,
    ``small``) is pretrained on the corpus first. ``max_length`` caps the tokens per text a
    pretrained backbone reads (the headline and the first sentence). Budgets keep the demo within
    a few minutes on 2 cores; with the public datasets the heads learn PhraseBank sentiment and AG
    News topics next to the demo stream's own labels.

    ``support`` also generates a support inbox over the same days (``support_per_day`` messages a
    day, one injected outage whose onset is ground truth; BANKING77 test texts when ``data_dir``
    holds the dataset), ingests it as support messages, triages it with the intent model, and
    the monitor watches intent shares: the demo reports the outage's detection delay.
    """
    settings = get_settings()
    paths = generate_demo_stream(str(settings.demo_dir), seed, days, articles_per_day, n_users)

    # The stream, its gold labels and its click logs are separate inputs of one source.
    # Bad records are part of the demo: the run must not fail on them, they go to quarantine.
    batches = ingest_flow(files=[paths["articles"], paths["labels"]], source="synthetic")
    batches += ingest_flow(files=[paths["behaviors"]], source="synthetic", file_format="mind_behaviors")
    if seed_labels:  # real-world phrasings the templates lack (validated like any labelled file)
        batches += ingest_flow(files=[str(SEED_HEADLINES)], source=SEED_DATASET,
                               defaults={"dataset": SEED_DATASET, "task": "sentiment"})
    if datasets:
        batches += ingest_flow(datasets=datasets, data_dir=data_dir or str(settings.data_dir))
    result: dict[str, Any] = {"paths": paths, "batches": batches}
    if support and days < 4:  # the outage needs days of ordinary history before it
        print(f"support stream skipped: {days} day(s) of demo data, the outage needs at least 4")
        support = False
    if support:  # the support inbox (and, without BANKING77, the intent model's labelled templates)
        sup = generate_support_demo_stream(str(settings.demo_dir), seed, days, support_per_day,
                                           data_dir=data_dir or (str(settings.data_dir) if settings.data_dir else None))
        batches += ingest_flow(files=[sup["paths"]["inbox"]], source="demo_support", target="support_messages")
        if sup["paths"]["train"]:
            batches += ingest_flow(files=[sup["paths"]["train"]], source="demo_support_train",
                                   target="support_messages")
        result["support"] = sup
    if train:
        result.update(_train(base or settings.default_backbone, pretrain_budget_s, finetune_budget_s, seed,
                             real=bool(datasets), max_length=max_length, seed_labels=seed_labels))
        if support:
            result["intent_model"] = _train_intent(result, base or settings.default_backbone, seed, data_dir
                                                   or (str(settings.data_dir) if settings.data_dir else None))

    # The hourly CPU model (the cpu-champion: a distilled student once one is promoted, else the
    # champion itself) scores what it has not seen, as score-hourly would; the monitor windows
    # that model's scores and raises alerts. Both are no-ops when there is nothing new.
    result["score"] = score_flow(model_version="cpu-champion")
    if support:
        # Triage serves the intent-champion trained above: intent, queue, urgency, auto-answer or a
        # person, reply drafts. Without an intent model it logs a line and stops, and the intent
        # monitor below is a no-op.
        result["triage"] = triage_flow()
    # The demo replays a month of history: its alerts are sent although their windows are old.
    # The monitor also watches the triaged support inbox's intent shares (the injected outage).
    result["monitor"] = monitor_flow(notify_backfill=True)
    # Per-user recommendations from the click logs (the demo's users, and MIND's when ingested).
    result["recommend"] = recommend_flow()
    return result


def _train(base: str, pretrain_budget_s: float, finetune_budget_s: float, seed: int, real: bool,
           max_length: int, seed_labels: bool) -> dict[str, Any]:
    """Heads on the backbone (subflows); a preset backbone gets a short domain pretraining first."""
    from models.backbone import PRESETS

    pre = None
    if base in PRESETS:
        pre = pretrain_flow(run_name=f"demo-{base}", preset=base, max_steps=400,
                            time_budget_s=pretrain_budget_s, seed=seed)
    model = finetune_flow(
        # With the public datasets the heads learn PhraseBank sentiment and AG News topics *and* the
        # demo stream's own labels, so the monitor can still be judged on the injected episodes.
        sentiment_datasets=(["phrasebank_50agree"] if real else []) + ["synthetic"] + ([SEED_DATASET] if seed_labels else []),
        topic_datasets=["ag_news", "synthetic"] if real else ["synthetic"],
        base=pre["model_dir"] if pre else base, epochs=4, time_budget_s=finetune_budget_s, seed=seed,
        run_name="demo-finetune", max_length=128 if pre else max_length,
    )
    return {"pretrain": pre, "model": model}


def _train_intent(result: dict[str, Any], base: str, seed: int, data_dir: str | None) -> dict[str, Any]:
    """The triage intent model (a subflow): frozen features on the news model's backbone.

    With BANKING77 in ``data_dir`` the stream's texts are BANKING77 *test* queries, so the model
    trains on BANKING77 train, 30 per intent (a minute on 2 cores; ``bench/intents.py`` measures
    the full-data model); without it, on the stream's labelled templates, phrased apart from the
    stream. A preset backbone uses the demo's own pretrained checkpoint, as the news heads do.
    """
    support = result["support"]
    if support["paths"].get("train"):
        datasets = [SUPPORT_TRAIN_DATASET]
    else:
        result["batches"] += ingest_flow(datasets=["banking77"], data_dir=data_dir)
        datasets = ["banking77"]
    pre = result.get("pretrain")
    return finetune_flow(intent_datasets=datasets, max_per_intent=DEMO_PER_INTENT, base=pre["model_dir"] if pre else base,
                         epochs=4, seed=seed, run_name="demo-intent", max_length=64)
