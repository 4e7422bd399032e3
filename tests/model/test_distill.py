"""Distillation: the KL math, a student that learns a tiny teacher's planted rule from soft targets
alone, truncation noted on the card, and the flow end to end with its bad inputs (tiny models only)."""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from models.distill import DistillInputError, distill_fit, kd_loss, run_distillation, soften, teacher_probs
from models.experiment import run_experiment
from models.multihead import HeadsConfig, MultiHeadGPT, from_backbone
from models.predict import predict
from models.registry import model_card
from models.train import TrainConfig

COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Tyrell", "Vandelay", "Cyberdyne",
             "Nakatomi", "Soylent", "Oscorp", "Wonka", "Gringotts", "Monarch"]
PHRASES = {"positive": ["soars on record profit", "beats estimates", "raises its outlook"],
           "negative": ["plunges on heavy losses", "misses estimates", "cuts its outlook"],
           "neutral": ["schedules an investor call", "names a new director", "files its annual report"]}


def _examples(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Labelled rows with a planted rule: the phrase decides sentiment (and topic), never the company."""
    r = random.Random(seed)
    rows = []
    for i in range(n):
        label, k = ("positive", "negative", "neutral")[i % 3], r.randrange(3)
        split = "train" if i % 10 < 7 else ("validation" if i % 10 < 9 else "test")
        rows.append({"article_id": f"a{i:04d}", "text": f"{r.choice(COMPANIES[:10])} {PHRASES[label][k]}",
                     "title": None, "sentiment": label, "topic": "earnings" if k == 1 else "markets",
                     "split": split, "dataset": "planted"})
    return pd.DataFrame(rows)


def _unlabelled(n: int, seed: int, companies: list[str]) -> list[str]:
    r = random.Random(seed)
    return [f"{r.choice(companies)} {r.choice(r.choice(list(PHRASES.values())))}" for _ in range(n)]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """A tiny GPT-2 teacher fine-tuned on the planted rule (saved as a normal model directory)."""
    root = tmp_path_factory.mktemp("teacher")
    df = _examples()
    df.to_parquet(root / "examples.parquet")
    info = run_experiment(root / "examples.parquet", root / "run", base="tiny", vocab_size=300, progress=False,
                          config=TrainConfig(epochs=8, batch_size=16, lr=3e-3, patience=8, headline_view=False))
    assert info["metrics"]["sentiment"]["test"]["gpt"]["macro_f1"] >= 0.9
    from models.registry import write_manifest

    write_manifest(root / "run" / "model", info)
    return root / "run" / "model", df


def test_kl_is_zero_when_student_equals_teacher_and_scales_with_temperature() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 3)  # (B, K)
    probs = F.softmax(logits, dim=-1)
    for t in (1.0, 2.0, 4.0):
        assert float(kd_loss(logits, probs, t)) == pytest.approx(0.0, abs=1e-6)
        # softmax(log p / T) is the teacher's softmax(z / T): temperature recovered from probabilities
        torch.testing.assert_close(soften(probs, t).exp(), F.softmax(logits / t, dim=-1), atol=1e-6, rtol=1e-5)
    student = torch.randn(5, 3)
    for t in (1.0, 3.0):
        p_t, log_s = F.softmax(logits / t, -1), F.log_softmax(student / t, -1)
        expected = t * t * (p_t * (p_t.log() - log_s)).sum(-1).mean()
        assert float(kd_loss(student, probs, t)) == pytest.approx(float(expected), rel=1e-5)
    assert soften(probs, 4.0).exp().max() < probs.max()  # a higher temperature flattens the targets
    valid = torch.tensor([True, False, False, False, False])
    assert float(kd_loss(student, probs, 2.0, valid)) == pytest.approx(float(kd_loss(student[:1], probs[:1], 2.0)))
    assert float(kd_loss(student, probs, 2.0, torch.zeros(5, dtype=torch.bool))) == 0.0


def test_student_learns_the_teachers_rule_from_soft_targets_alone(teacher, tmp_path: Path) -> None:
    from models.backbone import build_backbone
    from models.tokenizer import train_tokenizer

    teacher_dir, df = teacher
    t_model, t_tok = MultiHeadGPT.load(teacher_dir)
    pool = _unlabelled(600, 1, COMPANIES[:10])
    soft = teacher_probs(t_model, t_tok, pool, batch_size=64)
    train = pd.DataFrame({"text": pool, "teacher_sentiment": list(soft["sentiment"]),
                          "teacher_topic": list(soft["topic"])})  # no gold label anywhere
    val = df[df.split == "validation"]
    tok = train_tokenizer(pool + val.text.tolist(), tmp_path / "tok", vocab_size=300)
    torch.manual_seed(0)
    student = from_backbone(build_backbone("tiny", tok), HeadsConfig(topic_labels=t_model.heads.topic_labels))
    stats: dict = {}
    result = distill_fit(student, tok, train, val, TrainConfig(epochs=8, batch_size=16, lr=3e-3, patience=8),
                         tmp_path / "student", teacher_labels={"sentiment": t_model.heads.sentiment_labels,
                                                               "topic": t_model.heads.topic_labels},
                         temperature=2.0, alpha=1.0, stats=stats)
    assert result.best_epoch >= 1 and stats["soft_heads"] == ["sentiment", "topic"]
    held_out = _unlabelled(150, 2, COMPANIES[10:])  # companies neither model has seen
    agree = (predict(student, tok, held_out).sentiment_probs.argmax(1)
             == predict(t_model, t_tok, held_out).sentiment_probs.argmax(1)).mean()
    assert agree >= 0.8, agree  # chance is 1/3
    assert (tmp_path / "student" / "model.safetensors").is_file()
    assert not list((tmp_path / "student").rglob("*.bin"))


def test_run_distillation_beside_teacher_and_baseline_notes_truncation(teacher, tmp_path: Path) -> None:
    """The preset's 128-token context is smaller than the pool's long texts: cut, and said on the card."""
    teacher_dir, df = teacher
    t_model, t_tok = MultiHeadGPT.load(teacher_dir)
    pool = _unlabelled(200, 3, COMPANIES[:10])
    pool[:20] = [t + ". " + " ".join(["The shares traded in a wide range."] * 40) for t in pool[:20]]
    train = df[df.split == "train"]
    texts = pool + train.text.tolist()
    soft = teacher_probs(t_model, t_tok, texts)
    frame = pd.DataFrame({"article_id": [f"p{i}" for i in range(len(pool))] + train.article_id.tolist(),
                          "text": texts, "teacher_sentiment": list(soft["sentiment"]),
                          "teacher_topic": list(soft["topic"])})
    frame.to_parquet(tmp_path / "soft.parquet")
    df.to_parquet(tmp_path / "examples.parquet")
    info = run_distillation(tmp_path / "examples.parquet", tmp_path / "soft.parquet", tmp_path / "run", teacher_dir,
                            student_base="tiny", teacher_version="m-teacher", vocab_size=400,
                            config=TrainConfig(epochs=3, batch_size=32, lr=3e-3, max_length=512))
    dist = info["distillation"]
    assert info["teacher"] == "m-teacher" and dist["pool"] == 200
    assert dist["truncated"] >= 20 and dist["max_length"] <= 128 and "truncated" in dist["note"]
    for split in ("validation", "test"):
        assert {"gpt", "baseline", "teacher"} <= set(info["metrics"]["sentiment"][split])
    assert "teacher" in info["golden"]
    card = model_card("m-student", info)
    assert "teacher: m-teacher" in card and "were truncated to the student's" in card
    with pytest.raises(DistillInputError, match="pool is empty"):
        frame[frame.article_id.str.startswith("a")].to_parquet(tmp_path / "no-pool.parquet")
        run_distillation(tmp_path / "examples.parquet", tmp_path / "no-pool.parquet", tmp_path / "run2",
                         teacher_dir, student_base="tiny")


def test_student_cut_from_the_teacher_keeps_its_tokenizer_and_embeddings(teacher, tmp_path: Path) -> None:
    """``teacher:1``: the teacher's first block, its tokenizer and (frozen) embeddings, trained on soft targets."""
    teacher_dir, df = teacher
    t_model, t_tok = MultiHeadGPT.load(teacher_dir)
    pool = _unlabelled(400, 4, COMPANIES[:10])
    soft = teacher_probs(t_model, t_tok, pool)
    pd.DataFrame({"article_id": [f"p{i}" for i in range(len(pool))], "text": pool,
                  "teacher_sentiment": list(soft["sentiment"]), "teacher_topic": list(soft["topic"])}
                 ).to_parquet(tmp_path / "soft.parquet")
    df.to_parquet(tmp_path / "examples.parquet")
    info = run_distillation(tmp_path / "examples.parquet", tmp_path / "soft.parquet", tmp_path / "run", teacher_dir,
                            student_base="teacher:1", teacher_version="m-teacher",
                            config=TrainConfig(epochs=6, batch_size=16, lr=3e-3, patience=6))
    student, s_tok = MultiHeadGPT.load(tmp_path / "run" / "model")
    assert student.config.num_hidden_layers == 1 and t_model.config.num_hidden_layers == 2
    assert s_tok.get_vocab() == t_tok.get_vocab()  # the teacher's tokenizer, not one trained here
    emb = student.causal_lm().get_input_embeddings().weight
    assert torch.equal(emb, t_model.causal_lm().get_input_embeddings().weight)  # frozen while the blocks trained
    assert info["distillation"]["student"] == "teacher:1" and info["training"]["recipe"] == "full"
    assert info["metrics"]["sentiment"]["test"]["gpt"]["macro_f1"] >= 0.8, info["metrics"]["sentiment"]["test"]


@pytest.mark.parametrize(("student", "message"), [("teacher:5", "1 to 2"), ("teacher:x", "write teacher:N"),
                                                  ("huge", "neither a preset")])
def test_a_student_that_cannot_be_built_is_one_clear_error(teacher, student: str, message: str, tmp_path: Path) -> None:
    from models.distill import student_backbone

    with pytest.raises(DistillInputError, match=message):
        student_backbone(student, teacher[0], tmp_path)
    assert not (tmp_path / "student-backbone").exists()


# ----------------------------------------------------------------------------- the flow


def _registry(settings) -> list[tuple]:
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        return con.execute("SELECT model_version, stage, data_snapshot FROM model_registry "
                           "ORDER BY created_at").fetchall()
    finally:
        con.close()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_distill_flow_registers_a_student_with_lineage_and_refuses_bad_input(settings) -> None:
    import json

    from typer.testing import CliRunner

    from flows.distill import distill_flow
    from flows.finetune import finetune_flow
    from flows.pipeline import pipeline_flow
    from newspulse.cli import app

    runner = CliRunner()
    pipeline_flow(seed=3, days=2, articles_per_day=100, n_users=10, train=False)
    # bad input first: no teacher at all, a version that does not exist, a student that is no preset
    with pytest.raises(DistillInputError, match="no champion yet"):
        distill_flow(student_base="tiny", run_name="d0")
    res = runner.invoke(app, ["distill", "--teacher", "m-nope", "--student", "tiny"])
    assert res.exit_code == 2 and "no model version 'm-nope'" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = runner.invoke(app, ["distill", "--student", "gigantic"])
    assert res.exit_code == 2 and "neither a preset" in res.output
    assert _registry(settings) == []

    teacher = finetune_flow(sentiment_datasets=["synthetic"], topic_datasets=["synthetic"], base="tiny", epochs=2,
                            lr=3e-3, run_name="teacher")
    out = distill_flow(teacher="champion", student_base="tiny", epochs=2, lr=3e-3, shard_size=150, run_name="d1")
    rows = {r[0]: r for r in _registry(settings)}
    assert set(rows) == {teacher["model_version"], out["model_version"]}
    snapshot = json.loads(rows[out["model_version"]][2])
    assert snapshot["teacher"] == teacher["model_version"] and snapshot["pool"] > 0
    card = Path(out["path"]) / "MODEL_CARD.md"
    text = card.read_text(encoding="utf-8")
    assert f"teacher: {teacher['model_version']}" in text
    metrics = json.loads((Path(out["path"]) / "card.json").read_text(encoding="utf-8"))["metrics"]
    assert {"gpt", "baseline", "teacher"} <= set(metrics["sentiment"]["validation"])  # side by side
    assert "reason" in out and out["reason"]  # went through the champion gate
    assert not list(Path(out["path"]).rglob("*.bin")) and (Path(out["path"]) / "model.safetensors").is_file()
    assert len(list((settings.runs_dir / "d1" / "soft").glob("output-*.parquet"))) >= 2  # one task per shard

    # An empty unlabelled pool: every article gets a label -> one line, exit 2, nothing registered.
    con = duckdb.connect(str(settings.warehouse_path))
    try:
        con.execute("INSERT INTO labels (dataset, item, task, label, split, batch_id, created_at) SELECT 'all', "
                    "article_id, 'sentiment', 'neutral', 'unused', 'test', now() FROM articles "
                    "WHERE article_id NOT IN (SELECT item FROM labels)")
    finally:
        con.close()
    res = runner.invoke(app, ["distill", "--student", "tiny", "--epochs", "1"])
    assert res.exit_code == 2 and "unlabelled pool is empty" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
    assert len(_registry(settings)) == 2
