"""Domain-adaptive causal-LM pretraining of a ``GPT2LMHeadModel`` on our corpus, resumable.

nanoGPT-style: every text is tokenized once into one long stream with ``<|endoftext|>`` after
each document; a training batch is ``batch_size`` random contiguous windows of ``block_size + 1``
tokens (inputs = first ``block_size``, targets = the same shifted by one). AdamW (no decay on
biases / LayerNorm), linear warmup then cosine decay to 10% of ``lr``, gradient clipping, bf16
autocast on CUDA and, on a CPU, when ``config.precision`` says so (the per-machine probe of
:mod:`models.precision`: some CPUs run bf16 3-4x faster than fp32, others ~80x slower). Validation loss (and
perplexity = exp(loss)) is measured on fixed, non-overlapping val windows at the start of a
fresh run, every ``eval_every`` steps and at the end.

Checkpoint layout (``ckpt_dir``)::

    ckpt-000400/model/      save_pretrained (config.json + model.safetensors) + tokenizer files
    ckpt-000400/state.pt    optimizer, scheduler, step, RNG states, history (torch.save)
    model -> ckpt-000400/model        symlink: the commit point, a normal GPT-2 model directory
    state.pt -> ckpt-000400/state.pt  symlink, for convenience

A checkpoint is written into ``.tmp-ckpt-*`` and renamed into place, then the ``model`` symlink
is swapped atomically with ``os.replace``; only then is the previous checkpoint deleted. A kill at
any moment leaves ``model`` pointing at a complete checkpoint; leftovers are ignored and cleaned
on the next start. ``state.pt`` holds only tensors and plain Python values, so it loads with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from models.backbone import context_length
from models.precision import autocast

STATE, MODEL, PREFIX, TMP_PREFIX = "state.pt", "model", "ckpt-", ".tmp-ckpt-"


@dataclass
class PretrainConfig:
    """Pretraining hyper-parameters; ``max_steps`` counts optimizer steps across resumes."""

    max_steps: int = 2000
    batch_size: int = 16
    block_size: int = 128
    lr: float = 6e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 0
    eval_every: int = 200
    eval_batches: int = 20
    checkpoint_every: int = 200
    time_budget_s: float | None = None
    precision: str | None = None  # "bf16" | "fp32"; None: bf16 on CUDA, fp32 on CPU


@dataclass
class PretrainResult:
    """Outcome of :func:`pretrain` (throughput figures cover this call only)."""

    steps: int
    resumed_from: int
    train_loss: float
    val_loss: float
    val_perplexity: float
    tokens_seen: int
    tokens_per_s: float
    seconds: float
    history: list[dict] = field(default_factory=list)
    # Perplexity on this call's val windows before its first step: the pretrained model as shipped
    # on a fresh run, the previous checkpoint on a resumed one (same windows as val_perplexity).
    val_perplexity_before: float = math.nan
    # Why training stopped: "max_steps" (done) or "time_budget" (steps < max_steps: the budget ran out first).
    stopped_by: str = "max_steps"
    max_steps: int = 0


def pack_tokens(tokenizer, texts: Iterable[str], chunk: int = 1000) -> np.ndarray:
    """Tokenize ``texts`` into one uint32 stream with ``eos`` after every (non-empty) text."""
    eos, parts = tokenizer.eos_token_id, []
    stream = (str(t) for t in texts if t)  # lazily, so a generator over a big corpus is fine
    while batch := list(islice(stream, chunk)):
        ids = tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]
        parts += [np.asarray([*row, eos], dtype=np.uint32) for row in ids if row]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)


def _lr_lambda(config: PretrainConfig):
    """step -> lr multiplier: linear warmup to 1, cosine decay to 0.1 at ``max_steps``."""
    def fn(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / (config.warmup_steps + 1)
        progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))
    return fn


def _rng_state(sampler: torch.Generator) -> dict:
    """All RNG states as tensors / lists (``weights_only``-safe: no numpy arrays, no tuples of objects)."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(), "sampler": sampler.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [name, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss],
            "python": [version, list(internal), gauss_next]}


