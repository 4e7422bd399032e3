"""Multi-head fine-tuning of a :class:`~models.multihead.MultiHeadGPT` (sentiment + topic).

One loop, written against ``accelerate``: on a laptop it is a plain single-process CPU loop; on
a GPU it trains in bf16 autocast; under a launcher it becomes data-parallel with no change::

    accelerate launch --num_processes 4 -m your_module ...   # or
    torchrun --nproc_per_node 4 -m your_module ...

(``accelerator.prepare`` shards the loader, wraps the model in DDP and syncs gradients; every
process evaluates the full validation set so all of them take the same early-stopping decision,
and only the main process writes files.)

Recipe: tokenize once up front, shuffle with a seeded generator, pad each batch on the right to
its own longest row; AdamW (no weight decay on biases / LayerNorm), linear warmup then linear
decay, gradient clipping. After every epoch the heads are scored on ``val`` (macro-F1 per head,
score = mean over the heads labelled in ``val``); the best epoch is saved with
``MultiHeadGPT.save`` (safetensors), training stops after ``patience`` epochs without improvement
or once ``time_budget_s`` is spent, and the best weights are loaded back into ``model``.

Recipes (``config.recipe``, recorded in ``heads.json`` and on the card):

* ``full``: every weight trains (the GPU default).
* ``lora``: the backbone is wrapped with peft LoRA on its architecture's projections
  (:data:`models.backbone.LORA_TARGETS`: ``c_attn``/``c_proj``/``c_fc`` on GPT-2, the q/k/v/o and
  MLP projections on Llama, peft's ``all-linear`` elsewhere) while the heads train fully. On disk
  the base LM stays as it was and the adapters sit beside it (``adapter/``, peft's safetensors),
  so ``generate`` uses the untouched pretrained LM; loading for scoring merges them in memory
  (:meth:`MultiHeadGPT.load`), and ``model`` at the end is a plain, merged MultiHeadGPT.
* ``frozen``: :mod:`models.frozen` (no loop here: pooled features once, then the heads).

Both trained recipes can add GPT-1's auxiliary LM loss (``lm_weight``), which keeps the LM head
usable for ``generate`` after fine-tuning. ``precision`` is ``bf16`` (autocast, on CUDA and on
CPUs whose probe says it is faster) or ``fp32``.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import f1_score

from models.multihead import ADAPTER_DIR, IGNORE, MultiHeadGPT, load_lm_with_adapter
from models.predict import encode_texts, pad_batch, predict_ids, text_budget

HEADS = ("sentiment", "topic", "intent")
RECIPES = ("frozen", "lora", "full")


@dataclass
class TrainConfig:
    """Fine-tuning hyper-parameters (``head_lr`` defaults to ``lr``)."""

    epochs: int = 6
    batch_size: int = 32
    lr: float = 3e-4
    head_lr: float | None = None
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    patience: int = 2
    seed: int = 0
    max_length: int = 128
    lora: bool = False  # the same as recipe="lora" (kept for existing callers)
    lora_r: int = 8
    lora_alpha: int = 16
    time_budget_s: float | None = None
    recipe: str = "full"  # frozen | lora | full
    lm_weight: float = 0.0  # auxiliary next-token loss weight (GPT-1 used 0.5)
    precision: str = "auto"  # auto | fp32 | bf16; "auto" is bf16 on CUDA, fp32 on CPU here
    pool_layers: list[int] | None = None  # hidden-state layers the heads read; None = recipe default
    pooling: str | None = None  # mean | last | mean+last; None = recipe default (frozen: mean+last)
    prompt: str | None = None  # template around each text; None = PROMPT for pretrained backbones, "" = none
    headline_view: bool = True  # also train on each article's title alone (models.experiment.with_headline_view)

    def __post_init__(self) -> None:
        if self.lora:
            self.recipe = "lora"
        self.lora = self.recipe == "lora"
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, not {self.recipe!r}")
        if self.pooling not in (None, "mean", "last", "mean+last"):
            raise ValueError(f"pooling must be mean, last or mean+last, not {self.pooling!r}")


@dataclass
class TrainResult:
    """What :func:`finetune` did: the best epoch, its score, per-epoch history and throughput."""

    best_epoch: int
    best_score: float
    history: list[dict]
    seconds: float
    tokens_per_s: float
    device: str
    out_dir: str
    processes: int = 1  # data-parallel processes (GPUs) that trained
    trainable_parameters: int = 0  # what the optimizer updated (LoRA: adapters + heads)


def distributed_state():
    """accelerate's process state, on CPU when CUDA is absent (or ACCELERATE_USE_CPU is set).

    Under torchrun that is NCCL DDP over the GPUs, or gloo DDP over CPU processes; alone, one
    process. Create it before anything else asks accelerate (the state is a singleton).
    """
    import os

    from accelerate import PartialState

    forced = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return PartialState(cpu=forced or not torch.cuda.is_available())


def encode_labels(values: pd.Series | list, labels: list[str]) -> np.ndarray:
    """Label names -> class ids (int64); missing (None/NA) or unknown names -> -100 (ignored)."""
    index = {name: i for i, name in enumerate(labels)}
    return np.array([index.get(v, IGNORE) if isinstance(v, str) else IGNORE for v in list(values)], dtype=np.int64)


def _encode_frame(model: MultiHeadGPT, tokenizer, df: pd.DataFrame, max_length: int) -> dict:
    """Tokenize a frame once: ids (list of lists), labels per head (N,) and real-token counts (N,)."""
    ids, _, _ = encode_texts(tokenizer, df["text"].tolist(), max_length, model.heads.prompt)
    out = {"ids": ids}
    for head in HEADS:
        labels = getattr(model.heads, f"{head}_labels")
        col = df[head] if head in df.columns else [None] * len(df)
        out[head] = encode_labels(col, labels) if labels else np.full(len(df), IGNORE, dtype=np.int64)
    return out


class _Collate:
    """Right-pad a list of ``(ids, sentiment, topic, intent)`` rows to the batch max (picklable for workers)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[tuple[list[int], int, int, int]]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = pad_batch([r[0] for r in rows], self.pad_id)  # (B, T) each
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        for j, head in enumerate(HEADS, start=1):  # (B,) class ids per head, -100 where unlabelled
            batch[head] = torch.tensor([r[j] for r in rows], dtype=torch.long)
        return batch


