"""A distilled student is gated for cpu-champion, never for champion: the gap rule while no model
holds cpu-champion, the paired-bootstrap gate against the holder once one does, and a fine-tune
promoted to champion leaves cpu-champion where it is. Tiny untrained models only (no training)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest

from tasks.train import distill_gap_gate


def _info(student: float, teacher: float | None, teacher_version: str, served: str = "gpt") -> dict[str, Any]:
    """What run_distillation returns, reduced to what the gate reads: one head's validation figures."""
    val = {"gpt": {"macro_f1": student}, "baseline": {"macro_f1": 0.5}, "ensemble": {"macro_f1": student - 0.01}}
    if served == "ensemble":
        val["ensemble"]["macro_f1"], val["gpt"]["macro_f1"] = student, student - 0.02
    if teacher is not None:
        val["teacher"] = {"macro_f1": teacher}
    return {"teacher": teacher_version, "served": {"sentiment": served}, "metrics": {"sentiment": {"validation": val}}}


CHAMP = {"model_version": "m-teacher"}


@pytest.mark.parametrize(("student", "teacher", "served", "promoted", "says"), [
    (0.79, 0.80, "gpt", True, "a gap of +0.0100 within the allowed 0.0300"),
    (0.77, 0.80, "gpt", True, "within the allowed"),                 # exactly at the limit
    (0.84, 0.80, "gpt", True, "a gap of -0.0400"),                   # better than its teacher
    (0.70, 0.80, "gpt", False, "a gap of +0.1000 beyond the allowed 0.0300"),
    (0.78, 0.80, "ensemble", True, "served validation macro-F1 0.7800"),  # the served kind counts
])
def test_first_student_needs_to_be_within_the_gap_of_the_champion(student, teacher, served, promoted, says) -> None:
    ok, reason, evidence = distill_gap_gate(_info(student, teacher, "m-teacher", served), CHAMP, 0.03)
    assert ok is promoted and says in reason, reason
    assert evidence["champion_mean"] == teacher and evidence["max_gap"] == 0.03
    if not promoted:
        assert reason.startswith("Not promoted to cpu-champion") and "keeps serving the champion" in reason


@pytest.mark.parametrize(("info", "champion", "says"), [
    (_info(0.8, 0.8, "m-old"), CHAMP, "its teacher m-old is not the champion m-teacher"),
    (_info(0.8, None, "m-teacher"), CHAMP, "the teacher was not scored"),
    (_info(0.8, 0.8, "m-teacher"), None, "there is no champion"),
])
def test_the_gap_rule_refuses_what_it_cannot_compare(info, champion, says) -> None:
    ok, reason, _ = distill_gap_gate(info, champion, 0.03)
    assert not ok and reason.startswith("Not promoted to cpu-champion") and says in reason


# ----------------------------------------------------------------------------- through register_model


def _examples(path: Path) -> str:
    """Labelled rows in the shape export_training_data writes (the gate reads the validation ones)."""
    words = ["shares rose", "profit fell", "bank said", "oil growth", "record deal", "market cut"]
    rows = [{"article_id": f"e{i:03d}", "text": f"{words[i % 6]} {words[(i * 5) % 6]}", "title": None,
             "sentiment": ("positive", "negative", "neutral")[i % 3], "topic": ("markets", "earnings")[i % 2],
             "split": "validation" if i % 2 else "train", "dataset": "synthetic"} for i in range(80)]
    pd.DataFrame(rows).to_parquet(path, index=False)
    return str(path)


def _events(settings) -> list[tuple]:
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        return con.execute("SELECT action, alias, from_version, to_version, reason FROM model_promotions "
                           "ORDER BY event_at").fetchall()
    finally:
        con.close()


def _serving(settings) -> dict[str, tuple[str, bool]]:
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        return {a: (v, h) for a, v, h in con.execute("SELECT alias, model_version, held FROM v_serving").fetchall()}
    finally:
        con.close()


@pytest.mark.usefixtures("prefect_harness")
def test_students_take_cpu_champion_only_through_its_gate(settings, tmp_path: Path) -> None:
    from prefect import flow

    from core.settings import get_settings
    from tasks.train import register_model
    from tasks.warehouse import migrate_warehouse
    from tests.conftest import register_tiny_champion

    @flow
    def register_student(info: dict[str, Any], out_dir: str, data: dict[str, Any]) -> dict[str, Any]:
        migrate_warehouse(get_settings())  # also creates the writer limit, as every flow does
        return register_model(get_settings(), info, out_dir, data, alias="cpu-champion")

    teacher = register_tiny_champion(settings)
    data = {"path": _examples(tmp_path / "examples.parquet"), "val_split_id": "v1",
            "datasets": {"sentiment": ["synthetic"], "topic": ["synthetic"]}, "teacher": teacher}

    def student(name: str, f1: float, teacher_f1: float) -> dict[str, Any]:
        out = tmp_path / name
        shutil.copytree(settings.home / "tiny-model" / "model", out / "model")  # the same tiny weights
        info = {**_info(f1, teacher_f1, teacher), "backbone_name": "tiny", "heads": {"topic": ["markets", "earnings"]},
                "val_score": f1, "baseline_val_score": 0.5, "val_scores": {"gpt": f1, "baseline": 0.5, "ensemble": f1}}
        info["served"] = {"sentiment": "gpt", "topic": "gpt"}
        return register_student(info, str(out), data)

    # 1. No model holds cpu-champion and the student is 0.10 below its teacher: refused, recorded.
    far = student("far", 0.70, 0.80)
    assert far["alias"] == "cpu-champion" and not far["promoted"] and "beyond the allowed 0.0300" in far["reason"]
    assert "Not promoted to cpu-champion" in (Path(far["path"]) / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert _serving(settings) == {"champion": (teacher, True), "cpu-champion": (teacher, False)}
    assert _events(settings)[-1][:4] == ("refuse", "cpu-champion", teacher, far["model_version"])

    # 2. Within the gap: it takes cpu-champion; the champion does not move.
    near = student("near", 0.79, 0.80)
    assert near["promoted"] and "within the allowed" in near["reason"]
    assert _serving(settings) == {"champion": (teacher, True), "cpu-champion": (near["model_version"], True)}
    assert _events(settings)[-1][:4] == ("promote", "cpu-champion", None, near["model_version"])

    # 3. Against the holder it is the paired-bootstrap gate, whatever the gap: identical weights
    #    never win, so the holder stays.
    twin = student("twin", 0.80, 0.80)
    assert not twin["promoted"] and twin["reason"].startswith(f"cpu-champion, against its holder {near['model_version']}")
    assert _serving(settings)["cpu-champion"] == (near["model_version"], True)

    # 4. A fine-tune promoted to champion leaves cpu-champion with the student.
    new_champion = register_tiny_champion(settings, seed=1)
    assert _serving(settings) == {"champion": (new_champion, True), "cpu-champion": (near["model_version"], True)}
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        stages = dict(con.execute("SELECT model_version, stage FROM model_registry").fetchall())
    finally:
        con.close()
    assert stages[near["model_version"]] == "candidate" and stages[teacher] == "archived"
