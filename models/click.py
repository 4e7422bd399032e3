"""Click model: an NRMS-style user encoder over frozen GPT news vectors.

Items arrive as ``item_vectors (N, d_item)``: the champion GPT backbone's pooled embedding of
each item's text, computed elsewhere and stored. The backbone is frozen here: re-encoding ~50k
items every epoch on CPU is far too slow, and the same vectors already feed the monitor and the
cosine features, so one encoder serves all of them. What trains is small:

* **news tower** ``LayerNorm -> Linear -> GELU -> Dropout -> Linear``: adapts the frozen vectors
  to the click task (GPT's pooled space is shaped by LM / topic / sentiment, not by clicks);
* **user encoder** (NRMS, Wu et al. 2019): multi-head self-attention over the reprs of the last
  ``max_history`` clicks plus a learned *recency* embedding (0 = most recent click), then
  additive attention pooling to one user vector. A user with no history gets a learned
  "empty user" vector instead of a NaN from an all-masked softmax;
* **score** ``dot(user, item)`` plus, with ``n_features > 0``, a small MLP over per-candidate
  side features (the caller's point-in-time popularity, click rate and age): a logit. On news,
  what is clicked *now* carries much of the signal a history cannot (MIND's candidates are mostly
  hours old), and the content part alone learns little from a few thousand impressions.
  Candidates are scored independently, so the model never sees where one sits in the impression.

Training (NRMS recipe) lives in :mod:`models.train_click`.

Conventions: items are rows ``0..N-1`` of ``item_vectors``; histories and candidates are int64
row arrays into it. Padded histories are ``(B, H)`` rows + ``(B, H)`` bool masks (True = real
click); :func:`_pad_histories` left-aligns them (oldest first) but the recency index is counted
from the mask, so any padding layout encodes the same way. Saved as ``model.safetensors`` +
``click_config.json``, never pickled.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

CONFIG_FILE = "click_config.json"
WEIGHTS_FILE = "model.safetensors"
ENCODE_CHUNK = 16384  # item rows per news-tower pass when encoding the whole table


@dataclass
class ClickConfig:
    """Click-model sizes and training hyper-parameters."""

    d_item: int  # width of the frozen item vectors
    d_model: int = 128
    n_heads: int = 4
    max_history: int = 50  # most recent clicks used
    neg_k: int = 4  # negatives per positive (NRMS: K=4)
    dropout: float = 0.2
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    n_features: int = 0  # per-candidate side features (0: content and history only)
    # z-score every item-vector dimension (mean/std of the whole item table, set by the trainer and
    # saved with the weights) before the news tower: a pretrained LM's hidden states have a few
    # dimensions thousands of times larger than the rest, which a per-row LayerNorm cannot undo.
    standardize: bool = False


@dataclass
class Impressions:
    """Impressions as item indices (one entry per impression)."""

    history: list[np.ndarray]  # int64 item rows the user clicked before, oldest first
    candidates: list[np.ndarray]  # int64 item rows shown
    labels: list[np.ndarray]  # 0/1 clicks, same length as candidates
    features: list[np.ndarray] | None = None  # (C_i, n_features) float32 per impression, if the model has any

    def __len__(self) -> int:
        return len(self.candidates)


class ClickModel(nn.Module):
    """News tower + NRMS user encoder; ``forward`` returns dot-product logits."""

    def __init__(self, cfg: ClickConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.news = nn.Sequential(nn.LayerNorm(cfg.d_item), nn.Linear(cfg.d_item, d), nn.GELU(),
                                  nn.Dropout(cfg.dropout), nn.Linear(d, d))
        self.recency = nn.Embedding(cfg.max_history, d)  # index 0 = the most recent click
        self.attn = nn.MultiheadAttention(d, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
        self.dropout = nn.Dropout(cfg.dropout)
        self.pool_proj = nn.Linear(d, d)  # additive attention: q = w^T tanh(W h + b)
        self.pool_query = nn.Linear(d, 1, bias=False)
        self.empty_user = nn.Parameter(torch.randn(d) * 0.02)
        # The wide part: side features -> a logit offset added to the dot product.
        self.wide = nn.Sequential(nn.Linear(cfg.n_features, 32), nn.GELU(), nn.Linear(32, 1)) \
            if cfg.n_features else None
        nn.init.normal_(self.recency.weight, std=0.02)
        if cfg.standardize:  # buffers only then, so models saved without them still load
            self.register_buffer("item_mean", torch.zeros(cfg.d_item))
            self.register_buffer("item_scale", torch.ones(cfg.d_item))

    def set_item_stats(self, vectors: torch.Tensor) -> None:
        """Fit the standardisation (``standardize``) to an item table (N, d_item); a no-op without it."""
        if not self.cfg.standardize:
            return
        v = vectors.float()
        self.item_mean.copy_(v.mean(dim=0))
        self.item_scale.copy_(1.0 / (v.std(dim=0) + 1e-6))

    def encode_items(self, vectors: torch.Tensor) -> torch.Tensor:
        """(N, d_item) frozen vectors -> (N, d_model) item reprs."""
        if self.cfg.standardize:
            vectors = (vectors - self.item_mean) * self.item_scale
        return self.news(vectors)

    def encode_users(self, item_repr: torch.Tensor, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """User vectors (B, d_model) from ``history`` (B, H) rows into ``item_repr`` and ``mask`` (B, H).

        ``mask`` is True on real clicks; rows without any get the learned empty-user vector.
        """
        B, H = history.shape
        if H == 0:
            return self.empty_user.expand(B, -1)
        mask = mask.bool()
        has = mask.any(dim=1)  # (B,)
        # Recency = real clicks after this one; clamp so a longer history still finds an embedding.
        m = mask.long()
        recency = (m.flip(1).cumsum(1).flip(1) - m).clamp(max=self.cfg.max_history - 1)  # (B, H)
        x = item_repr[history] + self.recency(recency)  # (B, H, d)
        # An all-padded row would give NaN in both softmaxes: let it attend to slot 0, then replace it.
        safe = mask.clone()
        safe[:, 0] |= ~has
        h, _ = self.attn(x, x, x, key_padding_mask=~safe, need_weights=False)  # (B, H, d)
        h = self.dropout(h + x)  # residual keeps each click's own repr (few clicks per user)
        a = self.pool_query(torch.tanh(self.pool_proj(h))).squeeze(-1)  # (B, H)
        a = a.float().masked_fill(~safe, float("-inf")).softmax(dim=1).to(h.dtype)
        user = (a.unsqueeze(-1) * h).sum(dim=1)  # (B, d)
        return torch.where(has.unsqueeze(1), user, self.empty_user.to(user.dtype).expand_as(user))

    def side(self, features: torch.Tensor | None) -> torch.Tensor | float:
        """Logit offsets (..., C) from side features (..., C, n_features); 0 without a wide part."""
        if self.wide is None:
            return 0.0
        if features is None:
            raise ValueError(f"this click model needs {self.cfg.n_features} side features per candidate")
        return self.wide(features).squeeze(-1)

    def forward(self, item_vectors: torch.Tensor, history: torch.Tensor, mask: torch.Tensor,
                candidates: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, C) of ``candidates`` (B, C) for users ``history``/``mask`` (B, H).

        ``features`` (B, C, n_features) feed the wide part. Only the unique rows the batch touches
        go through the news tower (N may be ~60k).
        """
        B, H = history.shape
        rows, local = torch.unique(torch.cat([history.reshape(-1), candidates.reshape(-1)]), return_inverse=True)
        reprs = self.encode_items(item_vectors[rows])  # (U, d)
        user = self.encode_users(reprs, local[: B * H].view(B, H), mask)  # (B, d)
        cand = reprs[local[B * H :].view(candidates.shape)]  # (B, C, d)
        return torch.einsum("bd,bcd->bc", user, cand) + self.side(features)


