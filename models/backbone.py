"""GPT-2 backbones: named presets built from scratch, or any local / hub checkpoint.

Presets (parameters counted with an 8k vocabulary):

| preset | layers | width | heads | context | params | use |
|---|---|---|---|---|---|---|
| ``tiny``  | 2 | 64  | 2 | 128 | ~0.6M | tests and CI |
| ``small`` | 4 | 256 | 4 | 128 | ~5.3M | demo and CPU benchmarks |
| ``base``  | 6 | 384 | 6 | 256 | ~14M  | a GPU worker |

Anything else is treated as a checkpoint: a local directory or a hub id (``gpt2``, ``distilgpt2``)
loaded through the same ``from_pretrained`` path in fp32 (transformers 5 defaults to the saved
dtype; CPU scoring wants fp32).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Preset:
    """Architecture of a from-scratch backbone."""

    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int


PRESETS: dict[str, Preset] = {
    "tiny": Preset(n_layer=2, n_embd=64, n_head=2, n_positions=128),
    "small": Preset(n_layer=4, n_embd=256, n_head=4, n_positions=128),
    "base": Preset(n_layer=6, n_embd=384, n_head=6, n_positions=256),
}


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
    if tokenizer is not None:
        if len(tokenizer) != model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def count_parameters(model) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
