"""Domain-adaptive pretraining: tokenizer + causal-LM training of the GPT backbone on our corpus.

Runs on the ``gpu`` pool when one exists (the device is picked by the training code); a killed
run resumes from its last checkpoint when started again with the same ``run_name``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from newspulse.settings import get_settings
from tasks.train import export_corpus, pretrain_backbone
from tasks.warehouse import migrate_warehouse


@flow(name="pretrain", flow_run_name="pretrain-{run_name}", log_prints=True)
def pretrain_flow(
    run_name: str = "pretrain",
    preset: str = "small",
    vocab_size: int = 8000,
    sources: list[str] | None = None,
    max_docs: int | None = None,
    max_steps: int = 2000,
    batch_size: int = 16,
    block_size: int = 128,
    lr: float = 6e-4,
    time_budget_s: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Pretrain a backbone on the warehouse corpus; returns the checkpoint dir and val perplexity."""
    settings = get_settings()
    migrate_warehouse(settings)
    run_dir = settings.runs_dir / run_name
    corpus = export_corpus(settings, str(run_dir), sources, max_docs)
    config = {"max_steps": max_steps, "batch_size": batch_size, "block_size": block_size, "lr": lr,
              "time_budget_s": time_budget_s, "seed": seed}
    return pretrain_backbone(corpus, str(run_dir), preset, vocab_size, config)
