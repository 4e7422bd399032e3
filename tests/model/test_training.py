"""Fine-tuning, inference and behaviour of the multi-head GPT on tiny, locally built models.

Everything is offline: a byte-level BPE is trained on made-up sentences, the backbone is the
``tiny`` preset (2 layers, 64 wide). The behavioural test trains on ~600 synthetic finance
sentences and checks negation flips and company-name invariance on held-out names.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import models.train as train_mod
from models.backbone import build_backbone
from models.multihead import IGNORE, HeadsConfig, MultiHeadGPT, from_backbone
from models.predict import predict
from models.tokenizer import train_tokenizer
from models.train import TrainConfig, encode_labels, finetune

COMPANIES = ["Acme", "Globex", "Initech", "Hooli", "Vandelay", "Stark", "Wayne", "Tyrell"]
VERBS = {"positive": "rose sharply", "negative": "fell sharply", "neutral": "was flat"}
TOPICS = {"earnings": "quarterly profit", "markets": "share price"}


def _corpus(n: int = 400) -> list[str]:
    """Made-up news sentences for the tokenizer."""
    r = random.Random(0)
    words = ["rose", "fell", "was", "flat", "sharply", "profit", "share", "price", "quarterly", "bank", "said",
             "the", "on", "in", "report", "market", "investors", "growth", "loss", "today"]
    return [f"{r.choice(COMPANIES)} " + " ".join(r.choice(words) for _ in range(r.randint(3, 12))) for _ in range(n)]


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory):
    """A small BPE trained on the made-up corpus (max length 64)."""
    return train_tokenizer(_corpus(), tmp_path_factory.mktemp("tok"), vocab_size=400, max_length=64)


def _model(tok, topics: list[str] | None = None, dropout: float = 0.1, seed: int = 0) -> MultiHeadGPT:
    """A tiny multi-head model with sentiment + the given topic head."""
    torch.manual_seed(seed)
    heads = HeadsConfig(topic_labels=list(TOPICS) if topics is None else topics, dropout=dropout)
    return from_backbone(build_backbone("tiny", tok, dropout=dropout), heads)


def _labelled() -> pd.DataFrame:
    """24 rows (4 companies x 3 sentiments x 2 topics), both heads labelled."""
    rows = [(f"{co} {TOPICS[t]} {VERBS[s]}", s, t) for co in COMPANIES[:4] for s in VERBS for t in TOPICS]
    return pd.DataFrame(rows, columns=["text", "sentiment", "topic"])


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------- training
def test_overfits_small_labelled_set(tok, tmp_path: Path) -> None:
    df = _labelled()
    model = _model(tok, dropout=0.0)
    cfg = TrainConfig(epochs=40, batch_size=8, lr=3e-3, patience=40, warmup_ratio=0.05)
    res = finetune(model, tok, df, df, cfg, tmp_path / "m", progress=False)
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < 0.2 * losses[0]
    assert res.best_score == 1.0 and res.device == "cpu" and res.tokens_per_s > 0
    assert set(res.history[0]) == {"epoch", "train_loss", "val_sentiment_macro_f1", "val_topic_macro_f1",
                                   "val_score", "seconds"}
    p = predict(model, tok, df.text.tolist())
    assert (np.array(model.heads.sentiment_labels)[p.sentiment_probs.argmax(1)] == df.sentiment).all()
    assert (np.array(model.heads.topic_labels)[p.topic_probs.argmax(1)] == df.topic).all()
    assert (tmp_path / "m" / "model.safetensors").is_file()


def test_label_masks_drop_missing_heads(tok) -> None:
    assert encode_labels(["positive", None, pd.NA, "bogus", "negative"], ["negative", "neutral", "positive"]).tolist() \
        == [2, IGNORE, IGNORE, IGNORE, 0]
    model = _model(tok).train()
    enc = tok(["Acme share price fell", "Globex quarterly profit rose sharply"], padding=True, return_tensors="pt")
    out = model(enc["input_ids"], enc["attention_mask"], sentiment=torch.tensor([IGNORE, IGNORE]),
                topic=torch.tensor([1, 0]))
    assert "sentiment" not in out.losses and "topic" in out.losses
    out.loss.backward()
    for p in model.sentiment.parameters():
        assert p.grad is None or torch.count_nonzero(p.grad) == 0
    assert torch.count_nonzero(model.topic.weight.grad) > 0


def test_save_load_round_trip_identical_logits(tok, tmp_path: Path) -> None:
    model = _model(tok).eval()
    enc = tok(["Acme share price fell", "Hooli profit was flat today", ""], padding=True, return_tensors="pt")
    enc["input_ids"][2, 0], enc["attention_mask"][2, 0] = tok.eos_token_id, 1  # no all-pad row
    model.save(tmp_path / "m", tok)
    loaded, tok2 = MultiHeadGPT.load(tmp_path / "m")
    with torch.no_grad():
        a, b = model(**enc), loaded(**enc)
    torch.testing.assert_close(a.sentiment_logits, b.sentiment_logits, rtol=0, atol=0)
    torch.testing.assert_close(a.topic_logits, b.topic_logits, rtol=0, atol=0)
    assert tok2("Acme fell")["input_ids"] == tok("Acme fell")["input_ids"]


def test_early_stopping_keeps_best_epoch(tok, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scores = iter([0.3, 0.6, 0.5, 0.55, 0.9, 0.95])  # best at epoch 2, then two worse epochs
    snapshots: list[dict[str, torch.Tensor]] = []

    def scripted(model, encoded, pad_id, batch_size, device):
        snapshots.append(_state(model))
        return {"sentiment": None, "topic": None, "score": next(scores)}

    monkeypatch.setattr(train_mod, "evaluate", scripted)
    df = _labelled()
    model = _model(tok)
    res = finetune(model, tok, df, df, TrainConfig(epochs=6, batch_size=8, lr=3e-3, patience=2), tmp_path / "m",
                   progress=False)
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4]
    assert res.best_epoch == 2 and res.best_score == 0.6
    saved = MultiHeadGPT.saved_state(tmp_path / "m")
    final = _state(model)
    assert set(snapshots[1]) - set(saved) <= {"lm.lm_head.weight"}  # tied to the embeddings, saved once
    for k, v in snapshots[1].items():
        torch.testing.assert_close(saved.get(k, final[k]), v, rtol=0, atol=0)
        torch.testing.assert_close(final[k], v, rtol=0, atol=0)
    assert not torch.equal(snapshots[3]["sentiment.weight"], snapshots[1]["sentiment.weight"])


def test_time_budget_stops_after_evaluating(tok, tmp_path: Path) -> None:
    df = _labelled()
    res = finetune(_model(tok), tok, df, df, TrainConfig(epochs=5, batch_size=8, time_budget_s=0.0), tmp_path / "m",
                   progress=False)
    assert len(res.history) == 1 and res.best_epoch == 1
    assert (tmp_path / "m" / "model.safetensors").is_file()


def test_lora_keeps_the_base_lm_and_saves_adapters_beside_it(tok, tmp_path: Path) -> None:
    df = _labelled()
    model = _model(tok)
    before = _state(model)
    cfg = TrainConfig(epochs=3, batch_size=8, lr=5e-3, patience=3, lora=True, lora_r=4, lora_alpha=8)
    finetune(model, tok, df, df, cfg, tmp_path / "m", progress=False)
    saved = MultiHeadGPT.saved_state(tmp_path / "m")
    assert set(saved) == set(before) - {"lm.lm_head.weight"} and not any("lora" in k for k in saved)
    for k in saved:  # the base LM on disk is the pretrained one, bit for bit (generate reads it)
        if k.startswith("lm."):
            assert torch.equal(saved[k], before[k]), k
    adapter = tmp_path / "m" / "adapter"
    assert (adapter / "adapter_config.json").is_file() and list(adapter.glob("*.safetensors"))
    assert type(model.lm).__name__ == "GPT2LMHeadModel"  # merged back in memory
    trained = _state(model)
    assert torch.equal(trained["lm.transformer.wte.weight"], before["lm.transformer.wte.weight"])  # not adapted
    assert not torch.equal(trained["lm.transformer.h.0.attn.c_attn.weight"],
                           before["lm.transformer.h.0.attn.c_attn.weight"])
    loaded, _ = MultiHeadGPT.load(tmp_path / "m")
    texts = df.text.tolist()[:5]
    np.testing.assert_allclose(predict(loaded, tok, texts).sentiment_probs, predict(model, tok, texts).sentiment_probs,
                               atol=1e-6)


# ---------------------------------------------------------------------------------------- predict
def test_predict_order_truncation_empty(tok) -> None:
    model = _model(tok)
    long_text = "Acme quarterly profit rose sharply " * 200
    texts = ["Acme fell", long_text, "", "Globex share price was flat on the report today", "Hooli", "Wayne rose"]
    p = predict(model, tok, texts, batch_size=2)
    assert p.sentiment_probs.shape == (6, 3) and p.topic_probs.shape == (6, 2) and p.embeddings.shape == (6, 64)
    assert p.embeddings.dtype == np.float32
    np.testing.assert_allclose(p.sentiment_probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(p.topic_probs.sum(1), 1.0, atol=1e-5)
    assert p.truncated.tolist() == [False, True, False, False, False, False]
    assert p.n_tokens[1] == 64 and p.n_tokens[2] == 0
    one_by_one = np.concatenate([predict(model, tok, [t]).sentiment_probs for t in texts])
    np.testing.assert_allclose(p.sentiment_probs, one_by_one, atol=1e-5)  # input order restored
    assert predict(model, tok, [long_text], max_length=16).n_tokens[0] == 16
    assert predict(model, tok, ["x" * 2_000_000]).truncated[0]
    empty = predict(model, tok, [])
    assert empty.sentiment_probs.shape == (0, 3) and empty.truncated.shape == (0,)


# ---------------------------------------------------------------------------------------- behaviour
NAME_PREFIXES = ["Acme", "Globex", "Initech", "Hooli", "Vandelay", "Stark", "Wayne", "Tyrell", "Cyberdyne", "Soylent",
                 "Umbrella", "Wonka", "Oscorp", "Aperture", "Monarch", "Nakatomi", "Virtucon", "Dunder", "Pied",
                 "Massive", "Sirius", "Gekko", "Krusty", "Prestige", "Bluth", "Sterling", "Cogswell", "Spacely",
                 "Rekall", "Weyland", "Zorin", "Duff", "Planet", "Omni", "Yoyodyne", "Tessier", "Genco", "Vought"]
HELD_OUT = ["Quintara", "Belmonte", "Zephyrix", "Orlando", "Kestrel", "Marlowe", "Halcyon", "Tamsin", "Ravello",
            "Northwind", "Calypso", "Brightwater"]
SUFFIXES = ["Corp", "Inc", "Holdings", "Group", "Systems", "Energy", "Bank", "Motors"]
# (past tense, base form, polarity: 2 = positive, 0 = negative)
MOVES = [("rose", "rise", 2), ("jumped", "jump", 2), ("climbed", "climb", 2), ("increased", "increase", 2),
         ("surged", "surge", 2), ("fell", "fall", 0), ("dropped", "drop", 0), ("declined", "decline", 0),
         ("slumped", "slump", 0), ("decreased", "decrease", 0)]
SUBJECTS = ["{co} profit", "{co} revenue", "{co} quarterly earnings", "Shares of {co} ({tk})", "{co} ({tk}) sales"]
TAILS = ["", " in the third quarter", " this year", " last week"]
FAMILIES = [("past", "negpast"), ("exp", "negexp")]
SENT = ["negative", "neutral", "positive"]
SYLLABLES = ["ba", "ko", "ri", "tel", "mar", "zen", "lu", "vo", "pra", "dex", "qui", "sol", "nor", "fi", "gra", "tor",
             "vi", "mo", "xa", "ly"]


def _ticker(r: random.Random) -> str:
    return "".join(r.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(r.choice([3, 4])))


def _sentence(co: str, tk: str, form: str, move: tuple[str, str, int], subject: str, tail: str) -> tuple[str, str]:
    """One templated sentence and its label: negation flips the verb's polarity."""
    past, base, pol = move
    s = subject.format(co=co, tk=tk)
    text, flip = {"past": (f"{s} {past}{tail}", False), "negpast": (f"{s} did not {base}{tail}", True),
                  "exp": (f"{s} is expected to {base}{tail}", False),
                  "negexp": (f"{s} is not expected to {base}{tail}", True)}[form]
    return text, SENT[2 - pol if flip else pol]


