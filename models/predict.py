"""Batched inference for every head of a :class:`~models.multihead.MultiHeadGPT` in one pass.

Texts are tokenized once, sorted by token length and cut into batches of similar length, so a
batch is padded (right, to its own longest row) as little as possible; the results are written
back at each text's original index, so outputs are always in input order.

Edge cases, by design:

* **Long texts** are truncated to ``max_length`` tokens (default: the length the heads were
  trained on, ``heads.max_length``, else the smaller of the tokenizer's ``model_max_length`` and
  the model's context; a larger value is clamped to the context, beyond which the model has no
  positions). Texts longer than
  ``max_length * MAX_CHARS_PER_TOKEN`` characters are cut on characters first so that a
  megabyte-sized string does not cost a full tokenization; ``truncated`` is set for every row
  that lost content either way.
* **Empty texts** (or texts that tokenize to nothing) are scored on a lone ``<|endoftext|>``
  token, the same input :mod:`models.train` uses for them, so they get the model's "no content"
  prediction rather than a crash or NaNs. Their ``n_tokens`` is 0.

``n_tokens`` counts the text's own tokens that the model actually saw (after truncation).

Speed (CPU, ``bench/score.py``): the default batch of 32 rows keeps a batch's activations in cache
(64 and more were slower on our 2-core machines), and during the call GPT-2's ``gelu_new`` (five
elementwise ops) is swapped for the same tanh formula as one fused kernel
(``F.gelu(approximate="tanh")``, equal to float rounding), which is ~13% of a forward pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models.backbone import context_length, hidden_size
from models.precision import autocast, is_quantized

MIN_SHARED_PREFIX = 4  # shorter common prefixes are not worth a cache copy per batch
MAX_CHARS_PER_TOKEN = 64  # pre-cut huge strings on characters; BPE tokens are far shorter than this
DEFAULT_BATCH_SIZE = 32  # rows per forward pass; see the module docstring


class _FusedTanhGELU(nn.Module):
    """``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, GPT-2's ``gelu_new``, as one kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


@contextlib.contextmanager
def _fused_activations(model: nn.Module) -> Iterator[None]:
    """Swap every ``NewGELUActivation`` for :class:`_FusedTanhGELU` for the duration, then restore.

    Only instances found at entry are swapped and exactly those are put back, so a concurrent
    call on the same model sees either activation (both compute the same function).
    """
    try:
        from transformers.activations import NewGELUActivation
    except ImportError:  # pragma: no cover - transformers is a dependency
        yield
        return
    swapped = []
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is NewGELUActivation:
                setattr(parent, name, _FusedTanhGELU())
                swapped.append((parent, name, child))
    try:
        yield
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


@dataclass
class Predictions:
    """Per-row outputs of :func:`predict`, in input order."""

    sentiment_probs: np.ndarray | None  # (N, 3) float32, rows sum to 1; None without a sentiment head
    topic_probs: np.ndarray | None  # (N, K) float32, or None when the model has no topic head
    embeddings: np.ndarray  # (N, d) float32, pooled last hidden state
    truncated: np.ndarray  # (N,) bool, True where the text was cut to fit max_length
    n_tokens: np.ndarray  # (N,) int64, tokens of the text fed to the model (0 for empty texts)
    intent_probs: np.ndarray | None = None  # (N, I) float32, or None without an intent head


class HeadOutputs(NamedTuple):
    """What :func:`predict_ids` returns, in the order of its ``ids``; a head the model lacks is None."""

    sentiment: np.ndarray | None  # (N, 3) probabilities
    topic: np.ndarray | None  # (N, K)
    embeddings: np.ndarray  # (N, d) pooled last layer, or (N, feature_size) with features=True
    intent: np.ndarray | None  # (N, I)


def default_max_length(model, tokenizer) -> int:
    """Tokens per text when scoring: the heads' training length, else what model and tokenizer allow."""
    heads = getattr(model, "heads", None)
    prefix, suffix = _prompt_ids(tokenizer, getattr(heads, "prompt", None))
    n_positions = context_length(model.config) - len(prefix) - len(suffix)  # room left for the text
    trained = getattr(heads, "max_length", None)
    tok_max = getattr(tokenizer, "model_max_length", None) or n_positions
    return int(min(trained or tok_max, tok_max, n_positions))