def _set_rng_state(state: dict, sampler: torch.Generator) -> None:
    """Inverse of :func:`_rng_state`."""
    torch.set_rng_state(state["torch"])
    sampler.set_state(state["sampler"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The committed checkpoint (``ckpt-NNNNNN`` dir) in ``ckpt_dir``, else the newest complete one."""
    def complete(d: Path) -> bool:
        weights = any((d / MODEL).glob("*.safetensors"))
        return weights and (d / STATE).is_file() and (d / MODEL / "config.json").is_file()

    link = Path(ckpt_dir) / MODEL
    if link.is_symlink() and complete(link.resolve().parent):
        return link.resolve().parent
    done = sorted(d for d in Path(ckpt_dir).glob(f"{PREFIX}*") if d.is_dir() and complete(d))
    return done[-1] if done else None


def checkpoint_step(ckpt: Path) -> int:
    """The optimizer step of a ``ckpt-NNNNNN`` directory, from its name (no need to load ``state.pt``,
    which holds the optimizer's moments: ~1 GB for a 135M model)."""
    return int(Path(ckpt).name[len(PREFIX):])


def _swap_link(link: Path, target: str) -> None:
    """Point symlink ``link`` at ``target`` atomically (new link + ``os.replace``)."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.lnk")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _save_checkpoint(ckpt_dir: Path, lm_model, tokenizer, state: dict) -> Path:
    """Write a checkpoint atomically (see the module docstring); returns its directory."""
    name = f"{PREFIX}{state['step']:06d}"
    final, tmp = ckpt_dir / name, ckpt_dir / f"{TMP_PREFIX}{state['step']:06d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    lm_model.save_pretrained(str(tmp / MODEL))  # safetensors; the tied lm_head is not duplicated
    tokenizer.save_pretrained(str(tmp / MODEL))
    torch.save(state, tmp / STATE)
    if final.exists():  # a stale, never-committed dir of the same step (e.g. a killed earlier run)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _swap_link(ckpt_dir / MODEL, f"{name}/{MODEL}")  # <- the commit
    _swap_link(ckpt_dir / STATE, f"{name}/{STATE}")
    for old in ckpt_dir.glob(f"{PREFIX}*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _load_weights(lm_model, model_dir: Path) -> None:
    """Load safetensors weights (one file or shards) into ``lm_model``; the tied lm_head may be absent."""
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for f in sorted(model_dir.glob("model*.safetensors")):
        state.update(load_file(str(f)))
    missing, unexpected = lm_model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError(f"checkpoint mismatch: missing {missing}, unexpected {unexpected}")
    lm_model.tie_weights()


def _blocks(stream: torch.Tensor, block: int, n: int | None, gen: torch.Generator | None) -> torch.Tensor:
    """(n, block + 1) windows: random starts (training) or consecutive non-overlapping ones (val)."""
    if gen is not None:
        starts = torch.randint(0, len(stream) - block, (n,), generator=gen)
    else:
        starts = torch.arange(0, len(stream) - block, block)[:n]
    return torch.stack([stream[s : s + block + 1] for s in starts.tolist()])


@torch.no_grad()
def _evaluate(lm_model, val_blocks: torch.Tensor, batch_size: int, device: torch.device, precision: str) -> float:
    """Mean next-token cross-entropy over the fixed val windows."""
    was_training = lm_model.training
    lm_model.eval()
    total, count = 0.0, 0
    for i in range(0, len(val_blocks), batch_size):
        xy = val_blocks[i : i + batch_size].to(device)  # (B, T + 1)
        with autocast(device, precision):
            logits = lm_model(input_ids=xy[:, :-1]).logits  # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), xy[:, 1:].flatten(), reduction="sum")
        total, count = total + float(loss), count + xy[:, 1:].numel()
    lm_model.train(was_training)
    return total / max(count, 1)


def pretrain(
    lm_model,
    tokenizer,
    train_texts: Sequence[str],
    val_texts: Sequence[str],
    config: PretrainConfig,
    ckpt_dir: Path,
    *,
    progress: bool = True,
) -> PretrainResult:
    """Train ``lm_model`` (a GPT2LMHeadModel) as a causal LM; resumes from ``ckpt_dir`` if it holds a checkpoint.

    The learning-rate schedule follows the current ``config.max_steps`` (raising it on resume
    extends the cosine). Stops at ``max_steps`` or once ``time_budget_s`` is spent, then writes
    a final checkpoint and evaluates. Checkpoints record the step, so a resume continues the
    same step count; history rows carry over too.
    """
    from models.progress import progress_bar as tqdm  # a few lines per stage off a terminal
    from transformers import set_seed

    t0 = time.perf_counter()
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for junk in [*ckpt_dir.glob(f"{TMP_PREFIX}*"), *ckpt_dir.glob(".*.lnk")]:  # leftovers of a killed run
        if junk.is_symlink() or not junk.is_dir():
            junk.unlink()
        else:
            shutil.rmtree(junk, ignore_errors=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = config.precision or ("bf16" if device.type == "cuda" else "fp32")

    train = torch.from_numpy(pack_tokens(tokenizer, train_texts).astype(np.int64))
    val = torch.from_numpy(pack_tokens(tokenizer, val_texts).astype(np.int64))
    # The model has context_length positions; tiny corpora get shorter windows.
    block = min(config.block_size, context_length(lm_model.config), len(train) - 1)
    if block < 1:
        raise ValueError("training texts give fewer than 2 tokens")
    val_block = min(block, len(val) - 1)
    val_blocks = _blocks(val, val_block, config.eval_batches * config.batch_size, None) if val_block >= 1 else None

    set_seed(config.seed)  # python, numpy, torch (+ CUDA): weight init elsewhere, dropout here
    sampler = torch.Generator().manual_seed(config.seed)  # draws the training windows
    lm_model.to(device).train()
    params = [p for p in lm_model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]  # biases, LayerNorm
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95))
    lr_fn = _lr_lambda(config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_fn)

    step, tokens_seen, history, last_train_loss = 0, 0, [], float("nan")
    found = latest_checkpoint(ckpt_dir)
    if found is not None:
        _load_weights(lm_model, found / MODEL)
        state = torch.load(found / STATE, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, tokens_seen, history = state["step"], state["tokens_seen"], state["history"]
        last_train_loss = state["train_loss"]
        _set_rng_state(state["rng"], sampler)
        for g, base in zip(optimizer.param_groups, scheduler.base_lrs):  # schedule of *this* config
            g["lr"] = base * lr_fn(step)
    resumed_from = step

    def val_loss() -> float:  # NaN when the val texts are too short for one window
        return _evaluate(lm_model, val_blocks, config.batch_size, device, precision) if val_blocks is not None else math.nan

    def record(train_loss: float | None, v: float) -> None:
        history.append({"step": step, "train_loss": train_loss, "val_loss": v, "val_perplexity": math.exp(min(v, 50)),
                        "lr": optimizer.param_groups[0]["lr"], "tokens_seen": tokens_seen,
                        "seconds": time.perf_counter() - t0})

    def checkpoint() -> None:
        state = {"step": step, "tokens_seen": tokens_seen, "history": history, "train_loss": last_train_loss,
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state(sampler)}
        _save_checkpoint(ckpt_dir, lm_model, tokenizer, state)

    start_loss = val_loss()  # the baseline this call improves on (this call's held-out texts)
    if step == 0:
        record(None, start_loss)
    t_train, tokens_now, loss_sum, n_loss = time.perf_counter(), 0, torch.zeros((), device=device), 0
    bar = tqdm(total=config.max_steps, initial=step, desc="pretrain", disable=not progress)
    while step < config.max_steps:
        xy = _blocks(train, block, config.batch_size, sampler).to(device)  # (B, T + 1)
        with autocast(device, precision):
            logits = lm_model(input_ids=xy[:, :-1]).logits  # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), xy[:, 1:].flatten())  # next-token targets
        loss.backward()
        if config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(lm_model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens_seen, tokens_now = tokens_seen + xy[:, :-1].numel(), tokens_now + xy[:, :-1].numel()
        loss_sum, n_loss = loss_sum + loss.detach(), n_loss + 1  # on device: no sync per step
        bar.update(1)
        out_of_time = config.time_budget_s is not None and time.perf_counter() - t0 > config.time_budget_s
        last = step >= config.max_steps or out_of_time
        if step % config.eval_every == 0 or last:
            last_train_loss, loss_sum, n_loss = float(loss_sum) / n_loss, torch.zeros((), device=device), 0
            bar.set_postfix(loss=f"{last_train_loss:.3f}")
            record(last_train_loss, val_loss())
        if step % config.checkpoint_every == 0 or last:
            checkpoint()
        if out_of_time:
            break
    stopped_by = "time_budget" if step < config.max_steps else "max_steps"
    if stopped_by == "time_budget":
        bar.set_postfix(stopped=f"time budget of {config.time_budget_s:g} s spent before step {config.max_steps}")
    bar.close()
    train_s = time.perf_counter() - t_train
    v = history[-1]["val_loss"] if step > resumed_from else val_loss()  # nothing ran: measure now
    if found is None and step == 0:  # max_steps == 0 on a fresh run: still leave a checkpoint
        checkpoint()
    return PretrainResult(steps=step, resumed_from=resumed_from, train_loss=last_train_loss, val_loss=v,
                          val_perplexity=math.exp(min(v, 50)), tokens_seen=tokens_seen,
                          tokens_per_s=tokens_now / max(train_s, 1e-9), seconds=time.perf_counter() - t0,
                          history=history, val_perplexity_before=math.exp(min(start_loss, 50)),
                          stopped_by=stopped_by, max_steps=config.max_steps)
