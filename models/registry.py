"""Versioned model directories, manifests, promotion rule and model cards (files only).

A version lives in ``<registry_root>/versions/<version>/`` and is written atomically (copied to a
temporary folder, then renamed). Only safetensors weights are accepted; the TF-IDF baseline may
ride along in a ``baseline/`` subfolder of JSON/npz. ``card.json`` next to the model is the
manifest; the database side of the registry lives elsewhere.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
from datetime import UTC, date, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from models.evaluate import metrics_table

MANIFEST = "card.json"
FORBIDDEN_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".joblib", ".ckpt"}
BASELINE_SUFFIXES = {".json", ".npz"}
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SPLIT_NAMES = {"val": "validation", "validation": "validation", "test": "test", "train": "train"}


def new_version(now: datetime | None = None) -> str:
    """A sortable version id such as ``m20261129-041500-ab12`` (UTC time + 4 random hex digits)."""
    now = now or datetime.now(UTC)
    if now.tzinfo is not None:
        now = now.astimezone(UTC)
    return f"m{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def list_versions(registry_root: Path) -> list[str]:
    """Stored version ids, oldest first (ids sort by creation time)."""
    versions = Path(registry_root) / "versions"
    if not versions.is_dir():
        return []
    return sorted(p.name for p in versions.iterdir() if p.is_dir() and not p.name.startswith("."))


def _check_file(rel: PurePosixPath, real: Path) -> None:
    """Refuse pickle-capable weight files; inside ``baseline/`` allow only JSON and npz."""
    suffixes = {rel.suffix.lower(), real.suffix.lower()}
    if suffixes & FORBIDDEN_SUFFIXES:
        raise ValueError(f"{rel}: only safetensors weights are accepted (no .bin/.pt/.pkl files)")
    if rel.parts[0] == "baseline" and rel.suffix.lower() not in BASELINE_SUFFIXES:
        raise ValueError(f"{rel}: the baseline/ folder may only hold .json and .npz files")


def store_version(
    registry_root: Path,
    version: str,
    model_dir: Path,
    extra_files: dict[str, Path] | None = None,
) -> Path:
    """Copy ``model_dir`` (plus ``extra_files`` as ``{name in version dir: source}``) atomically.

    Raises ``ValueError`` for a bad version id or a ``.bin``/``.pt``/``.pkl`` (etc.) file,
    ``FileExistsError`` if the version exists. Returns ``registry_root/versions/<version>``.
    """
    if not VERSION_RE.match(version):
        raise ValueError(f"invalid version id {version!r}")
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    extras = [(PurePosixPath(name), Path(src)) for name, src in (extra_files or {}).items()]
    for rel, src in extras:
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ValueError(f"extra file name {rel!s} must be a relative path inside the version")
        if not src.is_file():
            raise FileNotFoundError(f"extra file {src} does not exist")
    versions = Path(registry_root) / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    final = versions / version
    if final.exists():
        raise FileExistsError(f"version {version} already exists in {versions}")
    tmp = versions / f".tmp-{version}-{secrets.token_hex(4)}"
    try:
        shutil.copytree(model_dir, tmp)
        for rel, src in extras:
            dest = tmp.joinpath(*rel.parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
        for path in sorted(tmp.rglob("*")):  # check what was really copied (links followed)
            if path.is_file():
                _check_file(PurePosixPath(path.relative_to(tmp).as_posix()), path)
        os.rename(tmp, final)  # atomic on one filesystem; fails if ``final`` appeared meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def should_promote(
    candidate: dict[str, Any],
    champion: dict[str, Any] | None,
    metric: str = "val_score",
    min_delta: float = 0.0,
) -> tuple[bool, str]:
    """Promote when there is no champion, or the candidate beats it by more than ``min_delta``.

    Scores are only compared when both were measured on the same validation split
    (``val_split_id``). Returns ``(promote, reason)`` with the reason as a full sentence.
    """
    if champion is None:
        return True, "There is no champion yet, so the first model is promoted."
    cand_split, champ_split = candidate.get("val_split_id"), champion.get("val_split_id")
    if cand_split != champ_split:
        return False, (f"Not promoted: the candidate was validated on split {cand_split!r} but the "
                       f"champion on {champ_split!r}, so their scores are not comparable.")
    cand, champ = candidate.get(metric), champion.get(metric)
    for who, value in (("candidate", cand), ("champion", champ)):
        if not isinstance(value, (int, float)) or not math.isfinite(float(value)):
            return False, f"Not promoted: the {who} has no finite {metric} ({value!r})."
    delta = float(cand) - float(champ)
    if delta > min_delta:
        return True, (f"Promoted: {metric} {float(cand):.4f} beats the champion's "
                      f"{float(champ):.4f} by {delta:+.4f} (required more than {min_delta:+.4f}).")
    return False, (f"Not promoted: {metric} {float(cand):.4f} does not beat the champion's "
                   f"{float(champ):.4f} by more than {min_delta:+.4f} (difference {delta:+.4f}).")


def jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays, paths and datetimes to JSON; non-finite floats become None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic)):
        return jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (datetime, date, Path)):
        return value.isoformat() if not isinstance(value, Path) else str(value)
    return value


def write_manifest(version_dir: Path, info: dict[str, Any]) -> Path:
    """Write ``info`` as ``card.json`` in ``version_dir`` (atomic replace). Returns its path."""
    path = Path(version_dir) / MANIFEST
    tmp = path.with_name(f".{MANIFEST}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(json.dumps(jsonable(info), indent=2, allow_nan=False), encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_manifest(version_dir: Path) -> dict[str, Any]:
    """Read ``card.json`` from ``version_dir``."""
    return json.loads((Path(version_dir) / MANIFEST).read_text(encoding="utf-8"))


def _backbone_lines(info: dict[str, Any], backbone: dict[str, Any]) -> list[str]:
    """What the model was built on: the backbone it names (a catalogue model such as SmolLM2 has no
    preset), then the preset or checkpoint only when there is one."""
    name = info.get("backbone_name") or backbone.get("name")
    lines = [f"- backbone: {name}"] if name else []
    if backbone.get("preset") or not name:
        lines.append(f"- preset: {_fmt(backbone.get('preset'))}")
    if backbone.get("checkpoint") or not name:
        lines.append(f"- checkpoint: {_fmt(backbone.get('checkpoint'))}")
    return lines


def _fmt(value: Any, spec: str = ",") -> str:
    """Format a number for the card, or say it was not recorded."""
    try:
        return "not recorded" if value is None else format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def _verdict(head: str, splits: dict[str, dict[str, Any]], served: str | None) -> str:
    """Bold GPT-vs-baseline verdict on validation macro-F1 (test if no validation)."""
    for split in ("val", "validation", "test"):
        models = splits.get(split, {})
        gpt = (models.get("gpt") or {}).get("macro_f1")
        base = (models.get("baseline") or {}).get("macro_f1")
        if gpt is not None and base is not None:
            break
    else:
        return f"**{head}: no GPT-vs-baseline comparison was recorded.**"
    where = SPLIT_NAMES.get(split, split)
    delta = gpt - base
    served_txt = f"served model is {served}" if served else "served model not recorded"
    if delta > 0:
        return f"**GPT beats the baseline by {delta:+.3f} macro-F1 on {where}** ({served_txt})."
    if delta < 0:
        return f"**Baseline is better by {-delta:.3f} macro-F1 on {where}: {served_txt}.**"
    return f"**GPT ties the baseline on {where} macro-F1: {served_txt}.**"


def _head_section(head: str, splits: dict[str, dict[str, Any]], info: dict[str, Any]) -> list[str]:
    """Metrics table, verdict, calibration and confusion-matrix link of one head."""
    rows = []
    for split, models in splits.items():
        known = ("gpt", "baseline", "ensemble")
        for name in (*known, *sorted(set(models) - set(known))):
            m = models.get(name)
            if m:
                rows.append({"split": SPLIT_NAMES.get(split, split), "model": name, "n": m.get("n"),
                             "accuracy": m.get("accuracy"), "macro-F1": m.get("macro_f1"),
                             "weighted-F1": m.get("weighted_f1"), "ECE": m.get("ece")})
    served = (info.get("served") or {}).get(head)
    lines = [f"### Head: {head}", "", _verdict(head, splits, served), "", metrics_table(rows), ""]
    weight = (info.get("ensemble_weight") or {}).get(head)
    if weight is not None:
        lines += [f"Ensemble = {weight:.2f} x GPT + {1 - weight:.2f} x baseline "
                  "(weight tuned on validation macro-F1).", ""]
    eces = [f"{r['model']} {r['ECE']:.3f} ({r['split']})" for r in rows if r["ECE"] is not None]
    lines += ["Calibration (ECE, 15 bins, lower is better): " + ("; ".join(eces) or "not recorded"),
              "", f"![confusion matrix, {head}](confusion_{head}.png)", ""]
    return lines


def _served_lines(info: dict[str, Any]) -> list[str]:
    """What is really served, per head, in one line each (the first thing a reader needs)."""
    served = info.get("served") or {}
    if not served:
        return []
    weights = info.get("ensemble_weight") or {}
    out = ["## Served", ""]
    for head, kind in served.items():
        w = weights.get(head)
        what = {"gpt": "the GPT head alone", "baseline": "**the TF-IDF baseline** (the GPT earned less than 0.2 "
                f"of the best mix{f', w={w:.2f}' if w is not None else ''})",
                "ensemble": f"GPT + TF-IDF ensemble (w={w:.2f} on the GPT)" if w is not None else "an ensemble"}
        out.append(f"- {head}: {what.get(kind, kind)}")
    return [*out, ""]


def _golden_lines(golden: dict[str, Any] | None) -> list[str]:
    """Sentiment accuracy on the shipped real-text golden set, next to the synthetic/held-out figures."""
    if not golden:
        return []
    rows = [{"model": name, "n": golden.get("n"), "accuracy": m.get("accuracy"), "macro-F1": m.get("macro_f1")}
            for name, m in golden.items() if isinstance(m, dict)]
    return ["## Real-text golden set (sentiment)", "",
            f"{golden.get('n')} realistic headlines with real company names, written by the NewsPulse developers "
            "(models/golden/); never used for training or selection.", "", metrics_table(rows), ""]


def _distillation_lines(info: dict[str, Any]) -> list[str]:
    """Lineage of a distilled student: its teacher, the soft-target recipe and any truncation."""
    dist = info.get("distillation")
    if not dist:
        return []
    lines = ["## Distillation", "", f"- teacher: {_fmt(dist.get('teacher'))}",
             f"- student: {_fmt(dist.get('student'))} (context {_fmt(dist.get('context'))}, "
             f"{_fmt(dist.get('max_length'))} tokens per text)",
             f"- temperature {_fmt(dist.get('temperature'))}, alpha {_fmt(dist.get('alpha'))} (soft targets on "
             f"{', '.join(dist.get('soft_heads') or []) or 'no head'}), unlabelled pool {_fmt(dist.get('pool'))} texts",
             "- the teacher, as served, is the `teacher` row of each metrics table"]
    if dist.get("note"):
        lines.append(f"- note: {dist['note']}")
    return [*lines, ""]


def _auto_answer_lines(auto: dict[str, Any] | None) -> list[str]:
    """The intent model's auto-answer threshold: what triage answers without a person, and how precisely."""
    if not auto:
        return []
    lines = ["## Auto-answer (triage)", ""]
    if auto.get("threshold") is None:
        return [*lines, f"- no threshold: {auto.get('reason')}; triage sends every message to a person", ""]
    on_test = (f"- on test: precision {_fmt(auto.get('test_precision'), '.3f')}, coverage "
               f"{_fmt(auto.get('test_coverage'), '.1%')} of messages" if "test_coverage" in auto
               else "- on test: no test rows (the threshold is unchecked on unseen messages)")
    return [*lines, f"- threshold: confidence >= {auto['threshold']:.3f}, tuned on validation to "
                    f"{auto['target']:.0%} precision ({auto.get('reason')})", on_test, ""]