def text_budget(model, tokenizer, max_length: int) -> int:
    """Tokens left for the text itself: ``max_length`` capped by the context minus the prompt's tokens."""
    prefix, suffix = _prompt_ids(tokenizer, getattr(getattr(model, "heads", None), "prompt", None))
    return max(1, min(int(max_length), context_length(model.config) - len(prefix) - len(suffix)))


def encode_texts(tokenizer, texts: Sequence[str], max_length: int, prompt: str | None = None
                 ) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
    """Tokenize ``texts`` (no special tokens), truncating each text to ``max_length`` tokens.

    ``prompt`` (a template with one ``{text}``, see ``HeadsConfig.prompt``) wraps every text in
    the same instruction; its tokens come on top of ``max_length`` and only the text is ever cut.
    Returns ``(ids, n_tokens, truncated)``: ``ids[i]`` is never empty (an empty text without a
    prompt becomes ``[eos]``), ``n_tokens[i]`` is the number of the text's own tokens kept and
    ``truncated[i]`` says whether anything was dropped.
    """
    max_chars = max_length * MAX_CHARS_PER_TOKEN
    clean = ["" if t is None else str(t) for t in texts]
    char_cut = np.array([len(t) > max_chars for t in clean], dtype=bool)
    clipped = [t[:max_chars] for t in clean]
    prefix, suffix = _prompt_ids(tokenizer, prompt)
    if prompt and prompt.split("{text}", 1)[0].endswith(" "):
        clipped = [" " + t if t else t for t in clipped]  # the space belongs to the text's first token
    # max_length + 1 so that "exactly max_length tokens" and "more than that" can be told apart.
    enc = tokenizer(clipped, add_special_tokens=False, truncation=True, max_length=max_length + 1,
                    verbose=False)["input_ids"] if clipped else []
    eos = tokenizer.eos_token_id
    ids, n_tokens, truncated = [], np.zeros(len(clean), dtype=np.int64), char_cut.copy()
    for i, row in enumerate(enc):
        if len(row) > max_length:
            row, truncated[i] = row[:max_length], True
        n_tokens[i] = len(row)
        full = prefix + list(row) + suffix
        ids.append(full if full else [eos])
    return ids, n_tokens, truncated


def _prompt_ids(tokenizer, prompt: str | None) -> tuple[list[int], list[int]]:
    """Token ids of the template before and after ``{text}`` (the space before it goes to the text)."""
    if not prompt:
        return [], []
    if prompt.count("{text}") != 1:
        raise ValueError(f"a prompt needs exactly one {{text}} placeholder: {prompt!r}")
    before, after = prompt.split("{text}")
    tok = lambda s: list(tokenizer(s, add_special_tokens=False)["input_ids"]) if s else []  # noqa: E731
    return tok(before.rstrip(" ")), tok(after)


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists to the longest row: ``(input_ids (B, T), attention_mask (B, T))``."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    T = int(lengths.max())
    input_ids = np.full((len(rows), T), pad_id, dtype=np.int64)
    for i, r in enumerate(rows):
        input_ids[i, : lengths[i]] = r
    attention_mask = (np.arange(T) < lengths[:, None]).astype(np.int64)
    return torch.from_numpy(input_ids), torch.from_numpy(attention_mask)


def shared_prefix_length(ids: Sequence[Sequence[int]]) -> int:
    """Tokens every row starts with (the prompt, usually), leaving each row at least one of its own."""
    if not ids:
        return 0
    first = list(ids[0])
    n = min(len(r) for r in ids) - 1
    for row in ids:
        if n <= 0:
            break
        if list(row[:n]) != first[:n]:  # slice compare first: C speed for the usual full match
            n = next(i for i in range(n) if row[i] != first[i])
    return max(n, 0)


