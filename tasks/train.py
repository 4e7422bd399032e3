"""Training tasks: export data, pretrain, fine-tune + evaluate, register and promote.

Tasks pass paths and small dicts. Model work happens in ``models`` (no Prefect there); the
registry row and the serving aliases (``champion``, ``cpu-champion``) are written under the DuckDB
writer slot.
"""

from __future__ import annotations

import json
import math
import shutil
from datetime import datetime
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from core.settings import Settings
from tasks.warehouse import writer_slot
from warehouse import registry as db_registry
from warehouse.connection import connect
from warehouse.training_data import intent_examples, labelled_examples, split_fingerprint, write_corpus


@task(name="export-training-data", cache_policy=NO_CACHE)
def export_training_data(settings: Settings, run_dir: str, sentiment_datasets: list[str], topic_datasets: list[str],
                         topic_top_k: int | None = None, seed: int = 0,
                         intent_datasets: list[str] | None = None,
                         max_per_intent: int | None = None) -> dict[str, Any]:
    """Labelled examples with deterministic splits -> ``examples.parquet``; returns path and split id.

    ``intent_datasets`` (support messages with gold intents) export the intent model's examples
    instead (``article_id`` = message id, ``intent``): an intent model is trained apart from the
    news heads, so the two kinds are never mixed in one file.
    """
    if intent_datasets and (sentiment_datasets or topic_datasets):
        raise ValueError("intent datasets train their own model: do not mix them with sentiment/topic datasets")
    with writer_slot(settings), connect(settings) as con:
        if intent_datasets:
            df = intent_examples(con, intent_datasets, seed=seed, max_per_intent=max_per_intent
                                 ).rename(columns={"message_id": "article_id"})
            df["title"] = None
        else:
            df = labelled_examples(con, sentiment_datasets, topic_datasets, topic_top_k=topic_top_k, seed=seed,
                                   prefer=(settings.relabel_dataset,))
    path = Path(run_dir) / "examples.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    sizes = df.split.value_counts().to_dict()
    get_run_logger().info("exported %d labelled examples %s", len(df), sizes)
    return {"path": str(path), "val_split_id": split_fingerprint(df), "sizes": sizes,
            "datasets": {"sentiment": sentiment_datasets, "topic": topic_datasets, "topic_top_k": topic_top_k,
                         "intent": list(intent_datasets or [])}}


@task(name="export-corpus", cache_policy=NO_CACHE)
def export_corpus(settings: Settings, run_dir: str, sources: list[str] | None = None, max_docs: int | None = None,
                  incremental: bool = False) -> dict[str, Any]:
    """Article texts for LM pretraining -> ``corpus.parquet``; every labelled text is left out.

    ``incremental``: only articles ingested after the previous export of this run folder (its
    ``corpus_state.json`` watermark), so each weekly run trains on what arrived since the last.
    Returns ``{path, written, excluded, since, watermark}``.
    """
    path = Path(run_dir) / "corpus.parquet"
    state_path = Path(run_dir) / "corpus_state.json"
    since = None
    if incremental and state_path.is_file():
        since = json.loads(state_path.read_text(encoding="utf-8")).get("watermark")
    with writer_slot(settings), connect(settings) as con:
        watermark = con.execute("SELECT max(ingested_at) FROM articles").fetchone()[0]
        counts = write_corpus(con, path, sources=sources, max_docs=max_docs,
                              since=datetime.fromisoformat(since) if since else None)
    get_run_logger().info("corpus: %d documents%s (%d labelled ones left out: they may be validation or test)",
                          counts.written, f" ingested after {since}" if since else "", counts.excluded)
    return {"path": str(path), "written": counts.written, "excluded": counts.excluded, "since": since,
            "watermark": watermark.isoformat() if watermark is not None else since}


@task(name="commit-corpus-watermark", cache_policy=NO_CACHE)
def commit_corpus_watermark(run_dir: str, corpus: dict[str, Any]) -> None:
    """Record how far the corpus of ``run_dir`` has been trained on (after training succeeded)."""
    state_path = Path(run_dir) / "corpus_state.json"
    state_path.write_text(json.dumps({"watermark": corpus["watermark"], "documents": corpus["written"]}),
                          encoding="utf-8")