def evaluate(model: MultiHeadGPT, encoded: dict, pad_id: int, batch_size: int, device) -> dict[str, float | None]:
    """Macro-F1 per head on the rows labelled for it (None when no row is) and their mean ``score``."""
    out = predict_ids(model, encoded["ids"], pad_id, batch_size=batch_size, device=device)
    result: dict[str, float | None] = {}
    for head in HEADS:
        probs, y = getattr(out, head), encoded.get(head)
        mask = y != IGNORE if y is not None else None
        result[head] = None if probs is None or mask is None or not mask.any() else float(
            f1_score(y[mask], probs[mask].argmax(axis=1), average="macro"))
    scores = [v for v in result.values() if v is not None]
    result["score"] = float(np.mean(scores)) if scores else None
    return result


def _param_groups(model: MultiHeadGPT, config: TrainConfig) -> list[dict]:
    """AdamW groups: backbone/heads x decay/no-decay; matrices decay, biases and LayerNorm don't."""
    head_lr = config.head_lr if config.head_lr is not None else config.lr
    groups = {(h, d): [] for h in (False, True) for d in (False, True)}
    for name, p in model.named_parameters():
        if p.requires_grad:
            is_head = name.startswith(tuple(f"{h}." for h in HEADS))
            groups[(is_head, p.dim() >= 2)].append(p)  # 1-D = bias / LayerNorm gain -> no decay
    return [{"params": ps, "lr": head_lr if h else config.lr, "weight_decay": config.weight_decay if d else 0.0}
            for (h, d), ps in groups.items() if ps]


