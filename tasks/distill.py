"""Distillation tasks: resolve the teacher, export the unlabelled pool, label it in shards, train the student.

Only paths and small dicts travel between tasks; models are loaded inside them (the teacher once
per process for all of its shards). Registration is the fine-tune flow's own task
(:func:`tasks.train.register_model`), called for the ``cpu-champion`` alias: a student is gated
for what the hourly CPU scorer serves, never for ``champion``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from models.distill import DistillInputError, check_student  # re-exported: flows reach models through tasks
from core.settings import Settings
from tasks.warehouse import writer_slot
from warehouse import registry as db_registry
from warehouse.connection import connect
from warehouse.training_data import write_corpus

_TEACHER: dict[str, Any] = {}
_TEACHER_LOCK = threading.Lock()


@task(name="resolve-teacher", cache_policy=NO_CACHE)
def resolve_teacher(settings: Settings, teacher: str) -> dict[str, Any]:
    """The teacher's registry row (``champion`` resolves the alias); a missing version is a DistillInputError."""
    with writer_slot(settings), connect(settings) as con:
        row = db_registry.get_model(con, teacher)
    if row is None:
        raise DistillInputError("no champion yet: run the finetune flow first" if teacher == "champion"
                                else f"no model version {teacher!r} in the registry (see `newspulse models list`)")
    if not (Path(row["artifact_path"]) / "heads.json").is_file():
        raise DistillInputError(f"teacher {row['model_version']}: no model directory at {row['artifact_path']}")
    get_run_logger().info("teacher: %s (%s)", row["model_version"], row["backbone"])
    return {"model_version": row["model_version"], "artifact_path": row["artifact_path"],
            "data_snapshot": row.get("data_snapshot") or {}}


@task(name="export-unlabelled-pool", cache_policy=NO_CACHE)
def export_unlabelled_pool(settings: Settings, run_dir: str, max_docs: int | None = None) -> dict[str, Any]:
    """Articles without any label (so never a validation/test text) -> ``pool.parquet``; empty is an error."""
    path = Path(run_dir) / "pool.parquet"
    with writer_slot(settings), connect(settings) as con:
        counts = write_corpus(con, path, max_docs=max_docs, exclude_labelled=True)
    if counts.written == 0:
        raise DistillInputError("the unlabelled pool is empty: every article carries a label (or none was "
                                "ingested), so the teacher has nothing to label")
    get_run_logger().info("unlabelled pool: %d articles (%d labelled ones left out)", counts.written, counts.excluded)
    return {"path": str(path), "written": counts.written, "excluded": counts.excluded}


@task(name="plan-label-shards", cache_policy=NO_CACHE)
def plan_label_shards(pool_path: str, examples_path: str, run_dir: str, shard_size: int) -> list[str]:
    """The pool plus the labelled train rows, cut into shards for the teacher (one task each)."""
    import pandas as pd

    from models.distill import write_shards

    examples = pd.read_parquet(examples_path)
    return write_shards([pd.read_parquet(pool_path), examples[examples.split == "train"]],
                        Path(run_dir) / "soft", shard_size)


def _teacher(artifact_path: str):
    """``(model, tokenizer)`` of the teacher, loaded once per process."""
    from models.multihead import MultiHeadGPT

    with _TEACHER_LOCK:
        if artifact_path not in _TEACHER:
            _TEACHER.clear()
            _TEACHER[artifact_path] = MultiHeadGPT.load(Path(artifact_path))
        return _TEACHER[artifact_path]


@task(name="teacher-label-shard", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def teacher_label_shard(artifact_path: str, input_path: str, precision: str | None = None,
                        batch_size: int = 32) -> str:
    """Soft probabilities of every head for one shard -> ``output-NNNNN.parquet`` (skipped if done)."""
    from models.distill import label_shard

    out = Path(input_path).with_name(Path(input_path).name.replace("input-", "output-"))
    if not out.exists():
        model, tok = _teacher(artifact_path)
        label_shard(model, tok, Path(input_path), out, batch_size=batch_size, precision=precision)
    return str(out)


@task(name="train-student", cache_policy=NO_CACHE)
def train_student(examples_path: str, soft_paths: list[str], run_dir: str, teacher: dict[str, Any],
                  student_base: str, config: dict[str, Any], temperature: float, alpha: float,
                  precision: str | None = None) -> dict[str, Any]:
    """Train the student on the teacher's soft targets + gold labels; evaluate beside teacher and TF-IDF."""
    import pandas as pd

    from models.distill import run_distillation
    from models.train import TrainConfig

    soft_path = Path(run_dir) / "soft.parquet"
    pd.concat([pd.read_parquet(p) for p in soft_paths], ignore_index=True).to_parquet(soft_path, index=False)
    info = run_distillation(Path(examples_path), soft_path, Path(run_dir), Path(teacher["artifact_path"]),
                            student_base=student_base, config=TrainConfig(**config), temperature=temperature,
                            alpha=alpha, teacher_version=teacher["model_version"], precision=precision)
    log = get_run_logger()
    log.info("student val macro-F1 %.3f (baseline %.3f, serving %s); teacher %s",
             info["val_scores"]["gpt"], info["val_scores"]["baseline"], info["served"], teacher["model_version"])
    if info["distillation"].get("note"):
        log.warning("%s", info["distillation"]["note"])
    return info
