"""Domain-adaptive pretraining: continued causal-LM training of the backbone on our corpus.

The seed's pretrain step, on a real model: ``base`` is the pretrained catalogue backbone
(SmolLM2-135M) or any checkpoint, trained further on the warehouse's articles **minus every
labelled text** (any of them may be a validation or test text of some labelled set); a preset
(``small``) is trained from scratch with its own tokenizer instead. ``incremental`` runs (the
weekly deployment) train on what arrived since the previous run of the same ``run_name`` for
``steps_per_run`` more steps, and report held-out perplexity before and after. Runs on the ``gpu``
pool when one exists; a killed run resumes from its last checkpoint with the same ``run_name``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from models.backbone import PRESETS
from core.settings import get_settings
from tasks.train import commit_corpus_watermark, export_corpus, pretrain_backbone, resolve_base, train_settings
from tasks.warehouse import migrate_warehouse


@flow(name="pretrain", flow_run_name="pretrain-{run_name}", log_prints=True)
def pretrain_flow(
    run_name: str = "pretrain",
    preset: str | None = None,
    base: str = "small",
    incremental: bool = False,
    steps_per_run: int | None = None,
    vocab_size: int = 8000,
    sources: list[str] | None = None,
    max_docs: int | None = None,
    max_steps: int = 2000,
    batch_size: int = 16,
    block_size: int = 128,
    lr: float | None = None,
    time_budget_s: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Pretrain a backbone on the warehouse corpus; returns the checkpoint dir and val perplexity.

    ``preset`` is the older name of ``base`` for presets and wins when given. ``lr`` defaults to
    6e-4 from scratch and 5e-5 for a pretrained backbone (continued training must not erase it).
    """
    settings = get_settings()
    migrate_warehouse(settings)
    base = preset or base
    resolved = resolve_base(settings, base)
    run_dir = settings.runs_dir / run_name
    corpus = export_corpus(settings, str(run_dir), sources, max_docs, incremental=incremental)
    config = {"max_steps": max_steps, "batch_size": batch_size, "block_size": block_size,
              "lr": lr if lr is not None else (6e-4 if resolved in PRESETS else 5e-5),
              "time_budget_s": time_budget_s, "seed": seed,
              # bf16 autocast where this machine's probe measured it faster (always on CUDA)
              "precision": train_settings(settings, resolved, "full")["precision"]}
    result = pretrain_backbone(corpus, str(run_dir), resolved, vocab_size, config, steps_per_run)
    commit_corpus_watermark(str(run_dir), corpus)  # only after training: a failed run sees the same texts
    return {**result, "preset": base, "corpus": {k: corpus[k] for k in ("written", "excluded", "since")}}
