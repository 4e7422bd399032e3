"""The per-machine precision probe: measured once, cached by machine signature, forced settings win."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models import precision
from models.precision import ProbeResult, cpu_precision, resolve_precision


def test_probe_chooses_by_measured_speed(monkeypatch) -> None:
    rates = {"torch.float32": 100.0, "torch.bfloat16": 250.0}
    monkeypatch.setattr(precision, "_rate", lambda dtype, n, s: rates[str(dtype)])
    assert precision.probe().precision == "bf16"
    rates["torch.bfloat16"] = 1.2  # emulated bf16 (no native support): ~80x slower
    assert precision.probe().precision == "fp32"
    rates["torch.bfloat16"] = 120.0  # faster, but within the noise margin
    assert precision.probe().precision == "fp32"


def test_cached_per_machine_signature(tmp_path: Path, monkeypatch) -> None:
    calls = []

    def fake_probe() -> ProbeResult:
        calls.append(1)
        return ProbeResult("bf16", 100.0, 300.0, 3.0, precision.machine_signature())

    monkeypatch.setattr(precision, "probe", fake_probe)
    cache = tmp_path / "machine" / "precision.json"
    assert cpu_precision(cache).precision == "bf16" and cpu_precision(cache).precision == "bf16"
    assert len(calls) == 1  # the second answer came from the file
    saved = json.loads(cache.read_text())
    assert list(saved) == [precision.machine_signature()]
    monkeypatch.setattr(precision, "machine_signature", lambda: "another-machine")
    cpu_precision(cache)
    assert len(calls) == 2 and len(json.loads(cache.read_text())) == 2  # another machine measures again


def test_resolve(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(precision, "probe", lambda: ProbeResult("fp32", 1, 1, 1.0, "x"))
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("fp32", "cuda") == "fp32"
    assert resolve_precision("auto", "cuda") == "bf16"
    assert resolve_precision("auto", "cpu", tmp_path / "p.json") == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp8", "cpu")


def test_real_probe_runs_quickly() -> None:
    result = precision.probe(n=128, seconds=0.01)
    assert result.precision in ("bf16", "fp32") and result.fp32_gflops > 0 and result.bf16_gflops > 0
