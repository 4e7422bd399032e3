"""The frozen-backbone recipe: pooled features of a pretrained LM once, then linear heads.

The cheapest transfer there is and the CPU default: the backbone is never updated, so one
forward pass per training text (no backward, bf16 where the machine's probe allows) gives the
features, and each head is a multinomial logistic regression on them (scikit-learn, regularisation
``C`` chosen on validation macro-F1). On a 135M model and PhraseBank this takes minutes on 2 cores
where LoRA takes ~20 and full fine-tuning ~35; a GPU worker would rather run ``lora``/``full``.

Features are the hidden states of several layers (``heads.pool_layers``, e.g. -1, -9 and -16 of a
30-layer model), each pooled two ways (``FROZEN_POOLING``: the mean over tokens and the last
token, which closes the prompt and so reads like the model's answer to it), concatenated. Their scales differ by layer (Llama's middle layers
have a few huge activation dimensions), so each is standardised before the regression; the
standardisation is folded into the head's weights afterwards (``W' = W / s``,
``b' = b - W' . m``), so at scoring time the head is one plain ``nn.Linear`` on raw features and
the saved model is an ordinary :class:`~models.multihead.MultiHeadGPT`. The LM is untouched, so
``generate`` from a frozen-recipe model is exactly the pretrained model.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models.multihead import IGNORE, MultiHeadGPT
from models.predict import encode_texts, predict_ids, text_budget

# Measured on PhraseBank 50Agree (3 seeds, SmolLM2, prompt, layers -1/-9/-16, 48 tokens): the
# mean alone 0.773 macro-F1, the last token alone 0.761, both 0.792 (golden set 0.726 -> 0.765);
# validation picked C = 0.003-0.01, at the low end of the old grid, so the grid reaches lower.
FROZEN_POOLING = "mean+last"
C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1)


def extract_features(model: MultiHeadGPT, tokenizer, texts: list[str], *, max_length: int,
                     batch_size: int = 32, device: str = "cpu", precision: str | None = None,
                     progress: bool = False) -> tuple[np.ndarray, int]:
    """What the heads read for ``texts``: ``(features (N, model.feature_size) float32 in input
    order, tokens read)``, the token count (prompt + text, no padding) for throughput figures."""
    ids, _, _ = encode_texts(tokenizer, texts, max_length, model.heads.prompt)
    feats = predict_ids(model, ids, tokenizer.pad_token_id, batch_size=batch_size, device=device,
                        progress=progress, precision=precision, features=True).embeddings
    return feats, sum(len(r) for r in ids)


def fit_head(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
             n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """A logistic-regression head on standardised features, ``C`` picked on validation macro-F1.

    Returns ``(weight (C, D), bias (C,), info)`` for raw (unstandardised) features; classes
    absent from train get a very low bias so they are never predicted.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0) + 1e-6
    z_train, z_val = (x_train - mean) / std, (x_val - mean) / std
    best = None
    grid = []
    # Smallest C first, each fit starting from the previous solution (warm start): the path of
    # solutions is smooth in C, so later fits take a fraction of the iterations of a cold start.
    clf = LogisticRegression(C=C_GRID[0], max_iter=3000, random_state=seed, warm_start=True)
    for c in sorted(C_GRID):
        clf.set_params(C=c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning on the loosest C: judged on validation anyway
            clf.fit(z_train, y_train)
        score = float(f1_score(y_val, clf.predict(z_val), average="macro")) if len(y_val) else -float(c)
        grid.append({"C": c, "val_macro_f1": score})
        if best is None or score > best[0]:
            best = (score, c, clf.coef_.copy(), clf.intercept_.copy())
    score, c, coef, intercept = best
    classes = clf.classes_
    weight = np.zeros((n_classes, x_train.shape[1]), dtype=np.float64)
    bias = np.full(n_classes, -30.0, dtype=np.float64)
    if len(classes) == 2:  # sklearn's binary form: one row for class 1
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    for row, cls in enumerate(classes):
        weight[int(cls)] = coef[row] / std
        bias[int(cls)] = intercept[row] - (coef[row] / std) @ mean
    return weight.astype(np.float32), bias.astype(np.float32), {"C": c, "val_macro_f1": score, "grid": grid}


def fit_frozen(model: MultiHeadGPT, tokenizer, train: pd.DataFrame, val: pd.DataFrame, *, max_length: int,
               out_dir: Path, batch_size: int = 32, precision: str | None = None, seed: int = 0,
               progress: bool = True) -> dict:
    """Fit every head of ``model`` on frozen features of ``train``; save to ``out_dir``.

    ``train``/``val`` have ``text`` and one column per head (label names, None when
    unlabelled). Returns a summary: per-head ``C`` and validation macro-F1, seconds spent on
    features and on fitting, tokens per second of the feature pass.
    """
    from models.train import HEADS, encode_labels

    device = "cuda" if torch.cuda.is_available() else "cpu"
    max_length = text_budget(model, tokenizer, max_length)
    model.heads.max_length, model.heads.recipe = max_length, "frozen"
    for p in model.causal_lm().parameters():
        p.requires_grad_(False)
    t0 = time.perf_counter()
    labelled = train[[h for h in HEADS if h in train]].notna().any(axis=1)
    train = train[labelled].reset_index(drop=True)
    texts = train.text.tolist() + val.text.tolist()
    feats, n_tokens = extract_features(model, tokenizer, texts, max_length=max_length, batch_size=batch_size,
                                       device=device, precision=precision, progress=progress)
    feature_s = time.perf_counter() - t0
    x_train, x_val = feats[: len(train)], feats[len(train):]
    summary: dict = {"heads": {}, "feature_seconds": round(feature_s, 1),
                     "feature_tokens_per_s": round(n_tokens / max(feature_s, 1e-9)), "precision": precision}
    for head in HEADS:
        labels = getattr(model.heads, f"{head}_labels")
        layer = getattr(model, head)
        if not labels or layer is None or head not in train:
            continue
        y_tr = encode_labels(train[head], labels)
        y_va = encode_labels(val[head], labels) if head in val else np.full(len(val), IGNORE)
        keep_tr, keep_va = y_tr != IGNORE, y_va != IGNORE
        if len(set(y_tr[keep_tr].tolist())) < 2:
            continue  # nothing to learn for this head: it keeps its initial weights
        w, b, info = fit_head(x_train[keep_tr], y_tr[keep_tr], x_val[keep_va], y_va[keep_va], len(labels), seed)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(w))
            layer.bias.copy_(torch.from_numpy(b))
        summary["heads"][head] = info
    summary["fit_seconds"] = round(time.perf_counter() - t0 - feature_s, 1)
    model.eval()
    model.save(Path(out_dir), tokenizer)
    return summary
