"""File side of the model registry: versions, atomic copies, promotion rule, model card."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from models import registry
from models.registry import (
    list_versions,
    load_manifest,
    model_card,
    new_version,
    should_promote,
    store_version,
    write_manifest,
)


def make_model_dir(root: Path) -> Path:
    """A fake saved model: weights, config, tokenizer, heads and a baseline subfolder."""
    d = root / "model"
    (d / "baseline").mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"\x00" * 64)
    (d / "config.json").write_text(json.dumps({"n_layer": 2}))
    (d / "heads.json").write_text(json.dumps({"sentiment_labels": ["negative", "positive"]}))
    (d / "tokenizer.json").write_text("{}")
    (d / "baseline" / "params.json").write_text("{}")
    (d / "baseline" / "arrays.npz").write_bytes(b"PK")
    return d


def test_new_version_format_and_order() -> None:
    t0 = datetime(2026, 11, 29, 4, 15, 0, tzinfo=UTC)
    v = new_version(t0)
    assert re.fullmatch(r"m20261129-041500-[0-9a-f]{4}", v)
    cet = timezone(timedelta(hours=1))
    assert new_version(datetime(2026, 11, 29, 5, 15, 0, tzinfo=cet)).startswith("m20261129-041500-")
    later = [new_version(t0 + timedelta(seconds=s)) for s in (1, 59, 3600, 86400 * 40)]
    assert sorted([*reversed(later), v]) == [v, *later]
    assert re.fullmatch(r"m\d{8}-\d{6}-[0-9a-f]{4}", new_version())


def test_store_version_copies_everything(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path)
    png = tmp_path / "confusion_sentiment.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    version = new_version()
    out = store_version(tmp_path / "reg", version, model_dir, {"confusion_sentiment.png": png})
    assert out == tmp_path / "reg" / "versions" / version
    got = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert got == ["baseline/arrays.npz", "baseline/params.json", "config.json",
                   "confusion_sentiment.png", "heads.json", "model.safetensors", "tokenizer.json"]
    assert (out / "model.safetensors").read_bytes() == b"\x00" * 64
    # no temp folders left behind, and a version cannot be overwritten
    assert [p.name for p in (tmp_path / "reg" / "versions").iterdir()] == [version]
    with pytest.raises(FileExistsError):
        store_version(tmp_path / "reg", version, model_dir)


@pytest.mark.parametrize("bad", ["pytorch_model.bin", "model.pt", "heads.pkl",
                                 "sub/state.pth", "baseline/model.joblib", "baseline/vocab.txt"])
def test_store_version_refuses_unsafe_files(tmp_path: Path, bad: str) -> None:
    model_dir = make_model_dir(tmp_path)
    (model_dir / bad).parent.mkdir(parents=True, exist_ok=True)
    (model_dir / bad).write_bytes(b"x")
    with pytest.raises(ValueError, match="only|baseline"):
        store_version(tmp_path / "reg", new_version(), model_dir)
    assert list_versions(tmp_path / "reg") == []
    assert not any((tmp_path / "reg").rglob("*.safetensors"))


def test_store_version_refuses_unsafe_extras_and_names(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path)
    pkl = tmp_path / "x.pkl"
    pkl.write_bytes(b"x")
    with pytest.raises(ValueError):
        store_version(tmp_path / "reg", new_version(), model_dir, {"x.pkl": pkl})
    with pytest.raises(ValueError):
        store_version(tmp_path / "reg", new_version(), model_dir, {"../escape.json": pkl})
    with pytest.raises(ValueError):
        store_version(tmp_path / "reg", "../evil", model_dir)


def test_store_version_cleans_up_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir = make_model_dir(tmp_path)

    def broken_rename(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(registry.os, "rename", broken_rename)
    with pytest.raises(OSError, match="disk full"):
        store_version(tmp_path / "reg", new_version(), model_dir)
    assert list((tmp_path / "reg" / "versions").iterdir()) == []


def test_list_versions_sorted_by_time(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    made = [new_version(t0 + timedelta(minutes=m)) for m in (30, 0, 90, 5)]
    for v in made:
        store_version(tmp_path / "reg", v, model_dir)
    assert list_versions(tmp_path / "reg") == sorted(made)
    assert list_versions(tmp_path / "reg")[-1] == made[2]
    assert list_versions(tmp_path / "nothing") == []


@pytest.mark.parametrize(
    ("candidate", "champion", "min_delta", "expected", "reason_bit"),
    [
        ({"val_score": 0.5, "val_split_id": "s1"}, None, 0.0, True, "first model"),
        ({"val_score": 0.80, "val_split_id": "s1"}, {"val_score": 0.75, "val_split_id": "s1"},
         0.0, True, "beats"),
        ({"val_score": 0.70, "val_split_id": "s1"}, {"val_score": 0.75, "val_split_id": "s1"},
         0.0, False, "does not beat"),
        ({"val_score": 0.75, "val_split_id": "s1"}, {"val_score": 0.75, "val_split_id": "s1"},
         0.0, False, "does not beat"),
        ({"val_score": 0.76, "val_split_id": "s1"}, {"val_score": 0.75, "val_split_id": "s1"},
         0.02, False, "does not beat"),
        ({"val_score": 0.99, "val_split_id": "s2"}, {"val_score": 0.75, "val_split_id": "s1"},
         0.0, False, "not comparable"),
        ({"val_score": float("nan"), "val_split_id": "s1"}, {"val_score": 0.7, "val_split_id": "s1"},
         0.0, False, "no finite"),
    ],
)
def test_should_promote_table(candidate: dict, champion: dict | None, min_delta: float,
                              expected: bool, reason_bit: str) -> None:
    promote, reason = should_promote(candidate, champion, min_delta=min_delta)
    assert promote is expected
    assert reason_bit in reason.lower()
    assert reason[0].isupper() and reason.endswith(".")


def test_manifest_round_trip(tmp_path: Path) -> None:
    import numpy as np

    info = {"val_score": np.float64(0.8), "ece": float("nan"), "path": tmp_path,
            "at": datetime(2026, 1, 1, tzinfo=UTC), "cm": np.array([[1, 2], [3, 4]])}
    path = write_manifest(tmp_path, info)
    assert path.name == "card.json"
    assert load_manifest(tmp_path) == {"val_score": 0.8, "ece": None, "path": str(tmp_path),
                                       "at": "2026-01-01T00:00:00+00:00", "cm": [[1, 2], [3, 4]]}


def _metrics(acc: float, f1: float, ece: float) -> dict:
    return {"n": 485, "accuracy": acc, "macro_f1": f1, "weighted_f1": f1, "ece": ece}


def card_info(gpt_val: float, base_val: float, served: str) -> dict:
    return {
        "backbone": {"preset": "gpt2-tiny", "checkpoint": "scratch"},
        "parameters": 1234567,
        "data": {"datasets": ["financial_phrasebank"], "split_sizes": {"train": 3876, "val": 485},
                 "label_counts": {"sentiment": {"negative": 604, "neutral": 2879}},
                 "val_split_id": "s1"},
        "training": {"epochs": 3, "time_s": 120.5, "tokens_per_s": 15321.2, "device": "cpu"},
        "metrics": {"sentiment": {
            "val": {"gpt": _metrics(0.8, gpt_val, 0.05), "baseline": _metrics(0.79, base_val, 0.04),
                    "ensemble": _metrics(0.82, 0.781, 0.03)},
            "test": {"gpt": _metrics(0.81, 0.771, 0.06), "baseline": _metrics(0.806, 0.764, 0.05)},
        }},
        "ensemble_weight": {"sentiment": 0.6},
        "served": {"sentiment": served},
        "promotion": {"promoted": True, "reason": "There is no champion yet, so it is promoted."},
    }


def test_model_card_gpt_wins() -> None:
    card = model_card("m20261129-041500-ab12", card_info(0.776, 0.745, "gpt"))
    assert "# Model card: m20261129-041500-ab12" in card
    assert "**GPT beats the baseline by +0.031 macro-F1 on validation**" in card
    assert "| validation | baseline | 485 | 0.790 | 0.745 | 0.745 | 0.040 |" in card
    assert "| test | baseline | 485 | 0.806 | 0.764 | 0.764 | 0.050 |" in card
    assert "| validation | ensemble | 485 | 0.820 | 0.781 |" in card
    assert "0.60 x GPT + 0.40 x baseline" in card
    assert "![confusion matrix, sentiment](confusion_sentiment.png)" in card
    assert "1,234,567" in card and "gpt2-tiny" in card and "15,321 tokens/s" in card
    assert "train 3,876" in card and "negative 604" in card
    assert "decision: **promoted**" in card and "no champion yet" in card


def test_model_card_baseline_wins_and_missing_sections() -> None:
    card = model_card("v1", card_info(0.70, 0.745, "baseline"))
    assert "**Baseline is better by 0.045 macro-F1 on validation: served model is baseline.**" in card
    sparse = model_card("v2", {})
    assert "No metrics were recorded." in sparse and "not recorded" in sparse


def test_model_card_names_a_catalogue_backbone_and_each_dataset_once() -> None:
    """A SmolLM2 fine-tune has no preset: the card names the backbone, not 'preset: not recorded'."""
    card = model_card("v3", {"backbone_name": "smollm2-135m", "backbone": {"preset": None, "checkpoint": None},
                             "data": {"datasets": ["synthetic", "synthetic", "phrasebank"]}})
    assert "- backbone: smollm2-135m" in card and "preset:" not in card and "checkpoint:" not in card
    assert "- datasets: synthetic, phrasebank\n" in card
