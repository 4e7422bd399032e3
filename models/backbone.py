"""Backbones: the project's own GPT-2 presets, or any causal-LM checkpoint through the Auto classes.

Presets (parameters counted with an 8k vocabulary):

| preset | layers | width | heads | context | params | use |
|---|---|---|---|---|---|---|
| ``tiny``  | 2 | 64  | 2 | 128 | ~0.6M | tests and CI |
| ``small`` | 4 | 256 | 4 | 128 | ~5.3M | tests, and the distilled CPU student |
| ``base``  | 6 | 384 | 6 | 256 | ~14M  | a GPU worker |

Anything else is a checkpoint directory (GPT-2, Llama, GPT-NeoX, ... anything
``AutoModelForCausalLM`` knows), loaded in fp32 (transformers 5 defaults to the saved dtype;
CPU scoring and training want fp32 weights, autocast decides the compute precision). Which names
resolve to which directory is :mod:`models.catalogue`'s job.

Nothing here may assume GPT-2 attribute names: code asks :func:`hidden_size`,
:func:`context_length` and :func:`num_layers`, which read the config's standard names
(``hidden_size``, ``max_position_embeddings``, ``num_hidden_layers``; GPT-2 maps them too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Preset:
    """Architecture of a from-scratch GPT-2 backbone."""

    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int


PRESETS: dict[str, Preset] = {
    "tiny": Preset(n_layer=2, n_embd=64, n_head=2, n_positions=128),
    "small": Preset(n_layer=4, n_embd=256, n_head=4, n_positions=128),
    "base": Preset(n_layer=6, n_embd=384, n_head=6, n_positions=256),
}

# peft LoRA targets per architecture (config.model_type); others get peft's "all-linear"
# (every Linear but the output layer). GPT-2 uses Conv1D, whose weight is stored transposed.
LORA_TARGETS: dict[str, list[str]] = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}
FAN_IN_FAN_OUT = {"gpt2"}


def hidden_size(config) -> int:
    """Width of the hidden states (``n_embd`` on GPT-2, ``hidden_size`` elsewhere)."""
    return int(config.hidden_size)


def context_length(config) -> int:
    """Positions the model can attend over (``n_positions`` on GPT-2)."""
    return int(config.max_position_embeddings)


def num_layers(config) -> int:
    """Transformer blocks (``n_layer`` on GPT-2)."""
    return int(config.num_hidden_layers)


LARGE_PRETRAINED = 30_000_000  # non-embedding parameters from which frozen features and prompts pay off


def is_large_pretrained(name_or_path: str) -> bool:
    """True for a checkpoint directory of a model with >= 30M non-embedding parameters.

    Such a model (SmolLM2-135M: ~120M) gives frozen features worth a linear probe and follows an
    instruction prompt; our own presets, even after domain pretraining (``small``: ~3M), do neither
    and are fine-tuned fully on plain text. Estimated from the config (12 x layers x width^2).
    """
    import json

    path = Path(str(name_or_path)) / "config.json"
    if str(name_or_path) in PRESETS or not path.is_file():
        return False
    cfg = json.loads(path.read_text(encoding="utf-8"))
    width = cfg.get("hidden_size", cfg.get("n_embd", 0))
    layers = cfg.get("num_hidden_layers", cfg.get("n_layer", 0))
    return 12 * layers * width * width >= LARGE_PRETRAINED


def lora_targets(config) -> tuple[list[str] | str, bool]:
    """``(target_modules, fan_in_fan_out)`` for peft's ``LoraConfig`` on this architecture."""
    kind = getattr(config, "model_type", "")
    return LORA_TARGETS.get(kind, "all-linear"), kind in FAN_IN_FAN_OUT


def build_backbone(preset: str, tokenizer, dropout: float = 0.1):
    """A randomly initialised ``GPT2LMHeadModel`` of a preset, sized to ``tokenizer``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    p = PRESETS[preset]
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=p.n_positions, n_embd=p.n_embd, n_layer=p.n_layer,
        n_head=p.n_head, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


def load_backbone(name_or_path: str | Path, tokenizer=None):
    """Load a causal-LM checkpoint (local dir or hub id) in fp32; resize to ``tokenizer`` if given."""
    import torch
    from transformers import AutoModelForCausalLM

    local = Path(str(name_or_path)).is_dir()
    model = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=torch.float32, local_files_only=local)
    if getattr(model.config, "quantization_config", None):  # weights are de-quantised fp32 by now
        delattr(model.config, "quantization_config")
        model.hf_quantizer = None
    if tokenizer is not None:
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def count_parameters(model, trainable_only: bool = False) -> int:
    """Number of parameters (tied weights counted once); ``trainable_only`` counts what trains."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def truncate_backbone(lm, n_layers: int):
    """``lm`` (a causal LM, changed in place and returned) cut to its first ``n_layers`` blocks.

    The student initialisation of DistilBERT / "shrink and fine-tune": the lower blocks of a
    pretrained model keep its embeddings, tokenizer and much of what it learned, at
    ``n_layers / L`` of its per-token compute. Works for Llama-style (``model.layers``) and GPT-2
    (``transformer.h``) models; the config is updated so the directory it is saved to reloads as is.
    """
    from torch import nn

    base = lm.base_model
    attr = "layers" if hasattr(base, "layers") else "h"
    blocks = getattr(base, attr)
    if not 1 <= n_layers <= len(blocks):
        raise ValueError(f"the teacher has {len(blocks)} layers: a student needs 1 to {len(blocks)}, not {n_layers}")
    setattr(base, attr, nn.ModuleList(list(blocks)[:n_layers]))
    config = lm.config
    config.num_hidden_layers = n_layers  # GPT2Config maps n_layer to it
    if getattr(config, "layer_types", None):
        config.layer_types = list(config.layer_types)[:n_layers]
    return lm
