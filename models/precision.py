"""Compute precision per machine: bf16 autocast where it measures faster, fp32 elsewhere.

CPUs differ wildly: with AMX or AVX512-BF16 a bf16 matmul runs 2.5-6x faster than fp32 (a 135M
model scores 2.8-3.5x faster under bf16 autocast), while a CPU without native bf16 emulates it
and runs ~80x *slower*. So the choice is measured, never assumed: :func:`probe` times the same
matmul in both precisions (about 0.1 s) and picks bf16 only when it is at least
``MIN_SPEEDUP`` faster. The answer is cached per machine signature (CPU model, flags, torch
version, threads) in a small JSON file, so every later process pays nothing.

On CUDA the answer is always bf16 (every GPU this project targets has bf16 tensor cores).
Weights stay fp32 in every autocast mode: autocast runs matmuls in bf16 and keeps reductions
(softmax, norms, losses) in fp32.

``int8`` is a scoring-only option, never chosen by ``auto``: :func:`quantize_int8` makes a copy
of the model whose backbone Linear layers hold int8 weights (per output channel) and quantise
their activations per batch on the fly (PyTorch dynamic quantisation, fbgemm/x86 kernels using
VNNI where the CPU has it). Heads, norms and embeddings stay fp32. It trades a little agreement
with fp32 for speed, so ``bench/score.py`` prints its label agreement next to its docs/s.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16")  # training and scoring
SCORE_PRECISIONS = (*PRECISIONS, "int8")  # scoring only: int8 needs a quantised copy of the model
MIN_SPEEDUP = 1.3  # bf16 must beat fp32 by this factor to be chosen (noise margin)


@dataclass
class ProbeResult:
    """What the probe measured and chose."""

    precision: str  # "bf16" or "fp32"
    fp32_gflops: float
    bf16_gflops: float
    speedup: float
    signature: str


def machine_signature() -> str:
    """A short id of what decides bf16 speed: CPU model and flags, torch version, threads."""
    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))]
        cpu = "".join(sorted(set(lines)))
    except OSError:
        cpu = platform.processor()
    raw = f"{cpu}|{torch.__version__}|{torch.get_num_threads()}|{platform.machine()}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _rate(dtype: torch.dtype, n: int, seconds: float) -> float:
    """GFLOP/s of ``n x n @ n x n`` matmuls in ``dtype``, best over ~``seconds``."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b  # warm-up (kernel selection, page faults)
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def probe(n: int = 512, seconds: float = 0.05) -> ProbeResult:
    """Time fp32 vs bf16 matmuls on this CPU and choose (see the module docstring)."""
    fp32 = _rate(torch.float32, n, seconds)
    bf16 = _rate(torch.bfloat16, n, seconds)
    speedup = bf16 / fp32
    return ProbeResult("bf16" if speedup >= MIN_SPEEDUP else "fp32", round(fp32, 1), round(bf16, 1),
                       round(speedup, 2), machine_signature())


def cpu_precision(cache_file: Path | None = None) -> ProbeResult:
    """The probe's answer for this machine, from ``cache_file`` when it was measured before."""
    sig = machine_signature()
    cache: dict = {}
    if cache_file is not None and Path(cache_file).is_file():
        try:
            cache = json.loads(Path(cache_file).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cache = {}
        if sig in cache:
            return ProbeResult(**cache[sig])
    result = probe()
    if cache_file is not None:
        cache[sig] = asdict(result)
        path = Path(cache_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=2), encoding="utf-8")
        tmp.replace(path)
    return result


def resolve_precision(setting: str, device: str | torch.device | None = None, cache_file: Path | None = None,
                      *, allowed: tuple[str, ...] = PRECISIONS) -> str:
    """``"bf16"`` or ``"fp32"`` (or a forced ``"int8"`` where ``allowed``) for ``device`` (default:
    CUDA when present, else CPU): a forced setting wins; ``auto`` is bf16 on CUDA and the cached
    probe's answer on CPU."""
    if setting not in allowed:
        raise ValueError(f"precision must be one of {', '.join(allowed)}, not {setting!r}")
    if setting == "int8" and device is not None and torch.device(device).type == "cuda":
        raise ValueError("int8 dynamic quantisation runs on CPU only: use bf16 on CUDA")
    if setting != "auto":
        return setting
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")  # where this process computes
    if torch.device(device).type == "cuda":
        return "bf16"
    return cpu_precision(cache_file).precision


def autocast(device: str | torch.device, precision: str):
    """The autocast context for ``precision`` on ``device`` (a no-op for fp32 and int8)."""
    dev = torch.device(device).type
    return torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=precision == "bf16")


def _conv1d_as_linear(module: torch.nn.Module) -> torch.nn.Linear:
    """GPT-2's ``Conv1D`` (weight (in, out), ``x @ W + b``) as the equivalent ``nn.Linear`` (weight (out, in))."""
    weight = module.weight.detach()
    linear = torch.nn.Linear(weight.shape[0], weight.shape[1], bias=module.bias is not None)
    linear.weight.data.copy_(weight.t())
    if module.bias is not None:
        linear.bias.data.copy_(module.bias.detach())
    return linear


# The MLP's down projection reads the SwiGLU / GELU product, whose few huge outlier channels make a
# per-tensor int8 scale useless for every other channel: on SmolLM2-135M, quantising it too turned the
# pooled features' centred cosine with fp32 from 0.98 into 0.42. It stays fp32 (~25% of the FLOPs).
KEEP_FP32 = ("down_proj", "mlp.c_proj")


def quantize_int8(model: torch.nn.Module, skip: tuple[str, ...] = ("sentiment", "topic", "intent", "lm_head"),
                  keep_fp32: tuple[str, ...] = KEEP_FP32) -> torch.nn.Module:
    """A CPU copy of ``model`` with int8 dynamic quantisation of its Linear layers (see the module docstring).

    GPT-2 blocks use ``Conv1D`` rather than ``nn.Linear``; they are converted first so that they
    are quantised too. Modules whose name starts with one of ``skip`` (the classification heads,
    an LM head) or ends with one of ``keep_fp32`` (see ``KEEP_FP32``) stay fp32. The original
    model is untouched.
    """
    import copy
    import warnings

    qmodel = copy.deepcopy(model).cpu().eval()
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a dependency
        Conv1D = ()  # noqa: N806
    targets: set[str] = set()
    for parent_name, parent in list(qmodel.named_modules()):
        for name, child in list(parent.named_children()):
            full = f"{parent_name}.{name}" if parent_name else name
            if full.startswith(skip) or full.endswith(keep_fp32):
                continue
            if Conv1D and isinstance(child, Conv1D):
                setattr(parent, name, _conv1d_as_linear(child))
                targets.add(full)
            elif isinstance(child, torch.nn.Linear):
                targets.add(full)
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch.ao eager quantisation warns it is deprecated; it is what ships in 2.x
        warnings.simplefilter("ignore")
        return quantize_dynamic(qmodel, {name: per_channel_dynamic_qconfig for name in targets}, dtype=torch.qint8)


def is_quantized(model: torch.nn.Module) -> bool:
    """True when ``model`` holds dynamically quantised (int8) layers, i.e. came from :func:`quantize_int8`."""
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())