def _device(device: str | None) -> torch.device:
    """``device``, or CUDA when available, else CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _pad_histories(histories: list[np.ndarray], max_history: int) -> tuple[np.ndarray, np.ndarray]:
    """Last ``max_history`` clicks of each history, left-aligned: rows (n, H>=1) and lengths (n,)."""
    cut = [np.asarray(h, dtype=np.int64)[-max_history:] for h in histories]  # max_history >= 1
    lengths = np.fromiter((len(h) for h in cut), dtype=np.int64, count=len(cut))
    rows = np.zeros((len(cut), max(1, int(lengths.max(initial=0)))), dtype=np.int64)  # pad = row 0, masked
    for i, h in enumerate(cut):
        rows[i, : len(h)] = h
    return rows, lengths


def _batch_history(rows: np.ndarray, lengths: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Trim padded rows to the batch's longest history: ``(history (B, H), mask (B, H))`` on device."""
    H = max(1, int(lengths.max(initial=0)))
    mask = np.arange(H) < lengths[:, None]
    return torch.from_numpy(np.ascontiguousarray(rows[:, :H])).to(device), torch.from_numpy(mask).to(device)


def _check(n_items: int, imps: Impressions | None = None, **rows: list[np.ndarray]) -> None:
    """Raise unless ``imps`` is consistent and every index array (``imps``' and ``rows``') is in ``0..n_items-1``."""
    if imps is not None:
        if not len(imps.history) == len(imps.candidates) == len(imps.labels):
            raise ValueError("Impressions need one history, candidates and labels array per impression")
        rows = {"history": imps.history, "candidates": imps.candidates, **rows}
    for name, arrays in rows.items():
        for i, a in enumerate(arrays):
            a = np.asarray(a)
            if a.size and (a.min() < 0 or a.max() >= n_items):
                raise IndexError(f"{name}[{i}] holds rows outside 0..{n_items - 1}")