@task(name="pretrain-backbone", cache_policy=NO_CACHE)
def pretrain_backbone(corpus: dict[str, Any], run_dir: str, base: str, vocab_size: int, config: dict[str, Any],
                      steps_per_run: int | None = None) -> dict[str, Any]:
    """Causal-LM training of a preset (tokenizer trained first) or a pretrained backbone (its own
    tokenizer), resumed from ``run_dir`` checkpoints; reports held-out perplexity before and after.

    ``steps_per_run`` makes the step budget relative: a run resumed at step S trains to
    S + steps_per_run (a weekly run on new data), instead of stopping at an absolute ``max_steps``.
    """
    import pandas as pd

    from models.backbone import PRESETS, build_backbone, load_backbone
    from models.pretrain import PretrainConfig, checkpoint_step, latest_checkpoint, pretrain
    from models.tokenizer import load_tokenizer, train_tokenizer

    log = get_run_logger()
    texts = pd.read_parquet(corpus["path"]).text.tolist()
    run = Path(run_dir)
    found = latest_checkpoint(run / "checkpoint")
    if not texts:
        log.info("no new articles since %s: nothing to train on, the backbone stays as it is", corpus.get("since"))
        if found is None:
            raise ValueError("the corpus is empty and there is no earlier checkpoint: ingest articles first")
        return {"steps": 0, "resumed_from": None, "model_dir": str(run / "checkpoint" / "model"), "base": base,
                "skipped": True, "val_perplexity": None, "val_perplexity_before": None, "tokens_per_s": 0.0}
    n_val = max(1, min(500, len(texts) // 50))
    val, train = texts[:n_val], texts[n_val:] or texts[:n_val]
    tok_dir = run / "tokenizer"
    if base in PRESETS:
        tok = load_tokenizer(tok_dir) if (tok_dir / "tokenizer.json").exists() else train_tokenizer(train, tok_dir, vocab_size)
        lm = build_backbone(base, tok)
    else:
        tok = load_tokenizer(base)
        lm = load_backbone(base, tok)
    if steps_per_run:  # relative budget: this run trains steps_per_run more steps than the checkpoint has
        step = checkpoint_step(found) if found is not None else 0
        config = {**config, "max_steps": step + steps_per_run}
    cfg = PretrainConfig(**config)
    result = pretrain(lm, tok, train, val, cfg, run / "checkpoint")
    before = None if math.isnan(result.val_perplexity_before) else result.val_perplexity_before
    log.info("trained to step %d (resumed from %d) on %d documents: held-out perplexity %s -> %.1f, %.0f tokens/s",
             result.steps, result.resumed_from, len(train), f"{before:.1f}" if before else "n/a",
             result.val_perplexity, result.tokens_per_s)
    if result.stopped_by == "time_budget":
        log.warning("pretraining stopped at step %d of %d: its time budget of %.0f s ran out (more steps: a larger "
                    "time budget, or run it again to resume)", result.steps, result.max_steps, cfg.time_budget_s)
    create_table_artifact(key="pretrain-history", table=result.history, description="Validation loss during pretraining")
    return {**asdict(result), "model_dir": str(run / "checkpoint" / "model"), "base": base,
            "val_perplexity_before": before, "documents": len(train), "skipped": False}


def resolve_base(settings: Settings, base: str | None) -> str:
    """What a ``--base`` names, as something ``run_experiment`` loads: a preset name or a directory.

    ``None`` is ``settings.default_backbone``. Catalogue names are converted into the backbone
    store on first use; ``pretrain:<run>``, pretrain run folders and model directories resolve to
    their model directory (:mod:`models.catalogue`). Raises ``BackboneError`` (one line) otherwise.
    """
    from models.catalogue import resolve

    resolved = resolve(base or settings.default_backbone, settings.backbones_dir, settings.runs_dir)
    return resolved.ref


def train_settings(settings: Settings, base: str, recipe: str) -> dict[str, Any]:
    """``recipe`` ('auto' resolved: frozen on CPU for pretrained backbones, full on GPU and for
    presets) and the compute ``precision`` (the cached per-machine probe on CPU, bf16 on CUDA)."""
    import torch

    from models.experiment import default_recipe
    from models.precision import resolve_precision

    on_gpu = torch.cuda.is_available()
    recipe = default_recipe(base, on_gpu) if recipe == "auto" else recipe
    precision = resolve_precision(settings.precision, cache_file=settings.precision_cache)
    return {"recipe": recipe, "precision": precision}


@task(name="finetune-and-evaluate", cache_policy=NO_CACHE)
def finetune_and_evaluate(examples_path: str, out_dir: str, base: str, train_config: dict[str, Any],
                          processes: int = 1) -> dict[str, Any]:
    """Fine-tune the heads, evaluate next to the TF-IDF baseline; returns the experiment info.

    ``processes > 1`` trains data-parallel on that many processes (one per GPU) through
    ``torchrun``; the flow stays one process, so exporting, registering and promoting happen once.
    """
    from models.experiment import run_experiment
    from models.train import TrainConfig

    if processes > 1:
        info = _launch_experiment(Path(examples_path), Path(out_dir), base, train_config, processes)
    else:
        info = run_experiment(Path(examples_path), Path(out_dir), base=base, config=TrainConfig(**train_config))
    get_run_logger().info("val macro-F1: GPT %.3f, baseline %.3f, ensemble %.3f (serving %s)",
                          info["val_scores"]["gpt"], info["val_scores"]["baseline"], info["val_scores"]["ensemble"],
                          info["served"])
    return info


def _launch_experiment(examples: Path, out_dir: Path, base: str, train_config: dict[str, Any],
                       processes: int) -> dict[str, Any]:
    """``torchrun --standalone --nproc_per_node N -m models.experiment ...``; returns its info.json."""
    import os
    import signal
    import subprocess
    import sys

    info_path, log_path = out_dir / "info.json", out_dir / "torchrun.log"
    info_path.unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           "-m", "models.experiment", str(examples), str(out_dir), "--base", base, "--config", json.dumps(train_config)]
    get_run_logger().info("training on %d processes (log: %s): %s", processes, log_path, " ".join(cmd))
    # Its own session: a cancelled or crashed flow run ends every rank (they hold the GPUs), not
    # only torchrun. Output goes to a file, not memory: training can run for hours.
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait()
        except BaseException:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            raise
    if code != 0 or not info_path.exists():
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
        raise RuntimeError(f"data-parallel training failed (exit {code}); {log_path} ends with:\n{tail}")
    return json.loads(info_path.read_text(encoding="utf-8"))


@task(name="register-model", cache_policy=NO_CACHE)
def register_model(settings: Settings, info: dict[str, Any], out_dir: str, data: dict[str, Any],
                   pretrained_from: str | None = None, alias: str = "champion") -> dict[str, Any]:
    """Store the version, record it, give it ``alias`` only if it passes that alias's gate; publish the card.

    ``champion`` (news fine-tunes) and ``intent-champion`` (intent models, against its holder): the gate (:mod:`models.selection`) scores the candidate and the
    current champion on the same rows, the candidate's held-out ``select`` half of validation, and
    promotes only when a paired bootstrap says the candidate wins; a champion validated on an older
    split is re-scored, so new labels never block promotion. ``cpu-champion`` (distilled students,
    never the champion): :func:`cpu_champion_gate`. The decision names its alias in
    ``model_promotions``, on the card and in the returned ``alias`` / ``reason``.
    """
    from models.experiment import served_summary
    from models.registry import model_card, new_version, store_version, write_manifest

    version = new_version()
    info = {**info, "val_split_id": data["val_split_id"]}
    info["data"] = {**info.get("data", {}), "val_split_id": data["val_split_id"],
                    "snapshot": f"labels of {data['datasets']}", "datasets": list(dict.fromkeys(
                        [*data["datasets"].get("sentiment", []), *data["datasets"].get("topic", []),
                         *data["datasets"].get("intent", [])]))}
    db_registry.check_alias(alias)
    with writer_slot(settings), connect(settings) as con:
        current = db_registry.holder(con, alias)
        champ = db_registry.champion(con)
    version_dir = store_version(settings.registry_dir, version, Path(out_dir) / "model")
    write_manifest(version_dir, info)  # the candidate must load (ServedModel) before the gate scores it
    if alias != db_registry.INTENT_CHAMPION:  # issue 17: what the monitor's health checks compare with
        info["health_reference"] = _health_reference(version_dir, data["path"])
    if alias in (db_registry.CHAMPION, db_registry.INTENT_CHAMPION):
        # An intent model is judged like a news fine-tune, against the intent model triage serves.
        promote, reason, evidence = champion_gate(settings, data["path"], version_dir, current)
        if alias == db_registry.INTENT_CHAMPION:
            reason = f"intent-champion: {reason}"
    else:
        promote, reason, evidence = cpu_champion_gate(settings, info, data["path"], version_dir, current, champ)
    info["promotion"] = {"alias": alias, "promoted": promote, "reason": reason, "evidence": evidence,
                         "holder_before": current["model_version"] if current else None,
                         "champion_before": champ["model_version"] if champ else None}
    card = model_card(version, info)
    (version_dir / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    write_manifest(version_dir, info)
    row = {"model_version": version, "backbone": info["backbone_name"], "pretrained_from": pretrained_from,
           "heads": info["heads"], "metrics": info["metrics"], "val_score": info["val_score"],
           "baseline_val_score": info["baseline_val_score"], "served": served_summary(info),
           "val_split_id": data["val_split_id"], "data_snapshot": data, "artifact_path": str(version_dir),
           "flow_run_id": str(flow_run.get_id()) if flow_run.get_id() else None}
    with writer_slot(settings), connect(settings) as con:
        db_registry.record_model(con, row)
        if promote:
            db_registry.promote(con, version, reason, alias=alias)
        else:
            db_registry.refuse(con, version, reason, alias=alias)
    # Intent models keep their own artifact key, so the news model's card stays one click away in the UI.
    create_markdown_artifact(key="intent-model-card" if alias == db_registry.INTENT_CHAMPION else "model-card",
                             markdown=card_with_pictures(card, version_dir), description=f"Model card {version}")
    shutil.rmtree(Path(out_dir) / "work", ignore_errors=True)
    get_run_logger().info("registered %s: %s", version, reason)
    return {"model_version": version, "alias": alias, "promoted": promote, "reason": reason, "path": str(version_dir),
            "card": card, "val_scores": info["val_scores"], "served": info["served"],
            "golden": info.get("golden")}


def _health_reference(version_dir: Path, examples_path: str) -> dict[str, Any]:
    """Store the label-free health reference in the version dir (a failure is logged, never fatal:
    the monitor backfills a missing reference)."""
    from tasks.health import registration_reference

    try:
        stats = registration_reference(version_dir, examples_path)
    except Exception as exc:  # noqa: BLE001 - registration must not fail on an optional file
        get_run_logger().warning("no health reference stored (%s: %s); the monitor will backfill it",
                                 type(exc).__name__, exc)
        return {"stored": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"stored": bool(stats), "origin": stats.get("origin"), "n": stats.get("n")}


def champion_gate(settings: Settings, examples_path: str, candidate_dir: Path,
                  champion: dict[str, Any] | None) -> tuple[bool, str, dict[str, Any]]:
    """``(promote, reason, evidence)``: both models scored on the candidate's ``select`` rows."""
    import numpy as np
    import pandas as pd

    from models.experiment import selection_halves
    from models.selection import gate
    from models.serving import ServedModel

    if champion is None:
        return True, "There is no champion yet, so the first model is promoted.", {}
    champ_dir = Path(champion["artifact_path"])
    precision = train_settings(settings, str(candidate_dir), "full")["precision"]
    try:
        champ = ServedModel(champ_dir, precision=precision)
    except (OSError, ValueError, RuntimeError) as exc:  # a champion that cannot load cannot serve either
        return True, (f"Promoted: the champion {champion['model_version']} cannot be loaded from {champ_dir} "
                      f"({type(exc).__name__}), so it cannot serve."), {}
    cand = ServedModel(candidate_dir, precision=precision)
    df = pd.read_parquet(examples_path)
    val = df[df.split == "validation"].reset_index(drop=True)
    rows = val[selection_halves(val.article_id if "article_id" in val else val.text)] if len(val) >= 20 else val
    pc, _ = cand.score(rows.text.tolist())
    ph, _ = champ.score(rows.text.tolist())
    pairs_c, pairs_h, labels = {}, {}, {}
    for head in ("sentiment", "topic", "intent"):
        names = getattr(cand.model.heads, f"{head}_labels")
        if not names or names != getattr(champ.model.heads, f"{head}_labels") or head not in rows:
            continue
        mask = rows[head].notna().to_numpy()
        if not mask.any():
            continue
        index = {n: i for i, n in enumerate(names)}
        y = np.array([index[v] for v in rows[head][mask]])
        pairs_c[head] = (y, np.array([index[v] for v in pc[f"{head}_label"][mask]]))
        pairs_h[head] = (y, np.array([index[v] for v in ph[f"{head}_label"][mask]]))
        labels[head] = names
    return gate(pairs_c, pairs_h, labels)


def cpu_champion_gate(settings: Settings, info: dict[str, Any], examples_path: str, candidate_dir: Path,
                      holder: dict[str, Any] | None, champion: dict[str, Any] | None) -> tuple[bool, str, dict[str, Any]]:
    """``(promote, reason, evidence)`` for a distilled student and the ``cpu-champion`` alias.

    With a holder, the student must beat it through the same paired-bootstrap gate as a
    fine-tune against the champion. Without one the hourly scorer serves the champion, so the
    student replaces the champion there: :func:`distill_gap_gate` (close enough to it).
    """
    if holder is not None:
        promote, reason, evidence = champion_gate(settings, examples_path, candidate_dir, holder)
        # The gate's text speaks of "the champion": here that is the incumbent student.
        return promote, f"cpu-champion, against its holder {holder['model_version']}: {reason}", evidence
    return distill_gap_gate(info, champion, settings.distill_max_gap)


def distill_gap_gate(info: dict[str, Any], champion: dict[str, Any] | None,
                     max_gap: float) -> tuple[bool, str, dict[str, Any]]:
    """The first cpu-champion: the student's served validation macro-F1 within ``max_gap`` of the champion's.

    Both figures are on the same rows, the student's ``select`` half of validation:
    ``run_distillation`` scores the teacher as served there (``metrics[head].validation.teacher``),
    so this needs the teacher to be the champion; the student's is its served kind per head
    (what ``val_score`` averages). The mean over the heads both have is compared.
    """
    if champion is None:
        return False, ("Not promoted to cpu-champion: there is no champion to compare the student with "
                       "(cpu-champion falls back to the champion)."), {}
    teacher = info.get("teacher")
    if teacher != champion["model_version"]:
        return False, (f"Not promoted to cpu-champion: its teacher {teacher} is not the champion "
                       f"{champion['model_version']}, whose score on the student's validation rows is therefore "
                       "unknown; distil the champion, or promote it by hand "
                       "(`newspulse models promote --alias cpu-champion`)."), {}
    student, teach = {}, {}
    for head, splits in (info.get("metrics") or {}).items():
        val = splits.get("validation") or {}
        kind = (info.get("served") or {}).get(head, "gpt")
        if "teacher" in val and kind in val:
            student[head], teach[head] = val[kind]["macro_f1"], val["teacher"]["macro_f1"]
    if not student:
        return False, ("Not promoted to cpu-champion: the teacher was not scored on any of the student's heads, "
                       "so the gap to the champion is unknown."), {}
    s, t = sum(student.values()) / len(student), sum(teach.values()) / len(teach)
    gap = t - s
    evidence = {"student": student, "champion": teach, "student_mean": round(s, 4), "champion_mean": round(t, 4),
                "gap": round(gap, 4), "max_gap": max_gap}
    where = f"served validation macro-F1 {s:.4f} against the champion {teacher}'s {t:.4f} on the same rows"
    if round(gap, 9) <= max_gap:  # inclusive; 0.80 - 0.77 is 0.030000000000000027 in floats
        return True, (f"Promoted to cpu-champion (no model held it): {where}, a gap of {gap:+.4f} within the "
                      f"allowed {max_gap:.4f}."), evidence
    return False, (f"Not promoted to cpu-champion: {where}, a gap of {gap:+.4f} beyond the allowed {max_gap:.4f} "
                   "(distill_max_gap); the hourly scorer keeps serving the champion."), evidence


def card_with_pictures(card: str, version_dir: Path) -> str:
    """The model card with its confusion-matrix PNGs inlined (data URIs), for the Prefect UI.

    MODEL_CARD.md links the PNGs beside it; an artifact has no "beside", so it carries them.
    """
    import base64
    import re

    def inline(match: re.Match[str]) -> str:
        png = version_dir / match.group(2)
        if not png.is_file():
            return match.group(0)
        return f"![{match.group(1)}](data:image/png;base64,{base64.b64encode(png.read_bytes()).decode('ascii')})"

    return re.sub(r"!\[([^\]]*)\]\(([\w.-]+\.png)\)", inline, card)


def dump(obj: Any) -> str:
    """JSON for logs and artifacts."""
    return json.dumps(obj, default=str, indent=2)
