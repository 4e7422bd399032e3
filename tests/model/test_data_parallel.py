"""Data-parallel fine-tuning: the finetune task launches ``torchrun`` with N processes.

On this CPU-only machine the same path runs as gloo DDP over 2 CPU processes: the main process
trains the tokenizer and the others load it, gradients are synchronised, only the main process
saves, evaluates and writes ``info.json``; the flow then registers one version. (On a GPU host
the same launch uses NCCL, one process per GPU.)
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest

from models.experiment import run_experiment
from models.train import TrainConfig

pytestmark = pytest.mark.slow

VERBS = {"positive": "rose sharply", "negative": "fell sharply", "neutral": "was flat"}
TOPICS = {"earnings": "quarterly profit", "markets": "share price"}


def _examples(path: Path) -> Path:
    r = random.Random(0)
    rows = []
    for i in range(240):
        s, t = r.choice(list(VERBS)), r.choice(list(TOPICS))
        split = "train" if i < 180 else ("validation" if i < 210 else "test")
        rows.append({"text": f"Company{i % 17} {TOPICS[t]} {VERBS[s]} today", "sentiment": s, "topic": t,
                     "split": split, "dataset": "made-up"})
    pd.DataFrame(rows).to_parquet(path)
    return path


def test_two_process_training_gives_one_model_and_one_info(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.logging import disable_run_logger

    from tasks.train import finetune_and_evaluate

    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")  # gloo on CPU; a GPU host uses NCCL
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    examples = _examples(tmp_path / "examples.parquet")
    config = {"epochs": 2, "batch_size": 16, "lr": 3e-3, "max_length": 32, "seed": 0}
    with disable_run_logger():  # the task's body, outside a flow run
        info = finetune_and_evaluate.fn(str(examples), str(tmp_path / "ddp"), "tiny", config, processes=2)

    assert info["training"]["processes"] == 2 and info["training"]["device"].startswith("cpu")
    assert "nproc_per_node" not in info and (tmp_path / "ddp" / "torchrun.log").exists()
    model_dir = tmp_path / "ddp" / "model"
    assert (model_dir / "model.safetensors").exists() and (model_dir / "confusion_sentiment.png").exists()
    assert set(info["metrics"]) == {"sentiment", "topic"}
    # Same data, one process: the same experiment shape (the numbers differ: DDP halves each
    # process's batches), so the flow and the registry see the same info either way.
    single = run_experiment(examples, tmp_path / "single", base="tiny", config=TrainConfig(**config), progress=False)
    assert single["training"]["processes"] == 1
    assert set(single) == set(info) and set(single["metrics"]) == set(info["metrics"])