def _wrap_lora(model: MultiHeadGPT, config: TrainConfig) -> None:
    """Replace ``model.lm`` by a peft LoRA wrapper (base weights frozen, heads trainable)."""
    from peft import LoraConfig, get_peft_model

    from models.backbone import lora_targets

    targets, fan_in_fan_out = lora_targets(model.config)
    lcfg = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.05,
                      target_modules=targets, fan_in_fan_out=fan_in_fan_out, bias="none")
    with warnings.catch_warnings():  # peft 0.21 calls transformers' deprecated is_gradient_checkpointing
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
        model.lm = get_peft_model(model.lm, lcfg)


def _match_mixed_precision(mode: str) -> None:
    """Let this process train in another precision than its previous fine-tune did.

    accelerate keeps the mixed-precision mode in a process-wide singleton and refuses a second
    Accelerator with another mode; a long-lived worker (or a test session) fine-tunes many models.
    Only that part is reset: the process group (``PartialState``) of a torchrun job is kept.
    """
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and str(state.get("_mixed_precision", mode)) != mode:
        AcceleratorState._reset_state(reset_partial_state=False)


def _save_best(model: MultiHeadGPT, tokenizer, out_dir: Path) -> None:
    """Write the best epoch: the whole model, or (LoRA) only the adapters and the heads.

    Under LoRA the base LM never changes, so it was written once before training; an epoch adds
    ``adapter/`` (peft ``save_pretrained``: safetensors) next to it.
    """
    if hasattr(model.lm, "peft_config"):
        model.lm.save_pretrained(str(Path(out_dir) / ADAPTER_DIR))
        model.save_heads(out_dir, tokenizer)
    else:
        model.save(out_dir, tokenizer)


