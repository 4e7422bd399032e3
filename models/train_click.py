"""Train the click model (:mod:`models.click`) the NRMS way.

Each click becomes one sample: the click plus ``neg_k`` non-clicks drawn from the same impression
(re-drawn every epoch, seeded), cross-entropy over the ``1 + neg_k`` logits with the click at
index 0. AdamW, gradient clipping, bf16 autocast on CUDA only; with a validation set the epoch with
the best mean AUC is kept (early stopping), and ``time_budget_s`` bounds the wall time.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from models.click import ClickConfig, ClickModel, Impressions, _batch_history, _check, _device, _pad_histories, \
    _score_tensor
from models.rank_metrics import evaluate_impressions

PATIENCE = 2  # epochs without a better valid AUC before training stops


def time_slices(n: int, early_stop_frac: float = 0.1, heldout_frac: float = 0.1
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions ``0..n-1`` of time-ordered impressions cut into ``(fit, early_stop, heldout)``.

    Oldest first: the click model trains on ``fit``, early stopping picks its epoch on
    ``early_stop``, and the report is computed on ``heldout``, the newest slice, which neither
    training nor the epoch choice has seen (a report on the early-stopping rows flatters the model:
    its epoch was picked to score well on them). Each slice gets at least one impression when
    ``n >= 3``; the three never overlap and cover ``0..n-1`` in order.
    """
    if n < 3:
        raise ValueError(f"{n} impressions cannot be cut into fit, early-stopping and held-out slices")
    n_held = max(1, int(round(n * heldout_frac)))
    n_stop = max(1, int(round(n * early_stop_frac)))
    n_fit = n - n_held - n_stop
    if n_fit < 1:
        raise ValueError(f"{n} impressions leave nothing to fit after {n_stop} early-stopping and {n_held} held out")
    idx = np.arange(n)
    return idx[:n_fit], idx[n_fit : n_fit + n_stop], idx[n_fit + n_stop :]


