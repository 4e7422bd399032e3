"""Any local checkpoint loads through the same path as a hub id would (no network in tests)."""

from __future__ import annotations

from pathlib import Path

import torch

from models.backbone import build_backbone, load_backbone
from models.experiment import _backbone
from models.tokenizer import load_tokenizer, train_tokenizer

TEXTS = [f"Company {i} reports quarterly results and shares move" for i in range(200)]


def test_local_gpt2_checkpoint_loads_as_base(tmp_path: Path) -> None:
    tok = train_tokenizer(TEXTS, tmp_path / "tok", vocab_size=300)
    lm = build_backbone("tiny", tok)
    ckpt = tmp_path / "my-gpt2"
    lm.save_pretrained(str(ckpt))
    tok.save_pretrained(str(ckpt))
    assert not list(ckpt.glob("*.bin")) and (ckpt / "model.safetensors").exists()

    loaded, tok2, desc = _backbone(str(ckpt), TEXTS, tmp_path / "work", vocab_size=300)
    assert desc == f"checkpoint:{ckpt}"
    batch = tok2(["Company 7 reports"], return_tensors="pt")
    with torch.no_grad():
        a = lm.eval()(**batch).logits
        b = loaded.eval()(**batch).logits
    assert torch.allclose(a, b, atol=1e-6)


def test_checkpoint_without_pad_token_gets_one(tmp_path: Path) -> None:
    """Pretrained GPT-2 tokenizers have no pad token: one is added and the embeddings resized."""
    tok = train_tokenizer(TEXTS, tmp_path / "tok", vocab_size=300)
    lm = build_backbone("tiny", tok)
    ckpt = tmp_path / "nopad"
    lm.save_pretrained(str(ckpt))
    tok.pad_token = None
    tok.save_pretrained(str(ckpt))
    tok2 = load_tokenizer(ckpt)
    assert tok2.pad_token is not None and tok2.padding_side == "right"
    model = load_backbone(ckpt, tok2)
    assert model.get_input_embeddings().num_embeddings == len(tok2)
    assert model.config.pad_token_id == tok2.pad_token_id
