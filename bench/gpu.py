"""GPU check: multi-head fine-tuning and batch scoring on CUDA in bf16 autocast, with MFU.

One prepared script for a GPU worker. It runs the project's own code paths, not a toy loop:

- **fine-tune**: :func:`models.train.finetune` (the ``accelerate`` loop the ``finetune`` flow
  runs). It picks its device itself: ``Accelerator()`` takes CUDA when there is one and then
  sets ``mixed_precision="bf16"`` (autocast), else CPU in fp32. ``--device cpu`` therefore hides
  the GPUs (``CUDA_VISIBLE_DEVICES=""`` before torch is imported).
- **scoring**: :meth:`models.serving.ServedModel.score` (what ``score_shard`` calls in the score
  flow) with ``device=`` passed explicitly, as ``settings.score_device`` does; ``predict_ids``
  autocasts to bf16 on CUDA only. The served model is the one fine-tuned above, saved and loaded
  back from a version directory with its card. Forward-only figures time
  :func:`models.predict.predict_ids` on the same pre-tokenized rows.

Model: a from-scratch preset (``--preset``, default ``small``) with a byte-level BPE trained
here on the run's texts; nothing is downloaded (``HF_HUB_OFFLINE=1``). Text: the synthetic demo
stream of :mod:`sources.synthetic` (title + body, sentiment and topic labels), or with
``--data-dir`` Financial PhraseBank 50Agree (sentiment) + AG News test (topic). Rows are repeated
to reach ``--train-docs`` / ``--score-docs``; throughput does not depend on repeats.

FLOPs, per real (unpadded) token, N = non-embedding parameters (transformer blocks, final layer
norm, heads):

- fine-tune: ``6 N`` (forward + backward) and, with attention, ``+ 12 n_layer d l`` for a row
  of ``l`` tokens (the PaLM-paper formula; the training mix of lengths enters as sum(l^2)/sum(l)
  of the training rows);
- scoring: ``2 N`` and, with attention, ``+ 4 n_layer d l`` (exact sum over the scored rows).

MFU = achieved model FLOP/s / the dense matmul rate measured **in the same run**
(``torch.matmul`` of two ``--matmul-size`` squares, bf16 on CUDA, fp32 on CPU; best of several
timed blocks, each closed by ``torch.cuda.synchronize``), and against ``--peak-tflops`` (the
nominal dense bf16 peak of the card) when given. Padding work is not counted as model FLOPs; the
padded / real token ratio is reported next to it.

    python bench/gpu.py --device cuda --preset small            # on a GPU worker
    python bench/gpu.py --device cpu --preset tiny --seconds 20  # smoke test of the script on CPU

Writes ``bench/results/gpu.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script (python bench/x.py): the repository on the path
    sys.path.insert(0, str(ROOT))

from core.settings import use_local_env  # noqa: E402  (no torch / Prefect import inside)

use_local_env()  # HF_HUB_OFFLINE=1, TRANSFORMERS_OFFLINE=1, no telemetry


def _device_from_argv(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a == "--device" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--device="):
            return a.split("=", 1)[1]
    return None


if __name__ == "__main__" and _device_from_argv(sys.argv[1:]) == "cpu":
    # finetune() takes CUDA (and bf16) whenever torch sees a GPU: hide it before torch loads.
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.score import data_dir, param_counts, set_threads  # noqa: E402

console = Console(width=140)
FORMULAS = {
    "finetune": "model FLOPs = 6 * N_non_embedding * real_tokens; with attention + 12 * n_layer * n_embd * "
                "real_tokens * (sum l^2 / sum l over the training rows)",
    "scoring": "model FLOPs = 2 * N_non_embedding * real_tokens; with attention + 4 * n_layer * n_embd * "
               "sum(l^2) over the scored rows",
    "mfu": "achieved model FLOP/s / dense torch.matmul FLOP/s measured in the same run (and / --peak-tflops)",
}


# ----------------------------------------------------------------------------- data
def synthetic_rows(work: Path) -> tuple[pd.DataFrame, list[str], str]:
    """The demo stream's labelled articles: text = title + body, a sentiment and a topic label each."""
    from sources.synthetic import TOPICS, SyntheticConfig, generate_stream

    stream = generate_stream(work / "synthetic", SyntheticConfig())
    rows = pd.read_json(stream.labels_path, lines=True)
    wide = rows.pivot_table(index=["id", "title", "body"], columns="task", values="label", aggfunc="first").reset_index()
    df = pd.DataFrame({"text": (wide.title + " " + wide.body).tolist(),
                       "sentiment": wide["sentiment"].tolist(), "topic": wide["topic"].tolist()})
    return df, list(TOPICS), f"sources.synthetic demo stream ({len(df):,} labelled articles)"


