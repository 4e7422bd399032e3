"""Text generation from a saved causal LM: a registered model version, a pretraining checkpoint or
a catalogue backbone (all are Hugging Face causal-LM directories).

A model version keeps its backbone's LM head (:mod:`models.multihead`), so a fine-tuned model
still writes text: with the frozen recipe it is the pretrained LM itself; LoRA and full
fine-tuning train with GPT-1's auxiliary LM loss so that its perplexity stays near the base's.
A pretraining ``ckpt_dir`` itself is accepted too (its ``model`` link is followed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from models.backbone import context_length


def _resolve(model_dir: Path) -> Path:
    """The directory holding ``config.json``: ``model_dir`` itself or its ``model`` subdirectory."""
    model_dir = Path(model_dir)
    if (model_dir / "config.json").is_file():
        return model_dir
    if (model_dir / "model" / "config.json").is_file():
        return model_dir / "model"
    raise FileNotFoundError(f"no config.json in {model_dir} (nor in {model_dir / 'model'})")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' per-load progress bars and unexpected-key notes for the duration."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_causal_lm(model_dir: Path):
    """The ``AutoModelForCausalLM`` saved in ``model_dir`` (fp32, CPU, eval mode).

    Extra tensors in the weights file (heads of directories from before ``heads.safetensors``)
    are ignored; tied LM heads are re-tied by transformers.
    """
    from transformers import AutoModelForCausalLM

    model_dir = _resolve(model_dir)
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, local_files_only=True)
    return model.eval()


def load_lm(model_dir: Path):
    """``(causal LM in eval mode on CPU, tokenizer)`` from a saved directory (see module doc)."""
    from models.tokenizer import load_tokenizer

    model_dir = _resolve(model_dir)
    return load_causal_lm(model_dir), load_tokenizer(model_dir)


def generate_text(
    model_dir: Path,
    prompt: str,
    *,
    max_new_tokens: int = 40,
    top_p: float = 0.9,
    temperature: float = 0.8,
    seed: int = 0,
) -> str:
    """``prompt`` followed by up to ``max_new_tokens`` sampled tokens (nucleus sampling).

    ``temperature <= 0`` decodes greedily. The same ``seed`` gives the same text. The prompt is
    kept verbatim in the result; only its last ``context - max_new_tokens`` tokens condition
    the model when it is longer than the context. An empty prompt starts from the eos token.
    """
    model, tok = load_lm(model_dir)
    n_positions = context_length(model.config)
    max_new_tokens = max(0, min(int(max_new_tokens), n_positions - 1))
    ids = tok(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    ids = ids[-(n_positions - max_new_tokens):] or [tok.eos_token_id]  # (T,), fits the context
    if max_new_tokens == 0:
        return prompt
    input_ids = torch.tensor([ids], dtype=torch.long)  # (1, T)
    # top_k=0 turns off the default top-k filter: pure nucleus sampling. temperature <= 0: greedy.
    sampling = {"do_sample": True, "top_p": top_p, "temperature": temperature, "top_k": 0}
    kwargs = sampling if temperature > 0 else {"do_sample": False}
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                             max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id, **kwargs)  # (1, T + new)
    new = out[0, input_ids.shape[1]:].tolist()
    return prompt + tok.decode(new, skip_special_tokens=True)


def perplexity(model, tokenizer, texts: list[str], *, max_length: int = 128, batch_size: int = 16) -> float:
    """exp(mean next-token loss) of a causal LM over ``texts`` (each cut to ``max_length`` tokens).

    Tokens are weighted equally across texts (right padding masked out), so a held-out set's
    perplexity before and after fine-tuning can be compared directly.
    """
    from torch.nn import functional as F

    from models.predict import encode_texts, pad_batch

    ids, _, _ = encode_texts(tokenizer, texts, min(max_length, context_length(model.config)))
    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for s in range(0, len(ids), batch_size):
            input_ids, mask = pad_batch(ids[s:s + batch_size], tokenizer.pad_token_id)  # (B, T)
            if input_ids.size(1) < 2:
                continue
            logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1]  # (B, T-1, V)
            targets = input_ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100,
                                   reduction="sum")
            total, count = total + float(loss), count + int((targets != -100).sum())
    if count == 0:
        raise ValueError("texts give no next-token targets (all shorter than 2 tokens)")
    return float(torch.exp(torch.tensor(total / count)))
