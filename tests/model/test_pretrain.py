"""Causal-LM pretraining (packing, learning, checkpoints, resume) and text generation, offline.

Tiny backbones and a BPE trained on made-up sentences; every run takes a second or two.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

import models.pretrain as pretrain_mod
from models.backbone import build_backbone
from models.generate import generate_text
from models.multihead import HeadsConfig, from_backbone
from models.pretrain import PretrainConfig, latest_checkpoint, pack_tokens, pretrain
from models.tokenizer import train_tokenizer

COMPANIES = ["Acme", "Globex", "Initech", "Hooli", "Vandelay", "Stark", "Wayne", "Tyrell"]
TEMPLATES = ["{co} profit rose in the third quarter", "{co} shares fell after the report",
             "Analysts expect {co} revenue to grow this year", "{co} said sales were flat",
             "Investors sold {co} stock on Monday", "{co} will report earnings next week"]


def _texts(n: int, seed: int) -> list[str]:
    r = random.Random(seed)
    return [r.choice(TEMPLATES).format(co=r.choice(COMPANIES)) for _ in range(n)]


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory):
    """A small BPE trained on the made-up corpus."""
    return train_tokenizer(_texts(300, 0), tmp_path_factory.mktemp("tok"), vocab_size=300, max_length=64)


def _lm(tok, seed: int = 0):
    torch.manual_seed(seed)
    return build_backbone("tiny", tok)


def _cfg(**kw) -> PretrainConfig:
    base = dict(max_steps=20, batch_size=8, block_size=32, lr=3e-3, warmup_steps=2, eval_every=10, eval_batches=2,
                checkpoint_every=10)
    return PretrainConfig(**{**base, **kw})


def test_pack_tokens_puts_eos_between_texts(tok) -> None:
    texts = ["Acme profit rose", "", "Globex shares fell", "Hooli"]
    stream = pack_tokens(tok, texts)
    assert stream.dtype == np.uint32
    eos_at = np.flatnonzero(stream == tok.eos_token_id)
    assert len(eos_at) == 3 and eos_at[-1] == len(stream) - 1  # one per non-empty text
    pieces = np.split(stream, eos_at + 1)[:-1]
    assert [tok.decode(p[:-1].tolist()) for p in pieces] == ["Acme profit rose", "Globex shares fell", "Hooli"]
    assert pack_tokens(tok, []).size == 0


def test_short_pretrain_reduces_val_loss(tok, tmp_path: Path) -> None:
    res = pretrain(_lm(tok), tok, _texts(400, 1), _texts(40, 2), _cfg(max_steps=60, eval_every=30), tmp_path / "ck",
                   progress=False)
    assert res.steps == 60 and res.resumed_from == 0
    assert res.history[0]["step"] == 0 and res.val_loss < res.history[0]["val_loss"] - 1.0
    assert res.val_perplexity == pytest.approx(np.exp(res.val_loss))
    assert res.val_perplexity_before == pytest.approx(res.history[0]["val_perplexity"])  # same windows
    assert res.tokens_seen == 60 * 8 * 32 and res.tokens_per_s > 0
    assert (tmp_path / "ck" / "model" / "model.safetensors").is_file()
    state = torch.load(tmp_path / "ck" / "state.pt", weights_only=True)
    assert state["step"] == 60 and "optimizer" in state and "rng" in state


def test_bf16_autocast_on_cpu_trains(tok, tmp_path: Path) -> None:
    """precision="bf16" (what the probe picks on CPUs with fast bf16) learns like fp32 does."""
    res = pretrain(_lm(tok), tok, _texts(400, 1), _texts(40, 2), _cfg(max_steps=40, eval_every=40, precision="bf16"),
                   tmp_path / "ck", progress=False)
    assert np.isfinite(res.val_loss) and res.val_loss < res.history[0]["val_loss"] - 0.5


def test_resume_continues_from_checkpoint(tok, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    first = pretrain(_lm(tok), tok, _texts(200, 1), _texts(20, 2), _cfg(), ck, progress=False)
    assert first.steps == 20 and first.resumed_from == 0
    # Leftovers of a run killed while saving step 30: a half-written temp dir and a dir with no state.
    (ck / ".tmp-ckpt-000030-999" / "model").mkdir(parents=True)
    (ck / ".tmp-ckpt-000030-999" / "state.pt").write_bytes(b"\x80garbage")
    (ck / "ckpt-000030" / "model").mkdir(parents=True)
    (ck / "ckpt-000030" / "model" / "config.json").write_text("{", encoding="utf-8")

    second = pretrain(_lm(tok, seed=1), tok, _texts(200, 1), _texts(20, 2), _cfg(max_steps=40), ck, progress=False)
    assert second.resumed_from == 20 and second.steps == 40
    # "before" of a resumed run is the checkpoint it resumed from, on this run's held-out windows
    assert second.val_perplexity_before == pytest.approx(first.val_perplexity, rel=1e-4)
    assert [h["step"] for h in second.history] == [0, 10, 20, 30, 40]
    assert second.tokens_seen == 40 * 8 * 32
    assert not list(ck.glob(".tmp-*")) and latest_checkpoint(ck).name == "ckpt-000040"


def test_kill_mid_save_keeps_previous_checkpoint_and_resume_matches(tok, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    texts, val = _texts(200, 1), _texts(20, 2)
    straight = pretrain(_lm(tok), tok, texts, val, _cfg(), tmp_path / "a", progress=False)

    real_save, calls = torch.save, []

    def dying_save(obj, f, *args, **kwargs):  # the second checkpoint dies half-way through state.pt
        calls.append(f)
        if len(calls) == 2:
            Path(f).write_bytes(b"\x80partial")
            raise KeyboardInterrupt("killed")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(pretrain_mod.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_lm(tok), tok, texts, val, _cfg(), tmp_path / "b", progress=False)
    monkeypatch.setattr(pretrain_mod.torch, "save", real_save)
    assert latest_checkpoint(tmp_path / "b").name == "ckpt-000010"

    resumed = pretrain(_lm(tok, seed=5), tok, texts, val, _cfg(), tmp_path / "b", progress=False)
    assert resumed.resumed_from == 10 and resumed.steps == 20
    # Weights, optimizer, schedule and RNG streams all restored: same result as never stopping.
    assert resumed.val_loss == pytest.approx(straight.val_loss, abs=1e-4)
    assert resumed.train_loss == pytest.approx(straight.train_loss, abs=1e-4)


def test_generate_from_pretrain_checkpoint_and_multihead_dir(tok, tmp_path: Path) -> None:
    pretrain(_lm(tok), tok, _texts(300, 1), _texts(20, 2), _cfg(max_steps=40), tmp_path / "ck", progress=False)
    prompt = "Acme profit"
    text = generate_text(tmp_path / "ck" / "model", prompt, max_new_tokens=12, seed=3)
    assert isinstance(text, str) and text.startswith(prompt) and len(text) > len(prompt)
    assert generate_text(tmp_path / "ck" / "model", prompt, max_new_tokens=12, seed=3) == text  # seeded
    greedy = generate_text(tmp_path / "ck", prompt, max_new_tokens=12, temperature=0)  # ckpt dir accepted
    assert greedy == generate_text(tmp_path / "ck" / "model", prompt, max_new_tokens=12, temperature=0.0)

    mh = from_backbone(_lm(tok), HeadsConfig(topic_labels=["earnings", "markets"]))
    mh.save(tmp_path / "mh", tok)
    out = generate_text(tmp_path / "mh", prompt, max_new_tokens=8)
    assert out.startswith(prompt)
    assert generate_text(tmp_path / "mh", "", max_new_tokens=5).__class__ is str


def test_time_budget_says_it_stopped_training(tok, tmp_path: Path) -> None:
    """A budget that ends training before max_steps is reported as such (issue 18: 179/400 with no word why)."""
    res = pretrain(_lm(tok), tok, _texts(200, 1), _texts(40, 2), _cfg(max_steps=400, time_budget_s=0.0),
                   tmp_path / "ck", progress=False)
    assert res.steps < 400 and res.stopped_by == "time_budget" and res.max_steps == 400
    full = pretrain(_lm(tok), tok, _texts(200, 1), _texts(40, 2), _cfg(max_steps=5), tmp_path / "ck2", progress=False)
    assert full.steps == 5 and full.stopped_by == "max_steps"
