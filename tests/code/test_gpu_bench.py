"""bench/gpu.py's core run on CPU with the tiny preset: every part runs and every figure is written."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_bench_runs_on_cpu(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("finetune() takes the GPU when torch sees one; the CPU run needs CUDA_VISIBLE_DEVICES=")
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "gpu.py")
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    out = tmp_path / "gpu.json"
    res = gpu.run(["--device", "cpu", "--preset", "tiny", "--seconds", "2", "--threads", "1", "--train-docs", "300",
                   "--score-docs", "200", "--val-docs", "64", "--matmul-size", "256", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res, default=float))
    assert res["device"]["type"] == "cpu" and res["dtype"].startswith("float32")
    assert res["matmul"]["square"]["tflops_best"] > 0
    ft = res["finetune"]["runs"][0]
    assert ft["device"] == "cpu" and ft["tokens_per_s"] > 0 and 0 < ft["flops_6N"]["mfu_vs_measured_matmul"]
    sc = res["scoring"]["runs"][0]
    assert sc["end_to_end"]["docs_per_s"] > 0 and sc["forward_only"]["tokens_per_s"] > 0
    assert res["scoring"]["vs_fp32_cpu"]["max_abs_prob_diff"] == 0.0  # fp32 on CPU both times