def _samples(imps: Impressions, neg_k: int, rng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    """NRMS samples: ``(impression (S,), candidates (S, 1+neg_k) click first, their side features
    (S, 1+neg_k, F) or None, skipped positives)``."""
    imp_idx, cands, feats, skipped = [], [], [], 0
    for i, (cand, lab) in enumerate(zip(imps.candidates, imps.labels, strict=True)):
        lab = np.asarray(lab)
        pos, neg = np.flatnonzero(lab > 0), np.flatnonzero(lab <= 0)  # positions in the impression
        if len(pos) == 0:
            continue
        if len(neg) == 0:
            skipped += len(pos)
            continue
        if len(neg) >= neg_k:  # without replacement: the neg_k smallest of random keys per positive
            pick = np.argsort(rng.random((len(pos), len(neg))), axis=1)[:, :neg_k]
        else:
            pick = rng.integers(0, len(neg), size=(len(pos), neg_k))
        where = np.concatenate([pos[:, None], neg[pick]], axis=1)  # (P, 1+K) positions, click first
        imp_idx.append(np.full(len(pos), i, dtype=np.int64))
        cands.append(np.asarray(cand, dtype=np.int64)[where])
        if imps.features is not None:
            feats.append(np.asarray(imps.features[i], dtype=np.float32)[where])
    if not cands:
        return np.zeros(0, np.int64), np.zeros((0, 1 + neg_k), np.int64), None, skipped
    return np.concatenate(imp_idx), np.concatenate(cands), np.concatenate(feats) if feats else None, skipped


def train_click_model(item_vectors: np.ndarray, train: Impressions, cfg: ClickConfig, *,
                      valid: Impressions | None = None, time_budget_s: float | None = None,
                      device: str | None = None, progress: bool = False) -> tuple[ClickModel, dict[str, Any]]:
    """Train a :class:`ClickModel` with the NRMS recipe; returns ``(model in eval mode, stats)``.

    Negatives are re-drawn every epoch (seeded). With ``valid``, the epoch with the best mean AUC
    is kept (early stopping after ``PATIENCE`` epochs without improvement). ``time_budget_s`` stops
    mid-epoch; that partial epoch is still validated. The caller's torch RNG state is restored.
    """
    from models.progress import progress_bar as tqdm  # a few lines per stage off a terminal

    dev = _device(device)
    item_t = torch.as_tensor(np.asarray(item_vectors, dtype=np.float32), device=dev)
    if item_t.ndim != 2 or item_t.shape[1] != cfg.d_item:
        raise ValueError(f"item_vectors {tuple(item_t.shape)} do not match d_item={cfg.d_item}")
    _check(item_t.shape[0], train)
    _check(item_t.shape[0], valid)
    use_bf16 = dev.type == "cuda"  # bf16 autocast on CUDA only (much slower than fp32 on CPU)
    rng = np.random.default_rng(cfg.seed)
    hist_rows, hist_len = _pad_histories(train.history, cfg.max_history)  # (n_imp, H), (n_imp,)
    start = time.monotonic()
    stats: dict[str, Any] = {"epochs_run": 0, "best_epoch": 0, "train_samples": 0, "skipped_positives": 0,
                             "train_loss": [], "valid_metrics": [], "best_valid": None, "stopped": "epochs"}
    cuda_devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(cfg.seed)
        model = ClickModel(cfg).to(dev)
        model.set_item_stats(item_t)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        best_auc, best_state, bad = -np.inf, None, 0
        for epoch in range(1, cfg.epochs + 1):
            imp_idx, cands, feats, skipped = _samples(train, cfg.neg_k, rng)
            if cfg.n_features and feats is None:
                raise ValueError(f"n_features={cfg.n_features} but the training impressions carry no features")
            if len(imp_idx) == 0:
                raise ValueError("no training sample: no impression has both a click and a non-click")
            stats["train_samples"], stats["skipped_positives"] = len(imp_idx), skipped
            order = rng.permutation(len(imp_idx))
            model.train()
            total, steps, out_of_time = 0.0, 0, False
            bar = tqdm(range(0, len(order), cfg.batch_size), desc=f"click epoch {epoch}/{cfg.epochs}",
                       disable=not progress, leave=False)
            for s in bar:
                b = order[s : s + cfg.batch_size]
                hist, mask = _batch_history(hist_rows[imp_idx[b]], hist_len[imp_idx[b]], dev)
                cand = torch.from_numpy(cands[b]).to(dev)  # (B, 1+K), the click at index 0
                side = torch.from_numpy(feats[b]).to(dev) if cfg.n_features else None  # (B, 1+K, F)
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_bf16):
                    logits = model(item_t, hist, mask, cand, side)
                loss = F.cross_entropy(logits.float(), torch.zeros(len(b), dtype=torch.long, device=dev))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                total, steps = total + float(loss.detach()), steps + 1
                bar.set_postfix(loss=f"{total / steps:.4f}", refresh=False)  # redrawn at tqdm's pace, not per step
                if time_budget_s is not None and time.monotonic() - start > time_budget_s:
                    out_of_time = True
                    break
            stats["epochs_run"] = epoch
            stats["train_loss"].append(total / max(steps, 1))
            if valid is not None:
                metrics = evaluate_impressions(valid.labels, _score_tensor(model, item_t, valid, 256))
                stats["valid_metrics"].append(metrics)
                if metrics["auc"] > best_auc:  # NaN (no usable impression) never counts as better
                    best_auc, bad, stats["best_epoch"], stats["best_valid"] = metrics["auc"], 0, epoch, metrics
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    bad += 1
            if out_of_time:
                stats["stopped"] = "time_budget"
                break
            if valid is not None and bad >= PATIENCE:
                stats["stopped"] = "early_stopping"
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        else:  # no valid set (or no usable valid impression): the last epoch's weights
            stats["best_epoch"] = stats["epochs_run"]
    stats["seconds"] = time.monotonic() - start
    return model.eval(), stats