def predict_ids(model, ids: Sequence[Sequence[int]], pad_id: int, *, batch_size: int = DEFAULT_BATCH_SIZE,
                device: str | torch.device = "cpu", progress: bool = False, precision: str | None = None,
                features: bool = False, reuse_prefix: bool = True) -> HeadOutputs:
    """Score pre-tokenized rows (each non-empty, within the context) with length bucketing.

    Returns :class:`HeadOutputs` ``(sentiment (N, 3), topic (N, K), embeddings (N, d), intent (N, I))``
    in the order of ``ids``, None for a head the model lacks; with ``features=True``
    ``embeddings`` is what the heads read instead, (N, ``model.feature_size``). ``precision`` is ``"bf16"`` (autocast) or ``"fp32"``; None means
    bf16 on CUDA and fp32 on CPU (:mod:`models.precision` decides per machine). ``"int8"`` expects
    a model from :func:`models.precision.quantize_int8` (activations stay fp32). The model is put
    in eval mode for the call and its mode is restored after.

    ``reuse_prefix``: tokens that every row starts with (a prompt's instruction) run once for the
    whole call and each batch continues from their cached keys/values
    (:class:`~models.multihead.SharedPrefix`): the same outputs within float rounding, with
    ~1.5-2x fewer tokens per forward pass for prompted headlines.
    """
    from models.progress import progress_bar as tqdm  # a few lines per stage off a terminal

    n = len(ids)
    d = model.feature_size if features else hidden_size(model.config)
    # One output array per head the model has, (N, classes) each.
    probs = {h: np.zeros((n, getattr(model, h).out_features), dtype=np.float32)
             for h in ("sentiment", "topic", "intent") if getattr(model, h, None) is not None}
    emb = np.zeros((n, d), dtype=np.float32)
    # Length buckets: sorted order -> neighbours have similar lengths -> little padding per batch.
    order = np.argsort(np.fromiter((len(r) for r in ids), dtype=np.int64, count=n), kind="stable")
    device = torch.device(device)
    precision = precision or ("bf16" if device.type == "cuda" else "fp32")
    # Results are written through torch views of the numpy outputs: one copy per batch, no temporaries.
    probs_t = {h: torch.from_numpy(a) for h, a in probs.items()}
    emb_t = torch.from_numpy(emb)
    was_training = model.training
    model.eval()
    skip = shared_prefix_length(ids) if reuse_prefix and hasattr(model, "shared_prefix") else 0
    skip = skip if skip >= MIN_SHARED_PREFIX else 0
    try:
        with torch.inference_mode(), _fused_activations(model):
            with autocast(device, precision):
                prefix = model.shared_prefix(list(ids[0][:skip]), device) if skip else None
            starts = range(0, n, batch_size)
            for s in tqdm(starts, disable=not progress, desc="predict", leave=False):
                idx = order[s : s + batch_size]  # (B,) original row indices of this bucket
                idx_t = torch.from_numpy(idx)
                input_ids, mask = pad_batch([ids[i][skip:] for i in idx], pad_id)  # (B, T) each
                input_ids, mask = input_ids.to(device), mask.to(device)
                with autocast(device, precision):
                    out = model(input_ids=input_ids, attention_mask=mask, prefix=prefix)
                # Softmax in fp32 so every row sums to 1 within float32 precision.
                for head, dest in probs_t.items():
                    dest.index_copy_(0, idx_t, F.softmax(getattr(out, f"{head}_logits").float(), dim=-1).cpu())
                emb_t.index_copy_(0, idx_t, (out.features if features else out.embedding).float().cpu())
    finally:
        model.train(was_training)
    return HeadOutputs(probs.get("sentiment"), probs.get("topic"), emb, probs.get("intent"))


def predict(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_length: int | None = None,
    device: str | None = None,
    progress: bool = False,
    precision: str | None = None,
) -> Predictions:
    """Probabilities of every head the model has, embeddings and truncation flags for ``texts``.

    ``device`` defaults to CUDA when available, else CPU; the model is moved there. Rows come
    back in input order whatever the bucketing did. ``precision``: see :func:`predict_ids`. See
    the module docstring for long and empty texts. ``precision="int8"`` needs a model from
    :func:`models.precision.quantize_int8` (made once, e.g. by ``ServedModel``: quantising costs a
    full model copy, so it is never done per call) and runs on CPU.
    """
    if precision == "int8":
        if not is_quantized(model):
            raise ValueError("precision='int8' needs a quantised model: pass models.precision.quantize_int8(model)")
        device = "cpu"  # quantised kernels are CPU kernels
    limit = default_max_length(model, tokenizer)
    max_length = limit if max_length is None else max(1, min(int(max_length), limit))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    ids, n_tokens, truncated = encode_texts(tokenizer, texts, max_length, model.heads.prompt)
    out = predict_ids(model, ids, tokenizer.pad_token_id, batch_size=batch_size, device=device,
                      progress=progress, precision=precision)
    return Predictions(sentiment_probs=out.sentiment, topic_probs=out.topic, embeddings=out.embeddings,
                       truncated=truncated, n_tokens=n_tokens, intent_probs=out.intent)
