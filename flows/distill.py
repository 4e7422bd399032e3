"""Distillation: the big teacher labels unlabelled articles, a small GPT student learns from it.

The story: resolve the teacher (a registered version, ``champion`` by default: the SmolLM2
frozen-recipe model on the gpu pool), export the labelled examples with the same deterministic
splits as its fine-tune, export the warehouse's unlabelled articles (no validation or test text can
be among them), let the teacher label them with soft probabilities for every head (one task per
shard), train the student (by default ``teacher:10``: the teacher's first 10 layers, its tokenizer and
embeddings; or a preset) on those soft targets plus the gold labels, evaluate it on the
same validation/test rows next to the teacher and the TF-IDF baseline, register it with the
teacher's version as lineage, and gate it for the ``cpu-champion`` alias (what the hourly CPU
scorer serves), never for ``champion``: against the student holding cpu-champion with the same
paired-bootstrap gate as a fine-tune, or, while none holds it (the scorer serves the champion),
only if its served validation macro-F1 is within ``distill_max_gap`` (0.03) of the champion's
(its teacher's) on the same rows. A refusal is recorded with its reason in ``model_promotions``,
on the card and in the returned ``reason``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from core.settings import get_settings
from tasks.distill import (DistillInputError, check_student, export_unlabelled_pool, plan_label_shards,
                           resolve_teacher, teacher_label_shard, train_student)
from tasks.train import export_training_data, register_model, train_settings
from tasks.warehouse import migrate_warehouse


# One shard at a time: each forward pass already uses every core (or the GPU).
@flow(name="distill", flow_run_name="distill-{run_name}", log_prints=True,
      task_runner=ThreadPoolTaskRunner(max_workers=1))
def distill_flow(
    teacher: str = "champion",
    student_base: str = "teacher:10",
    sentiment_datasets: list[str] | None = None,
    topic_datasets: list[str] | None = None,
    topic_top_k: int | None = None,
    epochs: int = 6,
    batch_size: int = 32,
    lr: float = 3e-4,
    max_length: int = 128,
    temperature: float = 2.0,
    alpha: float = 0.5,
    max_pool: int | None = 20000,
    shard_size: int = 2000,
    time_budget_s: float | None = None,
    seed: int = 0,
    run_name: str = "distill",
) -> dict[str, Any]:
    """Distil ``teacher`` (a version or ``champion``) into ``student_base`` (``teacher:N`` or a preset); register it
    and gate it for ``cpu-champion``.

    The labelled datasets default to the ones the teacher was fine-tuned on (its registry row).
    Returns :func:`tasks.train.register_model`'s summary (``alias``, ``promoted``, ``reason``, card).
    """
    check_student(student_base)
    settings = get_settings()
    migrate_warehouse(settings)
    row = resolve_teacher(settings, teacher)
    known = (row["data_snapshot"] or {}).get("datasets") or {}
    sentiment_datasets = sentiment_datasets if sentiment_datasets is not None else known.get("sentiment")
    topic_datasets = topic_datasets if topic_datasets is not None else known.get("topic")
    topic_top_k = topic_top_k if topic_top_k is not None else known.get("topic_top_k")
    if not sentiment_datasets and not topic_datasets:
        raise DistillInputError(f"teacher {row['model_version']} does not record its labelled datasets: "
                                "name them (sentiment_datasets / topic_datasets)")
    run_dir = settings.runs_dir / run_name
    data = export_training_data(settings, str(run_dir), list(sentiment_datasets or []), list(topic_datasets or []),
                                topic_top_k, seed)
    pool = export_unlabelled_pool(settings, str(run_dir), max_pool)
    shards = plan_label_shards(pool["path"], data["path"], str(run_dir), shard_size)
    precision = train_settings(settings, row["artifact_path"], "full")["precision"]
    futures = [teacher_label_shard.submit(row["artifact_path"], s, precision, 64) for s in shards]
    soft = [f.result() for f in futures]
    config = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "max_length": max_length,
              "time_budget_s": time_budget_s, "seed": seed, "recipe": "full", "precision": precision}
    info = train_student(data["path"], soft, str(run_dir), row, student_base, config, temperature, alpha, precision)
    return register_model(settings, info, str(run_dir), {**data, "teacher": row["model_version"],
                                                         "pool": pool["written"]}, alias="cpu-champion")
