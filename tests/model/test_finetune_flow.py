"""Training through the real flows and the CLI: register, promotion gate, rollback, predict, generate."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from typer.testing import CliRunner

from newspulse.cli import app

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]
runner = CliRunner()


def _demo_data(settings) -> None:
    from flows.pipeline import pipeline_flow

    pipeline_flow(seed=3, days=3, articles_per_day=120, n_users=20, train=False)


def _champion(settings) -> str | None:
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        rows = con.execute("SELECT model_version FROM model_registry WHERE stage = 'champion'").fetchall()
    finally:
        con.close()
    return rows[0][0] if rows else None


def test_finetune_promotion_gate_rollback_predict_generate(settings, tmp_path: Path) -> None:
    from flows.finetune import finetune_flow

    _demo_data(settings)
    common = {"sentiment_datasets": ["synthetic"], "topic_datasets": ["synthetic"], "base": "tiny", "batch_size": 32}
    first = finetune_flow(**common, epochs=2, lr=3e-3, run_name="ft1")
    assert first["promoted"] and "first model" in first["reason"]
    assert _champion(settings) == first["model_version"]
    card = Path(first["path"]) / "MODEL_CARD.md"
    assert card.exists() and "baseline" in card.read_text() and (Path(first["path"]) / "model.safetensors").exists()
    assert not list(Path(first["path"]).rglob("*.bin")) and not list(Path(first["path"]).rglob("*.pkl"))

    # A model that barely trained must not replace the champion.
    worse = finetune_flow(**common, epochs=1, lr=1e-7, run_name="ft2")
    assert not worse["promoted"] and _champion(settings) == first["model_version"]

    # An operator promotes it anyway, then rolls back: the first model is champion again.
    assert runner.invoke(app, ["models", "promote", worse["model_version"]]).exit_code == 0
    assert _champion(settings) == worse["model_version"]
    rolled = runner.invoke(app, ["models", "rollback"])
    assert rolled.exit_code == 0, rolled.output
    assert _champion(settings) == first["model_version"]
    listing = runner.invoke(app, ["models", "list", "--format", "csv"])
    assert first["model_version"] in listing.output

    # predict: empty, huge and badly encoded rows get notes, never a crash.
    src = tmp_path / "in.csv"
    src.write_bytes(b"id,text\n1,Acme raises its outlook after record quarter\n2,\n3," + b"shares " * 5000
                    + b"\n4,caf\xe9 prices \xff fall\n")
    out = tmp_path / "out.parquet"
    res = runner.invoke(app, ["predict", "--input", str(src), "--output", str(out), "--text-column", "text"])
    assert res.exit_code == 0, res.output
    scored = pd.read_parquet(out)
    assert len(scored) == 4 and scored.sentiment_label.notna().all()
    assert scored.note.tolist()[1:] == ["empty text", "truncated to the model's context", "invalid bytes replaced"]
    assert scored.sentiment_score.between(-1, 1).all()

    gen = runner.invoke(app, ["generate", "Shares of", "--max-new-tokens", "8"])
    assert gen.exit_code == 0 and gen.output.strip()


def test_own_labelled_file_with_label_map(settings, tmp_path: Path) -> None:
    from flows.finetune import finetune_flow

    rows = [{"headline": f"{co} {verb}", "mood": mood}
            for co in ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne")
            for verb, mood in (("shares soar on record profit", "bullish"), ("shares plunge on losses", "bearish"),
                               ("schedules annual meeting", "flat"))]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows * 3), encoding="utf-8")
    out = finetune_flow(base="tiny", epochs=2, lr=3e-3, run_name="own", labelled_files=[str(path)],
                        dataset_name="mydesk", task="sentiment", text_column="headline", label_column="mood",
                        label_map={"bullish": "positive", "bearish": "negative", "flat": "neutral"})
    assert out["model_version"]
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        labels = dict(con.execute("SELECT label, count(*) FROM labels WHERE dataset='mydesk' GROUP BY 1").fetchall())
    finally:
        con.close()
    assert labels == {"positive": 8, "negative": 8, "neutral": 8}


def test_pretrain_flow_then_finetune_on_it(settings) -> None:
    """The demo's chain: domain pretraining on the warehouse corpus, heads on the checkpoint."""
    from flows.finetune import finetune_flow
    from flows.pretrain import pretrain_flow

    _demo_data(settings)
    pre = pretrain_flow(run_name="pt", preset="tiny", vocab_size=500, max_steps=20, batch_size=8, block_size=32)
    assert pre["steps"] == 20 and pre["val_perplexity"] > 1
    again = pretrain_flow(run_name="pt", preset="tiny", vocab_size=500, max_steps=30, batch_size=8, block_size=32)
    assert again["resumed_from"] == 20 and again["steps"] == 30
    out = finetune_flow(sentiment_datasets=["synthetic"], topic_datasets=["synthetic"], base=pre["model_dir"],
                        epochs=1, run_name="ft-pre")
    assert out["model_version"]
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        row = con.execute("SELECT backbone, pretrained_from FROM model_registry WHERE model_version = ?",
                          [out["model_version"]]).fetchall()[0]
    finally:
        con.close()
    assert row[0].startswith("checkpoint:") and row[1] == pre["model_dir"]


def test_weekly_continued_pretraining_of_a_pretrained_backbone(settings, tmp_path: Path) -> None:
    """pretrain-weekly on a (tiny, Llama) pretrained checkpoint: trains on what arrived since the
    last run, reports perplexity before/after, leaves labelled texts out, does nothing without news."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from flows.finetune import finetune_flow
    from flows.pipeline import pipeline_flow
    from flows.pretrain import pretrain_flow
    from models.tokenizer import train_tokenizer

    _demo_data(settings)
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        texts = [r[0] for r in con.execute("SELECT title FROM articles LIMIT 400").fetchall()]
    finally:
        con.close()
    base = tmp_path / "tiny-llama"
    tok = train_tokenizer(texts, tmp_path / "tok", vocab_size=400, max_length=64)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                 bos_token_id=tok.bos_token_id)).save_pretrained(base)
    tok.save_pretrained(base)
    weekly = {"run_name": "weekly", "base": str(base), "incremental": True, "steps_per_run": 10, "batch_size": 8,
              "block_size": 32, "lr": 3e-3}
    first = pretrain_flow(**weekly)
    assert first["steps"] == 10 and first["resumed_from"] == 0
    assert first["corpus"]["excluded"] > 0 and first["corpus"]["since"] is None  # labelled texts left out
    assert first["val_perplexity"] < first["val_perplexity_before"]
    idle = pretrain_flow(**weekly)  # nothing new ingested: no training, same checkpoint
    assert idle["skipped"] and idle["steps"] == 0
    pipeline_flow(seed=4, days=2, articles_per_day=80, n_users=10, train=False)  # a new week of news
    second = pretrain_flow(**weekly)
    assert second["resumed_from"] == 10 and second["steps"] == 20  # 10 more steps, on the new articles only
    assert second["corpus"]["since"] and 0 < second["corpus"]["written"] < first["corpus"]["written"] + 200
    out = finetune_flow(sentiment_datasets=["synthetic"], topic_datasets=["synthetic"], base="pretrain:weekly",
                        recipe="frozen", run_name="ft-weekly")
    assert out["model_version"] and out["golden"]["n"] == 180