@torch.inference_mode()
def _item_table(model: ClickModel, item_t: torch.Tensor) -> torch.Tensor:
    """Item reprs (N, d_model) in float32 for the whole table, in chunks."""
    use_bf16 = item_t.device.type == "cuda"
    out = []
    for s in range(0, item_t.shape[0], ENCODE_CHUNK):
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_bf16):
            out.append(model.encode_items(item_t[s : s + ENCODE_CHUNK]).float())
    return torch.cat(out) if out else item_t.new_zeros((0, model.cfg.d_model))


@torch.inference_mode()
def _user_table(model: ClickModel, table: torch.Tensor, histories: list[np.ndarray], batch_size: int) -> torch.Tensor:
    """User vectors (U, d_model), float32, ``batch_size`` users per pass."""
    use_bf16 = table.device.type == "cuda"
    out = []
    for s in range(0, len(histories), batch_size):
        rows, lengths = _pad_histories(histories[s : s + batch_size], model.cfg.max_history)
        hist, mask = _batch_history(rows, lengths, table.device)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_bf16):
            out.append(model.encode_users(table, hist, mask).float())
    return torch.cat(out) if out else table.new_zeros((0, model.cfg.d_model))


@torch.inference_mode()
def _score_tensor(model: ClickModel, item_t: torch.Tensor, imps: Impressions, batch_size: int) -> list[np.ndarray]:
    """Logits (float64) per impression; the model is in eval mode for the call, its mode restored after."""
    was_training = model.training
    model.eval()
    try:
        table = _item_table(model, item_t)  # (N, d)
        users = _user_table(model, table, imps.history, batch_size)  # (n, d)
        sizes = [len(c) for c in imps.candidates]
        flat = np.concatenate([np.asarray(c, dtype=np.int64) for c in imps.candidates]) if sizes else np.zeros(0, np.int64)
        owner = np.repeat(np.arange(len(sizes)), sizes)  # (sum C,) impression of each candidate
        feats = _stack_features(model, imps.features, sizes)  # (sum C, F) or None
        scores = np.zeros(len(flat), dtype=np.float64)
        for s in range(0, len(flat), ENCODE_CHUNK * 16):  # chunks bound the (rows, d) gathers (MIND: ~3M)
            c_t, o_t = (torch.from_numpy(a[s : s + ENCODE_CHUNK * 16]).to(item_t.device) for a in (flat, owner))
            f_t = None if feats is None else torch.from_numpy(feats[s : s + ENCODE_CHUNK * 16]).to(item_t.device)
            scores[s : s + len(c_t)] = ((table[c_t] * users[o_t]).sum(dim=1) + model.side(f_t)).double().cpu().numpy()
    finally:
        model.train(was_training)
    return np.split(scores, np.cumsum(sizes)[:-1]) if sizes else []