def finetune(
    model: MultiHeadGPT,
    tokenizer,
    train: pd.DataFrame,
    val: pd.DataFrame,
    config: TrainConfig,
    out_dir: Path,
    *,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune every head on ``train``, early-stop on ``val``; best epoch saved to ``out_dir``.

    ``train``/``val`` have columns ``text``, ``sentiment`` and ``topic`` (label names, None/NA
    when unlabelled). Train rows with no label for any head are dropped. When ``val`` has no
    labelled row the score is minus the training loss. On return ``model`` holds the best
    epoch's weights (plain, LoRA merged) in eval mode.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed
    from models.progress import progress_bar as tqdm  # a few lines per stage off a terminal
    from transformers import get_linear_schedule_with_warmup

    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    set_seed(config.seed)  # python, numpy, torch (+ CUDA) RNGs
    on_cpu = distributed_state().device.type == "cpu"
    precision = config.precision if config.precision != "auto" else ("fp32" if on_cpu else "bf16")
    _match_mixed_precision("bf16" if precision == "bf16" else "no")
    accelerator = Accelerator(
        cpu=on_cpu,
        mixed_precision="bf16" if precision == "bf16" else "no",  # CPU: only where the probe says so
        # A batch may carry no label for one head: its parameters then get no gradient under DDP.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    pad_id = tokenizer.pad_token_id
    max_length = text_budget(model, tokenizer, config.max_length)
    model.heads.max_length, model.heads.recipe = max_length, config.recipe
    tr = _encode_frame(model, tokenizer, train, max_length)
    va = _encode_frame(model, tokenizer, val, max_length)
    keep = np.flatnonzero(np.any([tr[h] != IGNORE for h in HEADS], axis=0))
    if keep.size == 0:
        raise ValueError("no labelled training rows for the model's heads")
    rows = [(tr["ids"][i], *(int(tr[h][i]) for h in HEADS)) for i in keep]

    if config.recipe == "lora":
        model.save(out_dir, tokenizer)  # the base LM, once: LoRA leaves its weights as they are
        _wrap_lora(model, config)
    model.train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW(_param_groups(model, config), betas=(0.9, 0.999), eps=1e-8)
    loader = torch.utils.data.DataLoader(
        rows, batch_size=config.batch_size, shuffle=True, collate_fn=_Collate(pad_id),
        generator=torch.Generator().manual_seed(config.seed),
    )
    # Steps counted on the *unsharded* loader: the prepared scheduler steps once per process.
    total_steps = max(1, config.epochs * len(loader))
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    raw = accelerator.unwrap_model(model)

    history: list[dict] = []
    best_epoch, best_score, bad_epochs = 0, -math.inf, 0
    train_tokens, train_seconds = torch.zeros((), dtype=torch.long, device=accelerator.device), 0.0
    out_of_time = False
    for epoch in range(1, config.epochs + 1):
        t_epoch = time.perf_counter()
        model.train()
        loss_sum, n_batches = torch.zeros((), device=accelerator.device), 0  # on device: no sync per step
        bar = tqdm(loader, desc=f"epoch {epoch}/{config.epochs}", leave=False,
                   disable=not progress or not accelerator.is_local_main_process)
        for batch in bar:
            out = model(**batch, lm_weight=config.lm_weight)  # sum of the masked head losses (+ LM)
            accelerator.backward(out.loss)
            if config.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum, n_batches = loss_sum + out.loss.detach().float(), n_batches + 1
            train_tokens += batch["attention_mask"].sum()  # real tokens only, no padding
            if progress and n_batches % 20 == 0:
                bar.set_postfix(loss=f"{float(loss_sum) / n_batches:.4f}")
            over = config.time_budget_s is not None and time.perf_counter() - t_start > config.time_budget_s
            if accelerator.num_processes > 1:  # every process must leave the loop together (DDP)
                over = bool(accelerator.reduce(torch.tensor([float(over)], device=accelerator.device), "sum") > 0)
            if over:
                out_of_time = True
                break
        train_seconds += time.perf_counter() - t_epoch
        train_loss = float(loss_sum) / max(n_batches, 1)  # this process's batches

        metrics = evaluate(raw, va, pad_id, config.batch_size, accelerator.device)
        score = metrics["score"] if metrics["score"] is not None else -train_loss
        history.append({"epoch": epoch, "train_loss": train_loss,
                        **{f"val_{h}_macro_f1": metrics[h] for h in HEADS if getattr(raw, h) is not None},
                        "val_score": score, "seconds": time.perf_counter() - t_epoch})
        if score > best_score:
            best_epoch, best_score, bad_epochs = epoch, score, 0
            if accelerator.is_main_process:
                _save_best(raw, tokenizer, out_dir)
        else:
            bad_epochs += 1
        accelerator.wait_for_everyone()
        if out_of_time or (bad_epochs > 0 and bad_epochs >= config.patience):
            break

    # Back to a plain model holding the best epoch's weights (exactly what was saved).
    from safetensors.torch import load_file

    model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    # safetensors names devices "cpu" or "cuda:N"; gloo DDP on CPU reports "cpu:0".
    device = "cpu" if accelerator.device.type == "cpu" else str(accelerator.device)
    model.lm = load_lm_with_adapter(out_dir).to(device)
    for p in model.parameters():  # peft froze the base weights; a plain model trains fully
        p.requires_grad_(True)
    model.load_state_dict(load_file(str(out_dir / "heads.safetensors"), device=device), strict=False)
    model.eval()
    if accelerator.num_processes > 1:  # throughput of the whole job, not of one process
        train_tokens = accelerator.reduce(train_tokens, "sum")
    accelerator.free_memory()
    return TrainResult(best_epoch=best_epoch, best_score=float(best_score), history=history,
                       seconds=time.perf_counter() - t_start,
                       tokens_per_s=int(train_tokens) / max(train_seconds, 1e-9),
                       device=str(accelerator.device), out_dir=str(out_dir),
                       processes=accelerator.num_processes, trainable_parameters=trainable)
