"""Item vectors from a frozen backbone (models.item_vectors) on a tiny random Llama: no download.

What the recommender relies on: rows in input order, the width each pooling promises, a prompt
that changes the vectors, the backbone left untouched, and a narrower pooling cut out of wider
features equal to computing it directly (the benchmark tries every pooling from one pass).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.item_vectors import TITLE_PROMPT, ItemPooling, item_vectors, select_pooling

TEXTS = ["Stocks rally as rates fall", "Storm hits the coast", "", "New phone sells out in a day",
         "Team wins the final after extra time and penalties", "Oil slides"]


@pytest.fixture(scope="module")
def lm_tok(tmp_path_factory: pytest.TempPathFactory):
    from transformers import LlamaConfig, LlamaForCausalLM

    from models.tokenizer import train_tokenizer

    tok = train_tokenizer(TEXTS * 20 + [TITLE_PROMPT], Path(tmp_path_factory.mktemp("tok")), vocab_size=300,
                          max_length=64)
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                                      num_key_value_heads=2, max_position_embeddings=128, vocab_size=len(tok),
                                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                      bos_token_id=tok.bos_token_id))
    return lm.eval(), tok


def test_widths_order_and_frozen_backbone(lm_tok) -> None:
    lm, tok = lm_tok
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    for pooling in (ItemPooling(), ItemPooling((-1, -3), "mean"), ItemPooling((-2,), "mean+last"),
                    ItemPooling((-1,), "last", TITLE_PROMPT)):
        vecs = item_vectors(lm, tok, TEXTS, pooling, batch_size=2)
        assert vecs.shape == (len(TEXTS), pooling.width(32)) and vecs.dtype == np.float32
        assert np.isfinite(vecs).all()
        # Input order whatever the length bucketing did: each row equals that text embedded alone.
        for i in (0, 2, 4):
            alone = item_vectors(lm, tok, [TEXTS[i]], pooling)
            np.testing.assert_allclose(vecs[i], alone[0], rtol=1e-4, atol=1e-4)
    assert all(torch.equal(v, lm.state_dict()[k]) for k, v in before.items())
    assert item_vectors(lm, tok, [], ItemPooling((-1, -2), "mean+last")).shape == (0, 128)


def test_prompt_changes_the_vectors(lm_tok) -> None:
    lm, tok = lm_tok
    bare = item_vectors(lm, tok, TEXTS, ItemPooling((-1,), "last"))
    prompted = item_vectors(lm, tok, TEXTS, ItemPooling((-1,), "last", TITLE_PROMPT))
    assert not np.allclose(bare, prompted)


@pytest.mark.parametrize("wanted", [ItemPooling((-1,), "mean"), ItemPooling((-3,), "last"),
                                    ItemPooling((-3, -1), "mean+last"), ItemPooling((-1, -3), "mean")])
def test_cut_equals_direct(lm_tok, wanted: ItemPooling) -> None:
    lm, tok = lm_tok
    wide = ItemPooling((-1, -2, -3), "mean+last")
    feats = item_vectors(lm, tok, TEXTS, wide)
    direct = item_vectors(lm, tok, TEXTS, wanted)
    np.testing.assert_allclose(select_pooling(feats, wide, wanted, 32), direct, rtol=1e-4, atol=1e-4)


def test_bad_poolings_are_refused(lm_tok) -> None:
    with pytest.raises(ValueError, match="pooling must be"):
        ItemPooling((-1,), "max")
    with pytest.raises(ValueError, match="placeholder"):
        ItemPooling((-1,), "mean", "no placeholder")
    feats = np.zeros((2, 64), np.float32)
    with pytest.raises(ValueError, match="not computed"):
        select_pooling(feats, ItemPooling((-1,), "mean+last"), ItemPooling((-2,), "mean"), 32)
    with pytest.raises(ValueError, match="same prompt"):
        select_pooling(feats, ItemPooling((-1,), "mean+last"), ItemPooling((-1,), "mean", TITLE_PROMPT), 32)
    with pytest.raises(ValueError, match="cannot be cut"):
        select_pooling(feats[:, :32], ItemPooling((-1,), "mean"), ItemPooling((-1,), "last"), 32)
