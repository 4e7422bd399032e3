"""Any causal LM, any recipe: tiny random GPT-2 **and** Llama checkpoints through the whole model path.

Each architecture is saved as a plain Hugging Face directory (what a user's local checkpoint looks
like), named with ``--base``-style resolution, then fine-tuned with each recipe (frozen features,
LoRA, full), registered, reloaded, scored, used for predictions and for text generation. A short
causal-LM pretraining first gives the tiny LM a perplexity worth protecting: fine-tuning with the
auxiliary LM loss must keep held-out perplexity within 10% of the base (the frozen recipe leaves
it exactly unchanged). Precision: bf16 autocast and int8 dynamic quantisation must agree with fp32 on >= 99% of labels.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from models.catalogue import resolve
from models.experiment import run_experiment
from models.generate import generate_text, load_lm, perplexity
from models.multihead import MultiHeadGPT
from models.pretrain import PretrainConfig, pretrain
from models.registry import store_version, write_manifest
from models.serving import ServedModel
from models.tokenizer import train_tokenizer
from models.train import TrainConfig

COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Tyrell", "Vandelay", "Cyberdyne"]
PHRASES = {"positive": ["soars on record profit", "beats estimates", "raises its outlook"],
           "negative": ["plunges on heavy losses", "misses estimates", "cuts its outlook"],
           "neutral": ["schedules an investor call", "names a new director", "files its annual report"]}


def _examples(n: int = 360, seed: int = 0) -> pd.DataFrame:
    """Labelled rows with a planted rule (the phrase decides the sentiment, the company never does)."""
    r = random.Random(seed)
    rows = []
    for i in range(n):
        label = ("positive", "negative", "neutral")[i % 3]
        k = r.randrange(3)
        topic = "earnings" if k == 1 else "markets"  # planted too: the phrase decides the topic
        split = "train" if i % 10 < 7 else ("validation" if i % 10 < 9 else "test")
        rows.append({"article_id": f"a{i:04d}", "text": f"{r.choice(COMPANIES)} {PHRASES[label][k]}",
                     "sentiment": label, "topic": topic, "split": split, "dataset": "planted"})
    return pd.DataFrame(rows)


def _tiny_lm(arch: str, tok):
    """A tiny random causal LM of ``arch`` sized to ``tok`` (what a downloaded checkpoint would be)."""
    common = {"vocab_size": len(tok), "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id,
              "bos_token_id": tok.bos_token_id}
    torch.manual_seed(0)
    if arch == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        return GPT2LMHeadModel(GPT2Config(n_positions=64, n_embd=32, n_layer=2, n_head=2, **common))
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                        tie_word_embeddings=True, **common))


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def checkpoint(request, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, pd.DataFrame]:
    """``(arch, directory, examples)``: a briefly pretrained tiny LM saved as a HF directory."""
    root = tmp_path_factory.mktemp(request.param)
    df = _examples()
    corpus = df.text.tolist() * 2
    tok = train_tokenizer(corpus, root / "tok", vocab_size=300, max_length=64)
    lm = _tiny_lm(request.param, tok)
    pretrain(lm, tok, corpus[:600], corpus[600:], PretrainConfig(max_steps=60, batch_size=8, block_size=32,
                                                                   lr=3e-3, warmup_steps=5, eval_every=60,
                                                                   checkpoint_every=60), root / "ckpt",
             progress=False)
    base = root / "base"
    lm.save_pretrained(base)
    tok.save_pretrained(base)
    df.to_parquet(root / "examples.parquet")
    return request.param, base, df


@pytest.mark.parametrize("recipe", ["frozen", "lora", "full"])
def test_finetune_register_reload_score_predict_generate(checkpoint, recipe: str, tmp_path: Path) -> None:
    arch, base, df = checkpoint
    resolved = resolve(str(base), tmp_path / "store")
    assert resolved.kind == "directory" and resolved.ref == str(base)
    config = TrainConfig(recipe=recipe, epochs=10 if recipe == "lora" else 4, batch_size=16, patience=10,
                         lr=5e-3 if recipe == "lora" else 3e-3, lora_r=4,
                         lm_weight=0.5 if recipe != "frozen" else 0.0, prompt="")
    info = run_experiment(base.parent / "examples.parquet", tmp_path / "run", base=resolved.ref, config=config,
                          progress=False)
    assert info["recipe"] == recipe and info["heads"]["recipe"] == recipe
    assert info["training"]["recipe"] == recipe
    assert 0 < info["trainable_parameters"] <= info["parameters"]
    if recipe == "frozen":
        assert info["trainable_parameters"] < info["parameters"] / 2  # only the heads
    assert set(info["served"]) == {"sentiment", "topic"}
    assert info["metrics"]["sentiment"]["test"]["gpt"]["macro_f1"] >= 0.9, info["metrics"]["sentiment"]["test"]
    assert info["golden"]["n"] == 180 and set(info["golden"]) >= {"gpt", "baseline", "served"}

    # register -> reload as a served version -> score in the served mode
    version_dir = store_version(tmp_path / "registry", "m1", tmp_path / "run" / "model")
    write_manifest(version_dir, info)
    assert not list(version_dir.rglob("*.bin")) and (version_dir / "heads.safetensors").is_file()
    served = ServedModel(version_dir)
    assert type(served.model.causal_lm()).__name__ == type(_tiny_lm(arch, served.tokenizer)).__name__
    frame, emb = served.score(["Acme soars on record profit", "Hooli plunges on heavy losses", ""])
    assert emb.shape == (3, 32) and np.isfinite(emb).all()
    assert frame.sentiment_label.tolist()[:2] == ["positive", "negative"]
    assert frame.sentiment_score.between(-1, 1).all()

    # the GPT head alone on held-out company names (invariance: the company never decides). Unseen
    # names shift a 2-layer LM's pooled states a lot: only the fully trained backbone is asked this
    # (the behavioural suite, test_training.py, checks it on a properly trained model).
    if recipe == "full":
        model, tok = MultiHeadGPT.load(version_dir)
        from models.predict import predict

        probs = predict(model, tok, ["Nakatomi beats estimates", "Nakatomi misses estimates"]).sentiment_probs
        assert probs.argmax(axis=1).tolist() == [2, 0]

    # generation survives fine-tuning: the LM head is intact
    text = generate_text(version_dir, "Acme", max_new_tokens=6, temperature=0)
    assert text.startswith("Acme") and len(text) > len("Acme")
    held_out = [f"{co} {p}" for co in ("Nakatomi", "Soylent") for ps in PHRASES.values() for p in ps]
    base_lm, base_tok = load_lm(base)
    tuned_lm, _ = load_lm(version_dir)
    before, after = perplexity(base_lm, base_tok, held_out), perplexity(tuned_lm, base_tok, held_out)
    if recipe in ("frozen", "lora"):  # the LM on disk is the pretrained one (LoRA adapters sit beside it)
        assert after == pytest.approx(before, rel=1e-6)
    else:  # full fine-tuning moved it; the auxiliary LM loss keeps it close
        assert after <= 1.10 * before, (before, after)


@pytest.mark.parametrize("mode", ["bf16", "int8"])
def test_lower_precision_agrees_with_fp32(checkpoint, mode: str, tmp_path: Path) -> None:
    """bf16 autocast and int8 dynamic quantisation: labels equal fp32 labels on >= 99% of decided
    rows, probabilities within 0.05; the int8 copy quantises the backbone only."""
    _, base, df = checkpoint
    run_experiment(base.parent / "examples.parquet", tmp_path / "run", base=str(base),
                   config=TrainConfig(recipe="frozen", prompt=""), progress=False)
    model, tok = MultiHeadGPT.load(tmp_path / "run" / "model")
    from models.precision import is_quantized, quantize_int8
    from models.predict import predict

    texts = df.text.tolist() + [f"{c} {p}" for c in ("Nakatomi", "Soylent") for ps in PHRASES.values() for p in ps]
    fp32 = predict(model, tok, texts, precision="fp32")
    if mode == "int8":
        qmodel = quantize_int8(model)
        assert is_quantized(qmodel) and not is_quantized(model)  # a copy: the fp32 model is untouched
        quantized = [name for name, m in qmodel.named_modules() if type(m).__module__.startswith("torch.ao.nn.quantized")]
        # attention and MLP up-projections of both blocks (GPT-2's Conv1D too); the down projection stays fp32
        assert len(quantized) >= 2 * 3 and not any(n.endswith(("down_proj", "mlp.c_proj")) for n in quantized), quantized
        assert type(qmodel.sentiment).__module__.startswith("torch.nn")  # heads stay fp32
        low = predict(qmodel, tok, texts, precision="int8")
    else:
        low = predict(model, tok, texts, precision="bf16")
    for head in ("sentiment_probs", "topic_probs"):
        a, b = getattr(fp32, head), getattr(low, head)
        # bf16 keeps ~3 significant digits, int8 ~2: a row fp32 itself calls a coin toss (top two
        # within 0.02, e.g. 0.502 vs 0.498 on the tiny model's undecided topics) may flip; no other may.
        top2 = np.sort(a, axis=1)[:, -2:]
        decided = top2[:, 1] - top2[:, 0] >= 0.02
        assert decided.mean() >= 0.9, decided.mean()
        agree = (a.argmax(1) == b.argmax(1))[decided].mean()
        assert agree >= 0.99, (head, agree)
        assert np.abs(a - b).max() < 0.05, head


def test_prompt_wraps_text_and_only_the_text_is_truncated(checkpoint) -> None:
    from models.predict import encode_texts
    from models.tokenizer import load_tokenizer

    _, base, _ = checkpoint
    tok = load_tokenizer(base)
    prompt = "Headline: {text}\nSentiment:"
    ids, n_tokens, truncated = encode_texts(tok, ["Acme beats estimates", "", "Acme " * 200], 24, prompt)
    plain, _, _ = encode_texts(tok, [" Acme beats estimates"], 24)  # the template's space joins the text
    prefix = tok("Headline:", add_special_tokens=False)["input_ids"]
    suffix = tok("\nSentiment:", add_special_tokens=False)["input_ids"]
    assert ids[0][: len(prefix)] == prefix and ids[0][len(ids[0]) - len(suffix):] == suffix
    assert ids[1] == prefix + suffix and n_tokens[1] == 0
    assert n_tokens[2] == 24 and truncated.tolist() == [False, False, True]
    assert len(ids[2]) == len(prefix) + 24 + len(suffix)
    assert tok.decode(ids[0]).replace(" ", "") == "Headline:Acmebeatsestimates\nSentiment:".replace(" ", "")
    assert len(plain[0]) == n_tokens[0]


@pytest.mark.parametrize("pooling", ["mean", "last", "mean+last"])
def test_shared_prompt_prefix_runs_once_with_the_same_outputs(checkpoint, pooling: str) -> None:
    """The prompt's keys/values computed once per call give what running every row whole gives."""
    from models.multihead import HeadsConfig, from_backbone
    from models.predict import encode_texts, predict_ids, shared_prefix_length
    from models.tokenizer import load_tokenizer

    _, base, df = checkpoint
    from models.generate import load_causal_lm

    tok = load_tokenizer(base)
    lm = load_causal_lm(base)
    torch.manual_seed(1)
    model = from_backbone(lm, HeadsConfig(topic_labels=["earnings", "markets"], pool_layers=[-1, -2],
                                          pooling=pooling, prompt="Classify this headline. Headline: {text}\nSentiment:"))
    texts = df.text.tolist()[:70] + ["", "Acme"]  # one empty text: only the prompt's own tokens remain
    ids, _, _ = encode_texts(tok, texts, 24, model.heads.prompt)
    assert shared_prefix_length(ids) >= 4
    whole = predict_ids(model, ids, tok.pad_token_id, batch_size=16, precision="fp32", features=True,
                        reuse_prefix=False)
    reused = predict_ids(model, ids, tok.pad_token_id, batch_size=16, precision="fp32", features=True)
    for a, b in zip(whole, reused):  # every head's probabilities and the features; absent heads are None
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_shared_prefix_length_keeps_a_token_per_row() -> None:
    from models.predict import shared_prefix_length

    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5, 6], [1, 2, 9]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # every row keeps its last token
    assert shared_prefix_length([[7]]) == 0 and shared_prefix_length([]) == 0