def real_rows(root: Path) -> tuple[pd.DataFrame, list[str], str]:
    """PhraseBank 50Agree (sentiment only) + AG News test (topic only): the mixed-label case."""
    from sources import datasets as ds

    pb = ds.read_phrasebank(root / "financial_phrasebank" / "Sentences_50Agree.txt")
    pb = pb[pb.error.isna()]
    ag = ds.read_ag_news(root / "ag_news" / "test.csv")
    ag = ag[ag.error.isna()] if "error" in ag else ag
    ag_text = (ag.title.fillna("") + " " + ag.body.fillna("")).str.strip()
    df = pd.concat([pd.DataFrame({"text": pb.body.tolist(), "sentiment": pb.label.tolist(), "topic": None}),
                    pd.DataFrame({"text": ag_text.tolist(), "sentiment": None, "topic": ag.label.tolist()})],
                   ignore_index=True)
    topics = sorted(ag.label.dropna().unique().tolist())
    return df, topics, f"{root}: PhraseBank 50Agree ({len(pb):,}, sentiment) + AG News test ({len(ag):,}, topic)"


def tile(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` rows: ``df`` shuffled, repeated as often as needed."""
    reps = max(1, math.ceil(n / max(len(df), 1)))
    return pd.concat([df] * reps, ignore_index=True).sample(frac=1.0, random_state=seed).head(n).reset_index(drop=True)


def padded_ratio(lengths: np.ndarray, batch_size: int, sort: bool, seed: int = 0) -> float:
    """Padded / real tokens for batches of ``batch_size``: length-sorted (scoring) or shuffled (training)."""
    lens = np.sort(lengths) if sort else np.random.default_rng(seed).permutation(lengths)
    padded = sum(int(lens[s:s + batch_size].max()) * len(lens[s:s + batch_size]) for s in range(0, len(lens), batch_size))
    return padded / max(int(lengths.sum()), 1)


# ----------------------------------------------------------------------------- device + matmul
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def matmul_rate(dev: torch.device, dtype: torch.dtype, m: int, k: int, n: int, repeats: int = 5,
                target_s: float = 0.2) -> dict:
    """Dense ``torch.matmul`` rate, (m,k)x(k,n): warm-up, then ``repeats`` timed blocks of ``inner`` calls."""
    a = torch.randn(m, k, device=dev, dtype=dtype)
    b = torch.randn(k, n, device=dev, dtype=dtype)
    out = torch.empty(m, n, device=dev, dtype=dtype)
    for _ in range(3):
        torch.matmul(a, b, out=out)
    sync(dev)
    t = time.perf_counter()
    torch.matmul(a, b, out=out)
    sync(dev)
    inner = max(1, min(1000, int(target_s / max(time.perf_counter() - t, 1e-6))))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            torch.matmul(a, b, out=out)
        sync(dev)
        times.append(time.perf_counter() - t)
    flop = 2.0 * m * k * n * inner
    del a, b, out
    return {"shape": f"({m},{k})x({k},{n})", "dtype": str(dtype).replace("torch.", ""), "calls_per_timing": inner,
            "repeats": repeats, "tflops_best": flop / min(times) / 1e12, "tflops_median": flop / float(np.median(times)) / 1e12}


# ----------------------------------------------------------------------------- model
def new_model(preset: str, tok, topics: list[str]):
    from models.backbone import build_backbone
    from models.multihead import HeadsConfig, from_backbone

    torch.manual_seed(0)
    return from_backbone(build_backbone(preset, tok), HeadsConfig(topic_labels=list(topics)))


def _rates(flop_per_s: float, matmul_tflops: float, peak_tflops: float | None) -> dict:
    return {"tflops": flop_per_s / 1e12, "mfu_vs_measured_matmul": flop_per_s / (matmul_tflops * 1e12),
            "mfu_vs_peak": flop_per_s / (peak_tflops * 1e12) if peak_tflops else None}


# ----------------------------------------------------------------------------- fine-tune
def part_finetune(res: dict, preset: str, tok, topics: list[str], train: pd.DataFrame, val: pd.DataFrame,
                  batch_sizes: list[int], seconds: float, work: Path, dev: torch.device, max_length: int,
                  peak: float | None) -> Path:
    """Time-budgeted finetune() per batch size; returns the directory of the last fine-tuned model."""
    from models.predict import encode_texts
    from models.train import TrainConfig, finetune

    n_ne, cfg = res["params"]["non_embedding"], res["model"]
    ids, _, _ = encode_texts(tok, train["text"].tolist(), max_length)
    lengths = np.array([len(r) for r in ids], dtype=np.int64)
    l2_per_token = float((lengths.astype(np.float64) ** 2).sum() / lengths.sum())  # sum l^2 / sum l
    attn_per_token = 12.0 * cfg["n_layer"] * cfg["n_embd"] * l2_per_token
    mm = res["matmul"]["square"]["tflops_best"]

    # Warm-up: CUDA context, cuBLAS handles, autocast and allocator caches, lazy imports.
    t = time.perf_counter()
    finetune(new_model(preset, tok, topics).to(dev), tok, train.head(3 * max(batch_sizes)), val.head(64),
             TrainConfig(epochs=1, batch_size=max(batch_sizes), max_length=max_length), work / "warmup", progress=False)
    res["finetune_warmup_s"] = time.perf_counter() - t

    rows, out_dir = [], work / "finetuned"
    for bs in batch_sizes:
        model = new_model(preset, tok, topics)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        config = TrainConfig(epochs=10_000, patience=10_000, batch_size=bs, warmup_ratio=0.0, max_length=max_length,
                             time_budget_s=seconds / len(batch_sizes))
        out_dir = work / f"finetuned-bs{bs}"
        t = time.perf_counter()
        r = finetune(model, tok, train, val, config, out_dir, progress=False)
        wall = time.perf_counter() - t
        if r.device.split(":")[0] != dev.type:  # finetune() picks its own device: make sure it is ours
            raise RuntimeError(f"finetune ran on {r.device}, expected {dev.type}")
        tps = r.tokens_per_s
        ratio = padded_ratio(lengths, bs, sort=False)
        rows.append({
            "batch_size": bs, "device": r.device, "epochs_run": len(r.history), "wall_s": wall,
            "train_loop_s": sum(h["seconds"] for h in r.history),  # includes the per-epoch val pass
            "tokens_per_s": tps, "rows_per_s": tps / float(lengths.mean()),
            "padded_over_real_tokens": ratio,
            "flops_6N": _rates(6.0 * n_ne * tps, mm, peak),
            "flops_6N_plus_attention": _rates((6.0 * n_ne + attn_per_token) * tps, mm, peak),
            "mfu_6N_incl_padding_work": 6.0 * n_ne * tps * ratio / (mm * 1e12),
            "last_train_loss": r.history[-1]["train_loss"] if r.history else None,
            "peak_gpu_mem_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None,
        })
        del model, r
    res["finetune"] = {"train_rows": len(train), "val_rows": len(val), "mean_tokens_per_row": float(lengths.mean()),
                       "sum_l2_over_sum_l": l2_per_token, "formula": FORMULAS["finetune"], "runs": rows,
                       "tokens_per_s_note": "TrainResult.tokens_per_s: real tokens / time inside the batch loops "
                                            "(val passes, checkpoint saves and tokenization excluded)"}
    return out_dir


# ----------------------------------------------------------------------------- scoring
def part_scoring(res: dict, model_dir: Path, texts: list[str], batch_sizes: list[int], seconds: float,
                 dev: torch.device, peak: float | None) -> None:
    """ServedModel.score (tokenize + forward + frame) and predict_ids (forward only) per batch size."""
    from models.predict import default_max_length, encode_texts, predict_ids
    from models.registry import write_manifest
    from models.serving import ServedModel

    write_manifest(model_dir, {"served": {"sentiment": "gpt", "topic": "gpt"}})
    served = ServedModel(model_dir)
    tok, model = served.tokenizer, served.model
    ids, n_tokens, truncated = encode_texts(tok, texts, default_max_length(model, tok))
    real = int(n_tokens.sum())
    lengths = np.array([len(r) for r in ids], dtype=np.int64)
    n_ne, cfg = res["params"]["non_embedding"], res["model"]
    flop_2n = 2.0 * n_ne * real
    flop_attn = 4.0 * cfg["n_layer"] * cfg["n_embd"] * float((n_tokens.astype(np.float64) ** 2).sum())
    mm = res["matmul"]["square"]["tflops_best"]

    rows = []
    for bs in batch_sizes:
        served.score(texts[:2048], batch_size=bs, device=str(dev))  # warm-up at this batch size
        predict_ids(model, ids[:2048], tok.pad_token_id, batch_size=bs, device=dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        e2e, fwd, t_end = [], [], time.perf_counter() + seconds / len(batch_sizes)
        while not e2e or (time.perf_counter() < t_end and len(e2e) < 50):
            sync(dev)
            t = time.perf_counter()
            frame, emb = served.score(texts, batch_size=bs, device=str(dev))
            sync(dev)
            e2e.append(time.perf_counter() - t)
            t = time.perf_counter()
            predict_ids(model, ids, tok.pad_token_id, batch_size=bs, device=dev)
            sync(dev)
            fwd.append(time.perf_counter() - t)
        assert len(frame) == len(texts) and int(frame["n_tokens"].sum()) == real and emb.shape[0] == len(texts)
        assert next(model.parameters()).device.type == dev.type, "the served model did not run on the device"
        best_e2e, best_fwd = min(e2e), min(fwd)
        rows.append({
            "batch_size": bs, "repeats": len(e2e),
            "end_to_end": {"seconds_best": best_e2e, "seconds_median": float(np.median(e2e)),
                           "docs_per_s": len(texts) / best_e2e, "tokens_per_s": real / best_e2e,
                           "flops_2N": _rates(flop_2n / best_e2e, mm, peak),
                           "flops_2N_plus_attention": _rates((flop_2n + flop_attn) / best_e2e, mm, peak)},
            "forward_only": {"seconds_best": best_fwd, "docs_per_s": len(texts) / best_fwd, "tokens_per_s": real / best_fwd,
                             "flops_2N": _rates(flop_2n / best_fwd, mm, peak),
                             "flops_2N_plus_attention": _rates((flop_2n + flop_attn) / best_fwd, mm, peak)},
            "padded_over_real_tokens": padded_ratio(lengths, bs, sort=True),
            "peak_gpu_mem_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None,
        })

    # Does the bf16 path give the fp32 answer? The same served model, fp32 on CPU, on a subset.
    sub = texts[:512]
    p_dev = served.score(sub, batch_size=batch_sizes[0], device=str(dev))[0]
    p_cpu = served.score(sub, batch_size=batch_sizes[0], device="cpu")[0]
    cols = [c for c in p_dev.columns if c.startswith(("sentiment_p_", "topic_p_"))]
    diff = float(np.abs(p_dev[cols].to_numpy() - p_cpu[cols].to_numpy()).max())
    agree = float((p_dev["sentiment_label"] == p_cpu["sentiment_label"]).mean())
    res["scoring"] = {"docs": len(texts), "real_tokens": real, "mean_tokens_per_doc": float(lengths.mean()),
                      "truncated_docs": int(truncated.sum()), "formula": FORMULAS["scoring"], "runs": rows,
                      "vs_fp32_cpu": {"docs": len(sub), "max_abs_prob_diff": diff, "sentiment_label_agreement": agree}}


# ----------------------------------------------------------------------------- summary
def print_summary(res: dict) -> None:
    env, mm = res["env"], res["matmul"]
    console.print(f"[bold]GPU check[/bold] {res['device']['name']} ({res['device']['type']}, {res['device']['autocast']}), "
                  f"torch {env['torch']}, preset {res['model']['preset']} (N non-embedding {res['params']['non_embedding'] / 1e6:.2f}M), "
                  f"data: {res['data']['source']}")
    console.print(f"matmul baseline {mm['square']['shape']} {mm['square']['dtype']}: {mm['square']['tflops_best']:.2f} TFLOP/s "
                  f"(median {mm['square']['tflops_median']:.2f}); model-shape {mm['model_shape']['shape']}: "
                  f"{mm['model_shape']['tflops_best']:.2f}" + (f"; nominal peak {res['peak_tflops']:.0f}" if res["peak_tflops"] else ""))
    t = Table(title="fine-tune: models.train.finetune (MFU = 6N x tokens/s / measured matmul)")
    for c in ("batch", "tokens/s", "rows/s", "TFLOP/s 6N", "MFU 6N", "MFU 6N+attn", "MFU vs peak", "padded/real", "epochs", "GPU GiB"):
        t.add_column(c, justify="right")
    for r in res["finetune"]["runs"]:
        vp = r["flops_6N"]["mfu_vs_peak"]
        t.add_row(str(r["batch_size"]), f"{r['tokens_per_s']:,.0f}", f"{r['rows_per_s']:,.0f}", f"{r['flops_6N']['tflops']:.3f}",
                  f"{r['flops_6N']['mfu_vs_measured_matmul']:.2%}", f"{r['flops_6N_plus_attention']['mfu_vs_measured_matmul']:.2%}",
                  "-" if vp is None else f"{vp:.2%}", f"{r['padded_over_real_tokens']:.2f}", str(r["epochs_run"]),
                  "-" if r["peak_gpu_mem_gib"] is None else f"{r['peak_gpu_mem_gib']:.2f}")
    console.print(t)
    s = res["scoring"]
    t = Table(title=f"scoring: ServedModel.score, {s['docs']:,} docs, {s['real_tokens']:,} tokens (MFU = 2N x tokens/s / measured matmul)")
    for c in ("batch", "docs/s", "tokens/s", "MFU 2N", "MFU 2N+attn", "MFU vs peak", "fwd-only docs/s", "fwd MFU 2N", "padded/real", "GPU GiB"):
        t.add_column(c, justify="right")
    for r in s["runs"]:
        e, f = r["end_to_end"], r["forward_only"]
        vp = e["flops_2N"]["mfu_vs_peak"]
        t.add_row(str(r["batch_size"]), f"{e['docs_per_s']:,.0f}", f"{e['tokens_per_s']:,.0f}",
                  f"{e['flops_2N']['mfu_vs_measured_matmul']:.2%}", f"{e['flops_2N_plus_attention']['mfu_vs_measured_matmul']:.2%}",
                  "-" if vp is None else f"{vp:.2%}", f"{f['docs_per_s']:,.0f}", f"{f['flops_2N']['mfu_vs_measured_matmul']:.2%}",
                  f"{r['padded_over_real_tokens']:.2f}", "-" if r["peak_gpu_mem_gib"] is None else f"{r['peak_gpu_mem_gib']:.2f}")
    console.print(t)
    v = s["vs_fp32_cpu"]
    console.print(f"scoring {res['device']['autocast']} vs fp32 CPU on {v['docs']} docs: max |dp| {v['max_abs_prob_diff']:.1e}, sentiment labels "
                  f"agree {v['sentiment_label_agreement']:.1%}; total wall {res['wall_s']:.0f} s; 1-min load average "
                  f"{res['load_avg_1min'][0]:.1f} at start, {res['load_avg_1min'][-1]:.1f} at end")


# ----------------------------------------------------------------------------- main
def run(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    ap.add_argument("--preset", default="small", help="backbone preset: tiny, small or base (default small)")
    ap.add_argument("--seconds", type=float, default=60.0,
                    help="time budget per part (fine-tune, scoring), split over that part's batch sizes")
    ap.add_argument("--train-batch-sizes", type=int, nargs="+", default=None,
                    help="fine-tune batch sizes (default: 32 on CPU; 32 128 512 on CUDA)")
    ap.add_argument("--score-batch-sizes", type=int, nargs="+", default=None,
                    help="scoring batch sizes (default: 32 on CPU; 32 256 1024 on CUDA)")
    ap.add_argument("--train-docs", type=int, default=None, help="training rows (default 4000 CPU, 50000 CUDA)")
    ap.add_argument("--score-docs", type=int, default=None, help="scored texts (default 2000 CPU, 50000 CUDA)")
    ap.add_argument("--val-docs", type=int, default=256, help="validation rows scored after every epoch")
    ap.add_argument("--matmul-size", type=int, default=None, help="square matmul side (default 8192 CUDA, 1024 CPU)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="nominal dense bf16 TFLOP/s of the card (H100 SXM 989)")
    ap.add_argument("--data-dir", default=None, nargs="?", const="",
                    help="use PhraseBank + AG News from this folder (bare flag: $NEWSPULSE_DATA_DIR or ../shared/data)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default $NEWSPULSE_TORCH_THREADS or cpu count)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu.json")
    args = ap.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device (torch %s)" % torch.__version__)
    if args.device == "cpu" and torch.cuda.is_available():
        raise SystemExit("--device cpu: finetune() would still take the GPU; run with CUDA_VISIBLE_DEVICES= "
                         "(bench/gpu.py sets it itself when run as a script)")
    dev = torch.device("cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    cuda = dev.type == "cuda"
    train_bs = args.train_batch_sizes or ([32, 128, 512] if cuda else [32])
    score_bs = args.score_batch_sizes or ([32, 256, 1024] if cuda else [32])
    n_train = args.train_docs or (50_000 if cuda else 4_000)
    n_score = args.score_docs or (50_000 if cuda else 2_000)
    mm_n = args.matmul_size or (8192 if cuda else 1024)

    t0 = time.perf_counter()
    res: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "args": {k: str(v) for k, v in vars(args).items()},
                 "env": {**set_threads(args.threads), "python": platform.python_version(),
                         "cuda": torch.version.cuda, "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE")},
                 "peak_tflops": args.peak_tflops, "formulas": FORMULAS, "load_avg_1min": [os.getloadavg()[0]]}
    import accelerate
    import transformers
    res["env"].update(accelerate=accelerate.__version__, transformers=transformers.__version__)
    res["dtype"] = "bfloat16 autocast (fp32 weights and optimizer)" if cuda else "float32 (no autocast)"
    res["device"] = {"type": dev.type, "name": torch.cuda.get_device_name(dev) if cuda else cpu_name(),
                     "autocast": "bf16 autocast" if cuda else "fp32, no autocast",
                     "capability": ".".join(map(str, torch.cuda.get_device_capability(dev))) if cuda else None,
                     "memory_gib": torch.cuda.get_device_properties(dev).total_memory / 2**30 if cuda else None}

    from models.backbone import PRESETS
    from models.tokenizer import train_tokenizer

    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        work = Path(tmp)
        if args.data_dir is not None:
            base, topics, source = real_rows(data_dir(args.data_dir or None))
        else:
            base, topics, source = synthetic_rows(work)
        preset = PRESETS[args.preset]
        tok = train_tokenizer(base["text"].drop_duplicates().tolist(), work / "tokenizer", vocab_size=8000,
                              max_length=preset.n_positions)
        shuffled = base.sample(frac=1.0, random_state=0).reset_index(drop=True)
        val = shuffled.head(min(args.val_docs, len(base) // 5))
        train = tile(shuffled.iloc[len(val):], n_train, seed=1)
        texts = tile(base, n_score, seed=2)["text"].tolist()
        res["data"] = {"source": source, "distinct_rows": len(base), "train_rows": len(train), "val_rows": len(val),
                       "score_docs": len(texts), "topics": topics, "vocab_size": len(tok)}

        probe = new_model(args.preset, tok, topics)
        res["model"] = {"preset": args.preset, "n_layer": preset.n_layer, "n_embd": preset.n_embd, "n_head": preset.n_head,
                        "n_positions": preset.n_positions}
        res["params"] = param_counts(probe)
        del probe

        dtype = torch.bfloat16 if cuda else torch.float32
        console.print(f"{res['device']['name']}: matmul baseline {mm_n}^2 {dtype} ...")
        res["matmul"] = {"square": matmul_rate(dev, dtype, mm_n, mm_n, mm_n),
                         "model_shape": matmul_rate(dev, dtype, 4096, preset.n_embd, 4 * preset.n_embd)}

        console.print(f"fine-tune {len(train):,} rows, batch sizes {train_bs}, {args.seconds:.0f} s ...")
        model_dir = part_finetune(res, args.preset, tok, topics, train, val, train_bs, args.seconds, work, dev,
                                  preset.n_positions, args.peak_tflops)
        console.print(f"scoring {len(texts):,} docs, batch sizes {score_bs}, {args.seconds:.0f} s ...")
        part_scoring(res, model_dir, texts, score_bs, args.seconds, dev, args.peak_tflops)
    res["wall_s"] = time.perf_counter() - t0
    res["load_avg_1min"].append(os.getloadavg()[0])

    print_summary(res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=float), encoding="utf-8")
    console.print(f"wrote {args.out}")
    return res


if __name__ == "__main__":
    run()