def _finance(n: int, names: list[str], r: random.Random) -> pd.DataFrame:
    """Minimal pairs (affirmative + negated, same company/verb/tail) plus ~12% neutral rows."""
    rows = []
    for _ in range(n):
        co, tk, subject, tail = r.choice(names), _ticker(r), r.choice(SUBJECTS), r.choice(TAILS)
        if r.random() < 0.12:
            rows.append((f"{subject.format(co=co, tk=tk)} was unchanged{tail}", "neutral"))
            continue
        family, move = r.choice(FAMILIES), r.choice(MOVES)
        rows += [_sentence(co, tk, form, move, subject, tail) for form in family]
    return pd.DataFrame(rows, columns=["text", "sentiment"]).assign(topic=None)


def _company_names(r: random.Random) -> list[str]:
    """~500 names: made-up syllable names (many distinct name tokens) + prefix x suffix combinations."""
    made_up = sorted({"".join(r.choice(SYLLABLES) for _ in range(r.choice([2, 3]))).capitalize() for _ in range(400)})
    names = [f"{p} {r.choice(SUFFIXES)}" for p in made_up if p not in HELD_OUT]
    return names + [f"{p} {s}" for p in NAME_PREFIXES for s in SUFFIXES]


def test_behaviour_negation_flips_and_name_invariance(tmp_path: Path) -> None:
    r = random.Random(0)
    names = _company_names(r)
    r.shuffle(names)
    k = int(0.8 * len(names))
    train, val = _finance(330, names[:k], r), _finance(80, names[k:], r)
    assert 550 <= len(train) <= 650
    tok = train_tokenizer(train.text.tolist(), tmp_path / "tok", vocab_size=500, max_length=64)
    torch.manual_seed(0)
    # Tuned on 12 seeds (0-11): all passed, negation flips >= 0.92, name invariance >= 0.915.
    # Dropout off: at this size it only slowed learning the negation. Deterministic epochs, no
    # wall-clock budget (a budget would make the result depend on machine load): ~15 s on 2 cores.
    model = from_backbone(build_backbone("tiny", tok, dropout=0.0), HeadsConfig(topic_labels=[], dropout=0.0))
    cfg = TrainConfig(epochs=60, batch_size=16, lr=1e-3, patience=60, warmup_ratio=0.05)
    res = finetune(model, tok, train, val, cfg, tmp_path / "m", progress=False)
    assert res.best_score >= 0.8

    # Held-out company names, never seen by the tokenizer or the model.
    rr = random.Random(1)
    pairs, swaps = [], []
    for _ in range(200):
        co, tk = f"{rr.choice(HELD_OUT)} {rr.choice(SUFFIXES)}", _ticker(rr)
        move, subject, tail, family = rr.choice(MOVES), rr.choice(SUBJECTS), rr.choice(TAILS), rr.choice(FAMILIES)
        pairs.append(tuple(_sentence(co, tk, form, move, subject, tail)[0] for form in family))
        co2, tk2, form = f"{rr.choice(HELD_OUT)} {rr.choice(SUFFIXES)}", _ticker(rr), rr.choice(family)
        swaps.append((_sentence(co, tk, form, move, subject, tail)[0], _sentence(co2, tk2, form, move, subject, tail)[0]))

    def classes(texts: list[str]) -> np.ndarray:
        return predict(model, tok, texts).sentiment_probs.argmax(1)

    flipped = float((classes([a for a, _ in pairs]) != classes([b for _, b in pairs])).mean())
    same = float((classes([a for a, _ in swaps]) == classes([b for _, b in swaps])).mean())
    print(f"behaviour: val score {res.best_score:.3f} (epoch {res.best_epoch}), negation flips {flipped:.3f}, "
          f"name invariance {same:.3f}, {res.seconds:.1f} s")
    assert flipped >= 0.8, f"negation flipped only {flipped:.0%} of held-out pairs"
    assert same >= 0.9, f"name swap kept only {same:.0%} of predictions"
