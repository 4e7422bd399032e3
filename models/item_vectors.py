"""Item vectors for the click model from a frozen pretrained backbone (SmolLM2-135M and the like).

The click model (:mod:`models.click`) reads one frozen vector per item. It used to be whatever
the champion stored in ``embeddings``; this module says *how* a backbone's hidden states become
that vector, so the recommender can ask for the pooling that ranks clicks best rather than the
one the sentiment heads happen to want:

* :class:`ItemPooling`: which hidden-state layers (``-1`` = the normed last layer), pooled how
  (``mean`` over real tokens, the ``last`` real token, or ``mean+last``), over which text
  (``prompt``, a template with one ``{text}``, or the bare title);
* :func:`item_vectors`: one forward pass per batch of texts, the backbone never updated, through
  the same length-bucketed, prefix-sharing batched inference the score flow uses
  (:func:`models.predict.predict_ids`), so the vectors of a stored model version are exactly
  reproducible;
* :func:`select_pooling`: cut a narrower pooling out of features computed for a wider one (one
  pass of ``mean+last`` over six layers gives every single-layer and concatenated choice), which
  is how the benchmark tries pooling choices without a forward pass each.

Nothing here knows about DuckDB or Prefect; callers store the vectors (keyed by article and
model version) and compute only what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# PromptEOL (Jiang et al. 2023): a decoder's last-token state after "... means in one word:" is a
# far better sentence vector than its mean over the bare text; a headline variant of it.
TITLE_PROMPT = 'This news headline: "{text}" means in one word:"'
POOLINGS = ("mean", "last", "mean+last")


@dataclass(frozen=True)
class ItemPooling:
    """How hidden states become one item vector: layers, per-layer pooling and an optional prompt."""

    layers: tuple[int, ...] = (-1,)  # hidden_states indices; -1 = the normed last layer
    pooling: str = "mean"  # mean | last | mean+last (both, concatenated per layer)
    prompt: str | None = None  # a template with one {text}; None = the bare text

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {self.pooling!r}")
        if not self.layers:
            raise ValueError("an item pooling needs at least one layer")
        if self.prompt is not None and self.prompt.count("{text}") != 1:
            raise ValueError(f"a prompt needs exactly one {{text}} placeholder: {self.prompt!r}")

    @property
    def per_layer(self) -> int:
        """Vectors of width ``d`` per layer: 2 for ``mean+last``, else 1."""
        return 2 if self.pooling == "mean+last" else 1

    def width(self, d: int) -> int:
        """Length of the item vector for a backbone of hidden size ``d``."""
        return d * len(self.layers) * self.per_layer

    def name(self) -> str:
        """A short stable label, e.g. ``mean@-1,-9`` or ``last@-1+prompt`` (for tables and card notes)."""
        layers = ",".join(str(i) for i in self.layers)
        return f"{self.pooling}@{layers}" + ("+prompt" if self.prompt else "")


def item_vectors(model, tokenizer, texts: list[str], pooling: ItemPooling, *, max_length: int = 48,
                 batch_size: int = 32, device: str = "cpu", precision: str | None = None,
                 progress: bool = False) -> np.ndarray:
    """``(N, pooling.width(d))`` float32 item vectors of ``texts`` from a frozen causal LM.

    ``model`` is a Hugging Face causal LM or a :class:`~models.multihead.MultiHeadGPT` (its LM is
    used, its heads ignored); it is only read. Texts are cut to ``max_length`` tokens (titles fit
    in 48); the prompt's tokens come on top. Rows come back in input order.
    """
    from models.multihead import HeadsConfig, from_backbone
    from models.predict import encode_texts, predict_ids

    lm = model.causal_lm() if hasattr(model, "causal_lm") else model
    # A throwaway head set over the shared LM: its pooling is what the features are; the linear
    # heads it carries are never read.
    reader = from_backbone(lm, HeadsConfig(pooling=pooling.pooling, pool_layers=list(pooling.layers),
                                           prompt=pooling.prompt, dropout=0.0))
    if not len(texts):
        return np.zeros((0, reader.feature_size), dtype=np.float32)
    ids, _, _ = encode_texts(tokenizer, texts, max_length, pooling.prompt)
    feats = predict_ids(reader, ids, tokenizer.pad_token_id, batch_size=batch_size, device=device,
                        progress=progress, precision=precision, features=True).embeddings
    return feats


def select_pooling(features: np.ndarray, computed: ItemPooling, wanted: ItemPooling, d: int) -> np.ndarray:
    """The columns of ``wanted`` cut out of ``features`` that were computed for ``computed``.

    Both must share the prompt; every wanted layer must be among the computed ones and the wanted
    pooling must be part of the computed one (``mean`` or ``last`` out of ``mean+last``). Returns a
    view-free copy ``(N, wanted.width(d))``.
    """
    if wanted.prompt != computed.prompt:
        raise ValueError("a pooling can only be cut from features computed over the same prompt")
    if computed.pooling != "mean+last" and wanted.pooling != computed.pooling:
        raise ValueError(f"{wanted.pooling} cannot be cut from {computed.pooling} features")
    if features.shape[1] != computed.width(d):
        raise ValueError(f"features have {features.shape[1]} columns, {computed.name()} needs {computed.width(d)}")
    parts = []
    for layer in wanted.layers:
        if layer not in computed.layers:
            raise ValueError(f"layer {layer} was not computed ({computed.name()})")
        base = computed.layers.index(layer) * computed.per_layer * d
        kinds = ("mean", "last") if wanted.pooling == "mean+last" else (wanted.pooling,)
        for kind in kinds:
            # Within a computed mean+last block the mean comes first (MultiHeadGPT.pool).
            off = base + (d if computed.pooling == "mean+last" and kind == "last" else 0)
            parts.append(features[:, off : off + d])
    return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)