def _stack_features(model: ClickModel, features: list[np.ndarray] | None, sizes: list[int]) -> np.ndarray | None:
    """Per-impression side features stacked to (sum C, F) float32; None when the model has no wide part."""
    if not model.cfg.n_features:
        return None
    if features is None or len(features) != len(sizes):
        raise ValueError(f"this click model needs side features ({model.cfg.n_features} per candidate) per impression")
    out = np.concatenate([np.asarray(f, np.float32).reshape(n, -1) for f, n in zip(features, sizes, strict=True)]) \
        if sizes else np.zeros((0, model.cfg.n_features), np.float32)
    if out.shape[1] != model.cfg.n_features:
        raise ValueError(f"expected {model.cfg.n_features} side features per candidate, got {out.shape[1]}")
    return out


def score_impressions(model: ClickModel, item_vectors: np.ndarray, imps: Impressions, batch_size: int = 256,
                      device: str | None = None, *, logits: bool = False) -> list[np.ndarray]:
    """Click probabilities (sigmoid of the logits, float64) of every candidate, one array per impression.

    The model was trained with a softmax over one click and ``neg_k`` non-clicks, so these rank
    candidates well but are not calibrated click rates. ``logits=True`` returns the raw logits.
    """
    item_t = torch.as_tensor(np.asarray(item_vectors, dtype=np.float32), device=_device(device))
    _check(item_t.shape[0], imps)
    model.to(item_t.device)
    scores = _score_tensor(model, item_t, imps, batch_size)
    return scores if logits else [1.0 / (1.0 + np.exp(-s)) for s in scores]


@torch.inference_mode()
def score_users(model: ClickModel, item_vectors: np.ndarray, histories: list[np.ndarray], candidates: np.ndarray,
                batch_size: int = 256, device: str | None = None, *, logits: bool = False,
                features: np.ndarray | None = None) -> np.ndarray:
    """(U, C) float32 click probabilities of every user against one shared ``candidates`` array.

    ``features`` (C, n_features): the candidates' side features, the same for every user.

    For the nightly top-k over a candidate pool: item reprs once, user vectors in batches, then
    one matmul. float32 sigmoids round to 1.0 above a logit of ~17; rank on ``logits=True`` if
    the top of the list must not tie.
    """
    item_t = torch.as_tensor(np.asarray(item_vectors, dtype=np.float32), device=_device(device))
    cand = np.asarray(candidates, dtype=np.int64)
    _check(item_t.shape[0], histories=histories, candidates=[cand])
    model.to(item_t.device)
    was_training = model.training
    model.eval()
    try:
        table = _item_table(model, item_t)  # (N, d)
        users = _user_table(model, table, list(histories), batch_size)  # (U, d)
        feats = _stack_features(model, None if features is None else [features], [len(cand)])
        side = model.side(None if feats is None else torch.from_numpy(feats).to(item_t.device))  # (C,) or 0
        out = users @ table[torch.from_numpy(cand).to(item_t.device)].T + side  # (U, C)
    finally:
        model.train(was_training)
    return (out if logits else torch.sigmoid(out)).cpu().numpy().astype(np.float32, copy=False)


def save_click_model(model: ClickModel, out_dir: Path, extra: dict | None = None) -> None:
    """Write ``model.safetensors`` and ``click_config.json`` (config + ``extra`` metadata) to ``out_dir``."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    meta = {"config": asdict(model.cfg), "extra": extra or {}}
    (out_dir / CONFIG_FILE).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")


def load_click_model(model_dir: Path, device: str = "cpu") -> ClickModel:
    """Load a directory written by :func:`save_click_model`; the model comes back in eval mode."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    meta = json.loads((model_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    model = ClickModel(ClickConfig(**meta["config"]))
    model.load_state_dict(load_file(str(model_dir / WEIGHTS_FILE), device=str(device)))
    return model.to(device).eval()