def model_card(version: str, info: dict[str, Any]) -> str:
    """Markdown model card: backbone, data, training, metrics vs baseline, calibration, promotion.

    ``info`` keys (all optional): ``backbone`` {preset, checkpoint}, ``parameters``, ``data``
    {snapshot, datasets, split_sizes, label_counts, val_split_id}, ``training`` {epochs, time_s,
    tokens_per_s, device}, ``metrics`` {head: {split: {"gpt"|"baseline"|"ensemble": metrics}}},
    ``ensemble_weight`` {head: w}, ``served`` {head: model}, ``promotion`` {promoted, reason}.
    """
    backbone = info.get("backbone") or {}
    data = info.get("data") or {}
    training = info.get("training") or {}
    promotion = info.get("promotion") or {}
    sizes = data.get("split_sizes") or {}
    lines = [f"# Model card: {version}", "", *_served_lines(info), *_distillation_lines(info), "## Backbone", "",
             *_backbone_lines(info, backbone),
             f"- parameters: {_fmt(info.get('parameters', backbone.get('parameters')))}",
             f"- recipe: {_fmt(info.get('recipe'))} (trainable parameters: "
             f"{_fmt(info.get('trainable_parameters'))})",
             f"- prompt: {_fmt((info.get('heads') or {}).get('prompt'))!r}", "",
             "## Data", "",
             f"- snapshot: {_fmt(data.get('snapshot'))}",
             f"- datasets: {', '.join(dict.fromkeys(data.get('datasets') or [])) or 'not recorded'}",
             f"- validation split id: {_fmt(data.get('val_split_id', info.get('val_split_id')))}",
             "- split sizes: " + (", ".join(f"{k} {_fmt(v)}" for k, v in sizes.items())
                                  or "not recorded")]
    for head, counts in (data.get("label_counts") or {}).items():
        lines.append(f"- label counts ({head}): "
                     + ", ".join(f"{lab} {_fmt(n)}" for lab, n in counts.items()))
    time_s = training.get("time_s")
    lines += ["", "## Training", "",
              f"- epochs: {_fmt(training.get('epochs'))}",
              f"- time: {_fmt(time_s, ',.0f')}{' s' if time_s is not None else ''}",
              f"- throughput: {_fmt(training.get('tokens_per_s'), ',.0f')} tokens/s",
              f"- device: {_fmt(training.get('device'))}", "",
              "## Metrics (GPT vs TF-IDF baseline)", ""]
    metrics = info.get("metrics") or {}
    if not metrics:
        lines += ["No metrics were recorded.", ""]
    for head, splits in metrics.items():
        lines += _head_section(head, splits, info)
    lines += _golden_lines(info.get("golden"))
    lines += _auto_answer_lines(info.get("auto_answer"))
    promoted = promotion.get("promoted")
    decision = "not recorded" if promoted is None else ("promoted" if promoted else "not promoted")
    lines += ["## Promotion", "", f"- decision: **{decision}**",
              f"- reason: {promotion.get('reason') or 'not recorded'}", ""]
    return "\n".join(lines)
