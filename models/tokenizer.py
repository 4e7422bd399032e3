"""Byte-level BPE tokenizer trained on our corpus, or a pretrained one from a checkpoint.

Saved as ``tokenizer.json`` (+ ``tokenizer_config.json``) and always loaded as a transformers
fast tokenizer with ``<|endoftext|>`` as bos/eos and a dedicated ``<|pad|>`` token, padding on the
**right**: GPT-2 derives position ids from ``arange``, so left padding shifts positions and
changes the logits (STACK_NOTES §4.3); pooling skips the pad positions via the attention mask.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

EOS, PAD = "<|endoftext|>", "<|pad|>"


def train_tokenizer(texts: Iterable[str], out_dir: Path, vocab_size: int = 8000, max_length: int = 128):
    """Train a byte-level BPE on ``texts`` and save it to ``out_dir``; returns the HF tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=PAD,
        model_max_length=max_length, padding_side="right",
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(out_dir))
    return hf


def load_tokenizer(name_or_path: str | Path, max_length: int | None = None):
    """Load a tokenizer from a local directory or a hub id (hub ids need the network or a cache).

    Pretrained GPT-2 tokenizers have no pad token: ``<|pad|>`` is added (the model's embedding
    matrix must then be resized, which :func:`models.backbone.load_backbone` does).
    """
    from transformers import AutoTokenizer

    local = Path(str(name_or_path)).is_dir()
    tok = AutoTokenizer.from_pretrained(str(name_or_path), local_files_only=local)
    if tok.pad_token is None:
        tok.add_special_tokens({"pad_token": PAD})
    if tok.eos_token is None:
        tok.add_special_tokens({"eos_token": EOS})
    tok.padding_side = "right"  # not saved by save_pretrained: set on every load
    if max_length:
        tok.model_max_length = max_length
    return tok
