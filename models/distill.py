"""Knowledge distillation: a big teacher's soft probabilities train a small GPT student for CPU scoring.

The teacher (a registered version, normally the SmolLM2 champion) labels texts with its GPT heads'
probabilities (:func:`teacher_probs`, batched :func:`models.predict.predict`; the TF-IDF mix a
version may serve is not distilled: the student gets its own baseline and ensemble). The student
is either a preset GPT (``small``) with a tokenizer trained on the labelled train texts plus the
unlabelled pool, or ``teacher:N``: the teacher's own first ``N`` blocks, embeddings and tokenizer
(:func:`models.backbone.truncate_backbone`; its token embeddings stay frozen, so only the blocks
and heads train), which starts from what pretraining learned instead of from random weights. It
trains on (Hinton et al. 2015)::

    loss = alpha * T^2 * sum_heads KL(teacher_T || student_T) + (1 - alpha) * sum_heads CE(student, gold)

where ``p_T = softmax(logits / T)`` (the teacher's is recovered from its probabilities as
``softmax(log p / T)``), rows without a gold label drop out of CE (-100) and rows without teacher
targets drop out of KL. ``T^2`` keeps the soft gradients' size independent of ``T``. Everything
else is :func:`models.experiment.run_experiment` (same splits, TF-IDF baseline, ensemble, served
choice, golden set) with :func:`distill_fit` as its training loop; the teacher is scored as it is
served on the same validation/test rows and the golden set, so the card shows both side by side.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from models.backbone import PRESETS, context_length, truncate_backbone
from models.multihead import IGNORE, MultiHeadGPT
from models.predict import encode_texts, pad_batch, predict, text_budget
from models.train import TrainConfig, TrainResult, encode_labels, evaluate

SOFT = "teacher_{}"  # column holding a row's teacher probabilities for a head (list in teacher label order)

HEADS = ("sentiment", "topic")  # the news heads a student learns (intent models are not distilled)


class DistillInputError(ValueError):
    """Input a distillation cannot use (unknown teacher or student, empty pool): one clear line."""


TEACHER_PREFIX = "teacher:"  # student "teacher:N": the teacher's first N blocks, with its tokenizer


def check_student(student_base: str) -> None:
    """The student is one of our presets (own tokenizer trained on the corpus) or ``teacher:N``."""
    if student_base.startswith(TEACHER_PREFIX):
        n = student_base[len(TEACHER_PREFIX):]
        if not n.isdigit() or int(n) < 1:
            raise DistillInputError(f"student {student_base!r}: write teacher:N with N the number of the teacher's "
                                    "layers to keep, e.g. teacher:6")
        return
    if student_base not in PRESETS:
        raise DistillInputError(f"student {student_base!r} is neither a preset ({', '.join(PRESETS)}) nor "
                                "teacher:N (the teacher's first N layers)")


def student_backbone(student_base: str, teacher_dir: Path, out_dir: Path,
                     loaded: tuple[MultiHeadGPT, Any] | None = None) -> str:
    """What :func:`models.experiment.run_experiment` takes as ``base`` for ``student_base``: the
    preset name, or for ``teacher:N`` a model directory written here with the teacher's first N
    blocks and its tokenizer. ``loaded``: the teacher ``(model, tokenizer)`` the caller already
    holds, to save a second load; its backbone is cut in place (only its heads stay usable)."""
    check_student(student_base)
    if not student_base.startswith(TEACHER_PREFIX):
        return student_base
    teacher, tok = loaded or MultiHeadGPT.load(teacher_dir)
    try:
        lm = truncate_backbone(teacher.causal_lm(), int(student_base[len(TEACHER_PREFIX):]))
    except ValueError as exc:
        raise DistillInputError(f"student {student_base!r}: {exc}") from exc
    out = Path(out_dir) / "student-backbone"
    lm.save_pretrained(out)  # safetensors
    tok.save_pretrained(out)
    return str(out)


def teacher_probs(model: MultiHeadGPT, tokenizer, texts: list[str], batch_size: int = 32,
                  precision: str | None = None) -> dict[str, np.ndarray]:
    """The teacher's GPT-head probabilities per head: ``{"sentiment": (N, 3), "topic": (N, K)}``."""
    preds = predict(model, tokenizer, texts, batch_size=batch_size, precision=precision)
    out = {"sentiment": preds.sentiment_probs}
    if preds.topic_probs is not None:
        out["topic"] = preds.topic_probs
    return out


