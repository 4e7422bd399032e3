"""One fine-tuning experiment, end to end, with the baseline beside it.

Given labelled examples (a Parquet file with ``text, sentiment, topic, split``), build the
multi-head model (from a domain-pretrained backbone, a checkpoint, or a preset with a tokenizer
trained on the texts), fine-tune it, and evaluate it on validation and test next to a TF-IDF +
logistic-regression baseline trained on the same split in the same run, plus their ensemble when
it helps on validation. Writes the model directory (safetensors, tokenizer, heads, the baseline
as JSON/npz, confusion matrices) and returns a plain ``info`` dict for the registry and card.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.backbone import PRESETS, build_backbone, count_parameters, load_backbone
from models.baseline import TfidfLogReg, fit_ensemble_weight
from models.evaluate import classification_metrics, plot_confusion_matrix
from models.multihead import SENTIMENT_LABELS, HeadsConfig, from_backbone
from models.predict import predict
from models.registry import jsonable
from models.tokenizer import load_tokenizer, train_tokenizer
from models.train import TrainConfig, distributed_state, finetune

HEADS = ("sentiment", "topic")


def _backbone(base: str, texts: list[str], out_dir: Path, vocab_size: int):
    """(lm_model, tokenizer, description) from a preset name or a checkpoint directory / hub id.

    Under a launcher (torchrun / accelerate) the main process trains the tokenizer and the
    others load what it wrote, so every process has the same vocabulary.
    """
    if base in PRESETS:
        state = distributed_state()
        with state.main_process_first():
            tok = (train_tokenizer(texts, out_dir / "tokenizer", vocab_size=vocab_size) if state.is_main_process
                   else load_tokenizer(out_dir / "tokenizer"))
        return build_backbone(base, tok), tok, f"preset:{base}"
    tok = load_tokenizer(base)
    return load_backbone(base, tok), tok, f"checkpoint:{base}"


def run_experiment(
    examples_path: Path,
    out_dir: Path,
    *,
    base: str = "small",
    config: TrainConfig | None = None,
    vocab_size: int = 8000,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune + evaluate + baseline + ensemble; returns the info dict (also the card input)."""
    config = config or TrainConfig()
    df = pd.read_parquet(examples_path)
    train, val, test = (df[df.split == s].reset_index(drop=True) for s in ("train", "validation", "test"))
    if train.empty or val.empty:
        raise ValueError(f"need train and validation rows, got {df.split.value_counts().to_dict()}")
    topics = sorted(train.topic.dropna().unique().tolist())
    heads = HeadsConfig(sentiment_labels=list(SENTIMENT_LABELS), topic_labels=topics)
    work = out_dir / "work"
    lm, tok, backbone = _backbone(base, train.text.tolist(), work, vocab_size)
    model = from_backbone(lm, heads)

    t0 = time.perf_counter()
    result = finetune(model, tok, train, val, config, out_dir / "model", progress=progress)
    train_s = time.perf_counter() - t0
    if not distributed_state().is_main_process:
        return {}  # data-parallel helpers are done: the main process evaluates and writes

    kind, _, where = backbone.partition(":")
    info: dict[str, Any] = {
        "backbone": {"preset": where if kind == "preset" else None, "checkpoint": where if kind == "checkpoint" else None},
        "backbone_name": backbone, "parameters": count_parameters(model), "heads": asdict(heads),
        "training": {**asdict(config), "best_epoch": result.best_epoch, "time_s": round(train_s, 1),
                     "tokens_per_s": round(result.tokens_per_s), "device": result.device,
                     "processes": result.processes, "history": result.history},
        "data": {"datasets": sorted(set("+".join(df.dataset.astype(str)).split("+"))) if "dataset" in df else [],
                 "split_sizes": {s: int((df.split == s).sum()) for s in ("train", "validation", "test")},
                 "label_counts": {h: {str(k): int(v) for k, v in df[h].value_counts().items()} for h in HEADS}},
        "metrics": {}, "served": {}, "ensemble_weight": {},
    }
    preds = {name: predict(model, tok, part.text.tolist(), batch_size=64) for name, part in (("validation", val), ("test", test))}
    for head in HEADS:
        labels = heads.sentiment_labels if head == "sentiment" else heads.topic_labels
        if not labels or train[head].notna().sum() == 0:
            continue
        lab = train[head].notna()
        baseline = TfidfLogReg(labels=labels).fit(
            train.text[lab].tolist(), train[head][lab].tolist(),
            val.text[val[head].notna()].tolist(), val[head][val[head].notna()].tolist(),
        )
        baseline.save(out_dir / "model" / "baseline" / head)
        for split, part in (("validation", val), ("test", test)):
            mask = part[head].notna().to_numpy()
            if not mask.any():
                continue
            gpt_p = getattr(preds[split], f"{head}_probs")[mask]
            base_p = baseline.predict_proba(part.text[mask].tolist())
            y = part[head][mask].tolist()
            if split == "validation":
                y_idx = np.array([labels.index(v) for v in y])
                w, _ = fit_ensemble_weight(gpt_p, base_p, y_idx)
                info["ensemble_weight"][head] = w
            w = info["ensemble_weight"][head]
            for name, p in (("gpt", gpt_p), ("baseline", base_p), ("ensemble", w * gpt_p + (1 - w) * base_p)):
                m = classification_metrics(y, p, labels)
                info["metrics"].setdefault(head, {}).setdefault(split, {})[name] = m
                if name == "gpt" and split == "test":
                    plot_confusion_matrix(np.array(m["confusion_matrix"]), labels,
                                          out_dir / "model" / f"confusion_{head}.png", f"{head} (test, GPT)")
    val_m = {h: info["metrics"][h]["validation"] for h in info["metrics"]}
    # Serve, per head, what wins on validation: the GPT head alone or the GPT + TF-IDF ensemble.
    for head, m in val_m.items():
        info["served"][head] = "ensemble" if m["ensemble"]["macro_f1"] > m["gpt"]["macro_f1"] else "gpt"
    score = {k: float(np.mean([v[k]["macro_f1"] for v in val_m.values()])) for k in ("gpt", "baseline", "ensemble")}
    info["val_score"] = float(np.mean([val_m[h][info["served"][h]]["macro_f1"] for h in val_m]))
    info["baseline_val_score"] = score["baseline"]
    info["val_scores"] = score
    return info


def served_summary(info: dict[str, Any]) -> str:
    """One word for the registry row: gpt, ensemble, or mixed (per head)."""
    kinds = set(info.get("served", {}).values())
    return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "gpt")


def main(argv: list[str] | None = None) -> None:
    """``torchrun --nproc_per_node N -m models.experiment EXAMPLES OUT_DIR --base B --config JSON``.

    One experiment trained data-parallel over N processes (GPUs); the main process evaluates and
    writes ``OUT_DIR/info.json``. The finetune task launches this when ``train_processes > 1``.
    """
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("examples", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--base", default="small")
    parser.add_argument("--config", default="{}", help="TrainConfig fields as JSON")
    args = parser.parse_args(argv)
    info = run_experiment(args.examples, args.out_dir, base=args.base, config=TrainConfig(**json.loads(args.config)),
                          progress=False)
    if distributed_state().is_main_process:
        (args.out_dir / "info.json").write_text(json.dumps(jsonable(info)), encoding="utf-8")


if __name__ == "__main__":
    main()
