"""Text generation from a saved backbone: a MultiHeadGPT directory or a pretraining checkpoint.

Both layouts hold a GPT-2 ``config.json``, safetensors weights whose backbone keys start with
``transformer.`` and the tokenizer files. A ``GPT2LMHeadModel`` is built from the config and only
the transformer weights are loaded: GPT-2 ties its LM head to the token embeddings (``wte``), so
a MultiHeadGPT directory, which stores no LM head, can still generate (its head weights
``sentiment.*``/``topic.*`` are simply skipped). A pretraining ``ckpt_dir`` itself is accepted too
(its ``model`` link is followed).
"""

from __future__ import annotations

from pathlib import Path

import torch


def _resolve(model_dir: Path) -> Path:
    """The directory holding ``config.json``: ``model_dir`` itself or its ``model`` subdirectory."""
    model_dir = Path(model_dir)
    if (model_dir / "config.json").is_file():
        return model_dir
    if (model_dir / "model" / "config.json").is_file():
        return model_dir / "model"
    raise FileNotFoundError(f"no config.json in {model_dir} (nor in {model_dir / 'model'})")


def load_lm(model_dir: Path):
    """``(GPT2LMHeadModel in eval mode on CPU, tokenizer)`` from a saved directory (see module doc)."""
    from safetensors.torch import load_file
    from transformers import GPT2Config, GPT2LMHeadModel

    from models.tokenizer import load_tokenizer

    model_dir = _resolve(model_dir)
    config = GPT2Config.from_json_file(str(model_dir / "config.json"))
    model = GPT2LMHeadModel(config)
    state: dict[str, torch.Tensor] = {}
    for f in sorted(model_dir.glob("model*.safetensors")):
        state.update(load_file(str(f)))
    backbone = {k: v for k, v in state.items() if k.startswith("transformer.")}
    if not backbone:
        raise ValueError(f"no transformer.* weights in {model_dir}")
    missing, _ = model.load_state_dict(backbone, strict=False)
    if set(missing) - {"lm_head.weight"}:
        raise RuntimeError(f"weights missing from {model_dir}: {sorted(missing)[:5]}")
    if "lm_head.weight" in state and not config.tie_word_embeddings:
        model.lm_head.weight.data.copy_(state["lm_head.weight"])
    model.tie_weights()  # lm_head <- wte (GPT-2 default)
    return model.eval(), load_tokenizer(model_dir)


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
    kept verbatim in the result; only its last ``n_positions - max_new_tokens`` tokens condition
    the model when it is longer than the context. An empty prompt starts from ``<|endoftext|>``.
    """
    model, tok = load_lm(model_dir)
    n_positions = int(model.config.n_positions)
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