def write_shards(frames: list[pd.DataFrame], out_dir: Path, shard_size: int) -> list[str]:
    """``article_id, text`` of every frame (duplicates once) as ``input-NNNNN.parquet`` shards to label."""
    rows = pd.concat([f[["article_id", "text"]] for f in frames], ignore_index=True).drop_duplicates("article_id")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, start in enumerate(range(0, len(rows), max(1, shard_size))):
        paths.append(str(out_dir / f"input-{i:05d}.parquet"))
        rows.iloc[start : start + shard_size].to_parquet(paths[-1], index=False)
    return paths


def label_shard(model: MultiHeadGPT, tokenizer, in_path: Path, out_path: Path, batch_size: int = 32,
                precision: str | None = None) -> int:
    """Write ``in_path``'s rows with ``teacher_<head>`` probability lists to ``out_path``; returns rows."""
    rows = pd.read_parquet(in_path)
    for head, probs in teacher_probs(model, tokenizer, rows.text.tolist(), batch_size, precision).items():
        rows[SOFT.format(head)] = list(probs)  # one (K,) array per row
    tmp = Path(out_path).with_name(Path(out_path).name + ".tmp")
    rows.to_parquet(tmp, index=False)
    tmp.replace(out_path)
    return len(rows)


def soften(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log of ``softmax(log p / T)``, i.e. ``log softmax(z / T)`` for the logits z behind ``probs`` (B, K)."""
    return F.log_softmax(torch.log(probs.float().clamp_min(1e-12)) / temperature, dim=-1)


def kd_loss(student_logits: torch.Tensor, teacher: torch.Tensor, temperature: float,
            valid: torch.Tensor | None = None) -> torch.Tensor:
    """``T^2 * mean_rows KL(teacher_T || student_T)``: logits (B, K), teacher probabilities (B, K), valid (B,)."""
    log_s = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (B, K)
    log_t = soften(teacher, temperature)  # (B, K)
    kl = (log_t.exp() * (log_t - log_s)).sum(dim=-1)  # (B,)
    if valid is not None:
        if not valid.any():
            return student_logits.sum() * 0.0  # keeps the graph, adds nothing
        kl = kl[valid]
    return temperature ** 2 * kl.mean()


def _soft_matrix(col: pd.Series, teacher_labels: list[str], labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Teacher probabilities of one head in the student's label order: ``(probs (N, K), valid (N,))``."""
    n, k = len(col), len(labels)
    probs, valid = np.full((n, k), 1.0 / max(k, 1), dtype=np.float32), np.zeros(n, dtype=bool)
    if not k or sorted(teacher_labels) != sorted(labels):
        return probs, valid  # the teacher's classes differ: this head learns from gold labels only
    order = [teacher_labels.index(name) for name in labels]
    for i, row in enumerate(col.tolist()):
        if row is not None and len(row) == len(teacher_labels):
            probs[i], valid[i] = np.asarray(row, dtype=np.float32)[order], True
    return probs, valid


def distill_fit(model: MultiHeadGPT, tokenizer, train: pd.DataFrame, val: pd.DataFrame, config: TrainConfig,
                out_dir: Path, *, progress: bool = False, teacher_labels: dict[str, list[str]],
                temperature: float = 2.0, alpha: float = 0.5, stats: dict[str, Any] | None = None,
                freeze_embeddings: bool = False) -> TrainResult:
    """Train every head on teacher soft targets (``teacher_<head>`` columns) plus gold labels.

    The same contract as :func:`models.train.finetune` (early stopping on ``val`` macro-F1, best
    epoch saved to ``out_dir`` and loaded back, ``time_budget_s``), single process. ``stats``
    receives the text budget and how many training texts were truncated to it.
    ``freeze_embeddings``: keep the token embeddings as they are (a student cut from a pretrained
    teacher: its 28M-row SmolLM2 table would cost more optimizer time than its blocks, for little).
    """
    torch.manual_seed(config.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = config.precision if config.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    from models.precision import autocast

    max_length = text_budget(model, tokenizer, config.max_length)
    model.heads.max_length, model.heads.recipe = max_length, config.recipe
    ids, _, truncated = encode_texts(tokenizer, train.text.tolist(), max_length, model.heads.prompt)
    gold, soft, valid = {}, {}, {}
    for head in HEADS:
        labels = getattr(model.heads, f"{head}_labels")
        gold[head] = encode_labels(train[head] if head in train else [None] * len(train), labels)  # (N,)
        col = train[SOFT.format(head)] if SOFT.format(head) in train else pd.Series([None] * len(train))
        soft[head], valid[head] = _soft_matrix(col.reset_index(drop=True), teacher_labels.get(head, []), labels)
    keep = np.flatnonzero(np.any([(gold[h] != IGNORE) | valid[h] for h in HEADS], axis=0))
    if keep.size == 0:
        raise DistillInputError("no training row has a teacher target or a gold label")
    if stats is not None:
        stats.update({"max_length": max_length, "context": context_length(model.config),
                      "texts": int(keep.size), "truncated": int(truncated[keep].sum()),
                      "soft_heads": [h for h in HEADS if valid[h].any()]})
    val_enc = {"ids": encode_texts(tokenizer, val.text.tolist(), max_length, model.heads.prompt)[0],
               **{h: encode_labels(val[h] if h in val else [None] * len(val), getattr(model.heads, f"{h}_labels"))
                  for h in HEADS}}

    model.to(device).train()
    if freeze_embeddings:
        model.causal_lm().get_input_embeddings().weight.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.dim() >= 2]
    no_decay = [p for p in trainable if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    steps_per_epoch = math.ceil(keep.size / config.batch_size)
    total = max(1, config.epochs * steps_per_epoch)
    warm = math.ceil(config.warmup_ratio * total)
    def lr_factor(step: int) -> float:  # linear warmup, then linear decay to 0
        return min((step + 1) / max(warm, 1), max(0.0, (total - step) / max(total - warm, 1)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    gen = torch.Generator().manual_seed(config.seed)
    t0, tokens, history = time.perf_counter(), 0, []
    best_epoch, best, bad = 0, -math.inf, 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = keep[torch.randperm(keep.size, generator=gen).numpy()]
        loss_sum, over = 0.0, False
        for s in range(0, order.size, config.batch_size):
            idx = order[s : s + config.batch_size]  # (B,) row indices
            input_ids, mask = (t.to(device) for t in pad_batch([ids[i] for i in idx], tokenizer.pad_token_id))
            target = {h: torch.from_numpy(gold[h][idx]).to(device) for h in HEADS}  # (B,) each, -100 = none
            with autocast(device, precision):
                out = model(input_ids=input_ids, attention_mask=mask, **target)  # out.loss: CE on gold rows
            kd = sum(kd_loss(logits, torch.from_numpy(soft[h][idx]).to(device), temperature,
                             torch.from_numpy(valid[h][idx]).to(device))
                     for h, logits in (("sentiment", out.sentiment_logits), ("topic", out.topic_logits))
                     if logits is not None and valid[h][idx].any())
            ce = out.loss if out.loss is not None else 0.0
            loss = alpha * kd + (1 - alpha) * ce
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            opt.step()
            sched.step()
            loss_sum, tokens = loss_sum + float(loss.detach()), tokens + int(mask.sum())
            over = config.time_budget_s is not None and time.perf_counter() - t0 > config.time_budget_s
            if over:
                break
        metrics = evaluate(model, val_enc, tokenizer.pad_token_id, config.batch_size, device)
        score = metrics["score"] if metrics["score"] is not None else -loss_sum
        history.append({"epoch": epoch, "train_loss": loss_sum / steps_per_epoch, "val_score": score,
                        "val_sentiment_macro_f1": metrics["sentiment"], "val_topic_macro_f1": metrics["topic"]})
        if score > best:
            best_epoch, best, bad = epoch, score, 0
            model.save(out_dir, tokenizer)
        else:
            bad += 1
        if over or bad >= config.patience:
            break
    model.load_state_dict(MultiHeadGPT.saved_state(out_dir), strict=False)  # the best epoch's weights
    model.eval()
    seconds = time.perf_counter() - t0
    return TrainResult(best_epoch=best_epoch, best_score=float(best), history=history, seconds=seconds,
                       tokens_per_s=tokens / max(seconds, 1e-9), device=str(device), out_dir=str(out_dir),
                       trainable_parameters=sum(p.numel() for p in trainable))


def run_distillation(examples_path: Path, soft_path: Path, out_dir: Path, teacher_dir: Path, *,
                     student_base: str = "small", config: TrainConfig | None = None, temperature: float = 2.0,
                     alpha: float = 0.5, teacher_version: str | None = None, vocab_size: int = 8000,
                     precision: str | None = None) -> dict[str, Any]:
    """Train and evaluate a student; returns ``run_experiment``'s info plus teacher figures and lineage.

    ``examples_path``: labelled examples with splits; ``soft_path``: ``article_id, text`` and
    ``teacher_<head>`` probabilities for the unlabelled pool and the labelled train rows.
    """
    from models.experiment import run_experiment

    check_student(student_base)
    config = config or TrainConfig()
    examples, soft = pd.read_parquet(examples_path), pd.read_parquet(soft_path)
    pool = soft[~soft.article_id.isin(examples.article_id)].assign(split="train", sentiment=None, topic=None,
                                                                   dataset="unlabelled-pool")
    if pool.empty:
        raise DistillInputError("the unlabelled pool is empty: ingest articles without labels first")
    cols = [c for c in soft if c.startswith("teacher_")]
    merged = examples.merge(soft[["article_id", *cols]], on="article_id", how="left")
    student_rows = pd.concat([merged, pool], ignore_index=True)
    student_path = Path(out_dir) / "student_examples.parquet"
    student_path.parent.mkdir(parents=True, exist_ok=True)
    student_rows.to_parquet(student_path, index=False)

    teacher, teacher_tok = MultiHeadGPT.load(teacher_dir)
    labels = {"sentiment": teacher.heads.sentiment_labels, "topic": teacher.heads.topic_labels}
    stats: dict[str, Any] = {}
    from_teacher = student_base.startswith(TEACHER_PREFIX)
    base = student_backbone(student_base, teacher_dir, Path(out_dir), loaded=(teacher, teacher_tok))
    if from_teacher:  # trained whole (not frozen), on plain text like any student
        config = dataclasses.replace(config, recipe="full", prompt=config.prompt if config.prompt is not None else "")
    fit = functools.partial(distill_fit, teacher_labels=labels, temperature=temperature, alpha=alpha, stats=stats,
                            freeze_embeddings=from_teacher)
    info = run_experiment(student_path, Path(out_dir), base=base, config=config, vocab_size=vocab_size,
                          progress=False, fit=fit)
    note = None
    if stats.get("truncated"):
        note = (f"{stats['truncated']} of {stats['texts']} training texts were truncated to the student's "
                f"{stats['max_length']} tokens (context {stats['context']}; the teacher read up to "
                f"{teacher.heads.max_length or 'its context'})")
    info["teacher"] = teacher_version
    info["distillation"] = {"teacher": teacher_version, "student": student_base, "temperature": temperature,
                            "alpha": alpha, "pool": int(len(pool)), **stats, "note": note}
    _add_teacher_scores(info, examples, teacher_dir, precision)
    return info


def _add_teacher_scores(info: dict[str, Any], examples: pd.DataFrame, teacher_dir: Path,
                        precision: str | None) -> None:
    """The teacher, as it is served, on the student's validation (select) and test rows and the golden set."""
    from models.evaluate import classification_metrics
    from models.experiment import selection_halves
    from models.serving import ServedModel

    served = ServedModel(Path(teacher_dir), precision=precision)
    val = examples[examples.split == "validation"].reset_index(drop=True)
    keys = val.article_id if "article_id" in val else val.text
    select = val[selection_halves(keys)] if len(val) >= 20 else val  # the rows run_experiment reports on
    parts = {"validation": select.reset_index(drop=True),
             "test": examples[examples.split == "test"].reset_index(drop=True)}
    for split, part in parts.items():
        frame = served.score(part.text.tolist())[0] if len(part) else None
        for head, per_split in info.get("metrics", {}).items():
            names = getattr(served.model.heads, f"{head}_labels")
            student = info["heads"][f"{head}_labels"]
            if frame is None or split not in per_split or sorted(names) != sorted(student):
                continue
            mask = part[head].notna().to_numpy()
            probs = frame[[f"{head}_p_{n}" for n in student]].to_numpy()[mask]  # (n, K), student order
            per_split[split]["teacher"] = classification_metrics(part[head][mask].tolist(), probs, student)
    if info.get("golden"):
        from models.golden_set import golden_scores, load_golden

        golden = load_golden()
        frame = served.score(golden.text.tolist())[0]
        names = info["heads"]["sentiment_labels"]
        info["golden"]["teacher"] = golden_scores(
            {"teacher": frame[[f"sentiment_p_{n}" for n in names]].to_numpy()}, names, golden)["teacher"]
