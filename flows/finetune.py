"""Multi-head fine-tuning: labelled data -> model -> evaluation beside the baseline -> registry.

The story: export the labelled examples with their deterministic splits, fine-tune the sentiment
and topic heads on a (pre)trained backbone, evaluate on validation and test next to a TF-IDF +
logistic-regression baseline trained on the same split, register the version with its model card,
and move the ``champion`` alias only if it beats the current champion on the same validation split.
Your own labelled files are ingested first (with a label mapping such as bearish->negative).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from flows.ingest import ingest_flow
from models.backbone import is_large_pretrained
from core.settings import get_settings
from tasks.train import export_training_data, finetune_and_evaluate, register_model, resolve_base, train_settings
from tasks.warehouse import migrate_warehouse


@flow(name="finetune", flow_run_name="finetune-{run_name}", log_prints=True)
def finetune_flow(
    sentiment_datasets: list[str] | None = None,
    topic_datasets: list[str] | None = None,
    topic_top_k: int | None = None,
    base: str | None = None,
    recipe: str = "auto",
    epochs: int = 6,
    batch_size: int = 32,
    lr: float | None = None,
    max_length: int = 128,
    lora: bool = False,
    time_budget_s: float | None = None,
    seed: int = 0,
    run_name: str = "finetune",
    labelled_files: list[str] | None = None,
    dataset_name: str = "custom",
    task: str = "sentiment",
    text_column: str = "text",
    label_column: str = "label",
    label_map: dict[str, str] | None = None,
    intent_datasets: list[str] | None = None,
    max_per_intent: int | None = None,
) -> dict[str, Any]:
    """Fine-tune, evaluate, register.

    ``base``: a catalogue backbone (default ``settings.default_backbone``, SmolLM2-135M), a preset,
    a checkpoint directory, a cached hub id, or ``pretrain:<run_name>`` for the backbone the
    pretrain flow of that run name wrote last. ``recipe``: ``frozen``, ``lora``, ``full`` or
    ``auto`` (frozen on CPU workers for a pretrained backbone, full on GPUs and for presets).

    ``intent_datasets`` (e.g. ``["banking77"]``, support messages with gold intents) train the
    customer-service intent model instead of the news heads: same backbones, recipes, TF-IDF
    baseline and gate, competing for the ``intent-champion`` alias that triage serves. Its card
    carries the auto-answer threshold tuned to 95% precision on validation. ``max_per_intent``
    caps the examples per intent (a quick model, e.g. the demo's).
    """
    settings = get_settings()
    migrate_warehouse(settings)
    base = resolve_base(settings, base)
    sentiment_datasets = list(sentiment_datasets or [])
    topic_datasets = list(topic_datasets or [])
    intent_datasets = list(intent_datasets or [])
    if labelled_files:
        # Own data goes through the same validated ingest; the mapping makes its labels ours.
        if task == "intent":  # support messages with gold intents: the support inbox's table
            ingest_flow(files=labelled_files, source=dataset_name, column_map={"text": text_column, "label": label_column},
                        defaults={"dataset": dataset_name}, label_map=label_map, fail_on_invalid_batch=True,
                        target="support_messages")
            intent_datasets.append(dataset_name)
        else:
            ingest_flow(files=labelled_files, source=dataset_name,
                        column_map={"body": text_column, "label": label_column},
                        defaults={"dataset": dataset_name, "task": task}, label_map=label_map,
                        fail_on_invalid_batch=True)
            (sentiment_datasets if task == "sentiment" else topic_datasets).append(dataset_name)
    run_dir = settings.runs_dir / run_name
    data = export_training_data(settings, str(run_dir), sentiment_datasets, topic_datasets, topic_top_k, seed,
                                intent_datasets, max_per_intent)
    config = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "max_length": max_length,
              "time_budget_s": time_budget_s, "seed": seed,
              **train_settings(settings, base, "lora" if lora else recipe)}
    pretrained = is_large_pretrained(base)
    if config["recipe"] in ("lora", "full") and pretrained:
        config["lm_weight"] = 0.5  # GPT-1's auxiliary LM loss keeps a pretrained LM head usable
    if lr is None:  # a pretrained backbone fully fine-tuned wants a small step; adapters and new nets more
        lr = 5e-5 if config["recipe"] == "full" and pretrained else 3e-4
        config["head_lr"] = 1e-3 if lr < 1e-4 else None
    config["lr"] = lr
    info = finetune_and_evaluate(data["path"], str(run_dir), base, config, settings.train_processes)
    pretrained_from = base if Path(base).is_dir() else None
    # An intent model competes for the alias triage serves, never for the news champion.
    alias = "intent-champion" if intent_datasets else "champion"
    return register_model(settings, info, str(run_dir), data, pretrained_from, alias=alias)
