"""The intent head (issue 16, item 2): training beside TF-IDF, the auto-answer threshold, serving
with top-3, the intent-champion alias, and the fine-tune flow on support messages."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.experiment import auto_answer_threshold, run_experiment
from models.registry import store_version, write_manifest
from models.serving import ServedModel, top_k
from models.train import TrainConfig

PHRASES = {
    "card_not_working": ["my card {} is not working", "card stopped working {}", "why does my card not work {}"],
    "lost_or_stolen_card": ["i lost my card {}", "my card was stolen {}", "someone took my wallet and card {}"],
    "exchange_rate": ["what exchange rate do you use {}", "how is the rate calculated {}", "exchange rate {} please"],
}


def _intent_examples(n_per: int = 60, seed: int = 0) -> pd.DataFrame:
    r = random.Random(seed)
    rows = [{"article_id": f"{intent}-{i}", "text": r.choice(ts).format(r.choice(["today", "again", "abroad", "now"])),
             "title": None, "intent": intent, "dataset": "toy"}
            for intent, ts in PHRASES.items() for i in range(n_per)]
    df = pd.DataFrame(rows)
    u = np.random.default_rng(seed).random(len(df))
    df["split"] = np.where(u < 0.6, "train", np.where(u < 0.8, "validation", "test"))
    return df


@pytest.fixture(scope="module")
def intent_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("intent")
    _intent_examples().to_parquet(root / "examples.parquet")
    info = run_experiment(root / "examples.parquet", root / "run", base="tiny", vocab_size=300, progress=False,
                          config=TrainConfig(recipe="full", epochs=3, batch_size=16, lr=3e-3))
    version_dir = store_version(root / "registry", "m1", root / "run" / "model")
    write_manifest(version_dir, info)
    return info, version_dir


def test_intent_model_has_only_the_intent_head_and_is_compared_with_tfidf(intent_run) -> None:
    info, _ = intent_run
    assert info["heads"]["intent_labels"] == sorted(PHRASES) and info["heads"]["sentiment_labels"] == []
    assert set(info["metrics"]) == {"intent"} and "golden" not in info  # the news golden set is not for intents
    val = info["metrics"]["intent"]["validation"]
    assert set(val) == {"gpt", "baseline", "ensemble"}
    assert info["metrics"]["intent"]["test"][info["served"]["intent"]]["accuracy"] >= 0.9
    assert "auto_answer" in info and info["auto_answer"]["target"] == 0.95


def test_served_intent_model_gives_label_confidence_and_top3(intent_run) -> None:
    _, version_dir = intent_run
    served = ServedModel(version_dir)
    frame, emb = served.score(["my card is not working again", "i lost my card today"])
    assert list(frame.intent_label) == ["card_not_working", "lost_or_stolen_card"]
    assert "sentiment_label" not in frame and "sentiment_score" not in frame
    for conf, top in zip(frame.intent_confidence, frame.intent_top3):
        assert len(top) == 3 and top[0]["p"] == pytest.approx(conf, abs=1e-4)
        assert [t["p"] for t in top] == sorted((t["p"] for t in top), reverse=True)
    assert served.score([])[0].empty


def test_news_and_intent_labels_do_not_train_one_model(tmp_path: Path) -> None:
    df = _intent_examples(20)
    df["sentiment"] = np.where(df.index % 2 == 0, "negative", None)
    df.to_parquet(tmp_path / "mixed.parquet")
    with pytest.raises(ValueError, match="intent labels train their own model"):
        run_experiment(tmp_path / "mixed.parquet", tmp_path / "run", base="tiny", vocab_size=300, progress=False,
                       config=TrainConfig(recipe="full", epochs=1))


def test_auto_answer_threshold_reaches_the_precision_target_on_validation() -> None:
    rng = np.random.default_rng(0)
    labels = ["a", "b"]
    n = 400
    y = rng.choice(labels, n)
    conf = rng.uniform(0.5, 1.0, n)
    right = (conf > 0.8) | (rng.random(n) < 0.3)  # above 0.8 always right, below mostly wrong
    pred = np.where(right, y, np.where(y == "a", "b", "a"))
    p = np.zeros((n, 2))
    p[np.arange(n), [labels.index(v) for v in pred]] = conf
    p[np.arange(n), [1 - labels.index(v) for v in pred]] = 1 - conf
    splits = {"validation": (p, p, list(y)), "test": (p, p, list(y))}
    out = auto_answer_threshold(splits, labels, kind="gpt", weight=1.0)
    assert out["threshold"] is not None and out["validation_precision"] >= 0.95
    answered = conf >= out["threshold"]
    assert (pred[answered] == y[answered]).mean() >= 0.95 and out["test_coverage"] == pytest.approx(answered.mean(), abs=1e-3)
    # A model never right enough gets no threshold: triage then answers nothing on its own.
    bad = {"validation": (p, p, list(np.where(pred == "a", "b", "a")))}
    assert auto_answer_threshold(bad, labels, kind="gpt", weight=1.0)["threshold"] is None


def test_top_k_orders_classes_by_probability() -> None:
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]], dtype=np.float32)
    assert [[t["intent"] for t in row] for row in top_k(probs, ["x", "y", "z"], 2)] == [["y", "z"], ["x", "z"]]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_finetune_flow_trains_an_intent_model_for_intent_champion(settings, tmp_path: Path) -> None:
    """Support messages with gold intents -> the same fine-tune flow -> intent-champion; the news champion is untouched."""
    import duckdb
    from typer.testing import CliRunner

    from flows.finetune import finetune_flow
    from newspulse.cli import app
    from tests.conftest import register_tiny_champion
    from warehouse import registry as db_registry

    news = register_tiny_champion(settings)
    inbox = tmp_path / "inbox.csv"
    df = _intent_examples(40)
    df.assign(message_id=df.article_id, created_at="2026-11-01T10:00:00Z")[
        ["message_id", "created_at", "text", "intent"]].to_csv(inbox, index=False)
    out = finetune_flow(labelled_files=[str(inbox)], dataset_name="toy", task="intent", label_column="intent", base="tiny",
                        epochs=2, lr=3e-3, batch_size=16, run_name="intent1")
    assert out["alias"] == "intent-champion" and out["promoted"], out["reason"]
    card = (Path(out["path"]) / "MODEL_CARD.md").read_text()
    assert "Head: intent" in card and "Auto-answer (triage)" in card

    con = duckdb.connect(str(settings.warehouse_path))
    try:
        serving = dict(con.execute("SELECT alias, model_version FROM v_serving").fetchall())
        assert serving == {"champion": news, "cpu-champion": news, "intent-champion": out["model_version"]}
        # Each kind of model serves only its own aliases.
        with pytest.raises(ValueError, match="intent model"):
            db_registry.promote(con, out["model_version"], "wrong", alias="champion")
        with pytest.raises(ValueError, match="no intent head"):
            db_registry.promote(con, news, "wrong", alias="intent-champion")
    finally:
        con.close()

    # predict with the intent model: intent, confidence and the top-3 per row.
    src, dst = tmp_path / "q.csv", tmp_path / "q_out.csv"
    pd.DataFrame({"text": ["my card is not working again", "", "what exchange rate do you use"]}).to_csv(src, index=False)
    res = CliRunner().invoke(app, ["predict", "--input", str(src), "--output", str(dst), "--model", "intent-champion"])
    assert res.exit_code == 0, res.output
    got = pd.read_csv(dst)
    assert {"intent_label", "intent_confidence", "intent_top3"} <= set(got.columns)
    assert not any(c.startswith("intent_p_") for c in got.columns)
    assert got.intent_top3.str.count(";").eq(2).all() and got.note.iloc[1] == "empty text"
    assert "Intents" in res.output
