"""Shared fixtures: an offline environment, one Prefect test server per session, temp warehouses."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Import hypothesis while the stack is shallow. Its pytest plugin otherwise imports it during the
# terminal summary, deep in pytest's hook stack, where CPython 3.11.7's AST validator trips
# ("AST constructor recursion depth mismatch", gh-106905) while assertion-rewriting it.
import hypothesis  # noqa: F401

# Offline and quiet before anything imports prefect / transformers.
# The test server keeps task runs in SQLite: batch its task-run recorder (LOCAL_PREFECT_SERVER_ENV).
from core.settings import use_local_env  # noqa: E402  (no Prefect import inside)

use_local_env(PREFECT_LOGGING_LEVEL="WARNING")

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """The public datasets folder (NEWSPULSE_DATA_DIR or ../shared/data), if present."""
    candidates = [os.environ.get("NEWSPULSE_DATA_DIR"), str(REPO_ROOT.parent / "shared" / "data")]
    for cand in candidates:
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A temporary Prefect server for the whole session (starting one takes ~20 s)."""
    from prefect.testing.utilities import prefect_test_harness

    os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(tmp_path_factory.mktemp("prefect-results"))
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Settings pointing at a fresh warehouse and runtime folder under ``tmp_path``.

    Also exported through the environment, so flows that call ``get_settings()`` see them.
    """
    from core.settings import Settings, get_settings

    monkeypatch.setenv("NEWSPULSE_WAREHOUSE_PATH", str(tmp_path / "warehouse" / "test.duckdb"))
    monkeypatch.setenv("NEWSPULSE_HOME", str(tmp_path / "var"))
    get_settings.cache_clear()
    s = Settings()
    s.ensure_dirs()
    yield s
    get_settings.cache_clear()


def register_tiny_champion(settings, topics: tuple[str, ...] = ("markets", "earnings"), seed: int = 0) -> str:
    """Build an untrained ``tiny`` multi-head model offline, register it and make it champion.

    Scoring and monitoring tests need a champion but not a good one; training would cost minutes.
    Returns the model version.
    """
    import random

    import torch

    from models.backbone import build_backbone
    from models.multihead import HeadsConfig, from_backbone
    from models.registry import new_version, store_version, write_manifest
    from models.tokenizer import train_tokenizer
    from warehouse import registry as db_registry
    from warehouse.connection import connect
    from warehouse.migrate import migrate

    r = random.Random(seed)
    words = "shares fell rose profit loss bank market oil said growth warns record deal cut".split()
    corpus = [" ".join(r.choice(words) for _ in range(r.randint(3, 10))) for _ in range(300)]
    work = settings.home / "tiny-model"
    tok = train_tokenizer(corpus, work / "tok", vocab_size=300, max_length=64)
    torch.manual_seed(seed)
    model = from_backbone(build_backbone("tiny", tok), HeadsConfig(topic_labels=list(topics)))
    model.save(work / "model", tok)
    version = new_version()
    version_dir = store_version(settings.registry_dir, version, work / "model")
    write_manifest(version_dir, {"served": {"sentiment": "gpt", "topic": "gpt"}})
    with connect(settings) as con:
        migrate(con)
        db_registry.record_model(con, {
            "model_version": version, "backbone": "tiny", "heads": {"topic": list(topics)}, "metrics": {},
            "val_score": 0.0, "served": "gpt", "val_split_id": "test", "artifact_path": str(version_dir)})
        db_registry.promote(con, version, "test champion")
    return version


def register_tiny_intent_model(settings, intents: tuple[str, ...] = ("card_not_working", "lost_or_stolen_card",
                                                                      "exchange_rate"),
                               threshold: float | None = 0.5, seed: int = 0) -> str:
    """An untrained ``tiny`` intent-only model, registered and given ``intent-champion``.

    Its manifest carries an auto-answer threshold like a trained one (``threshold``; None: tuning
    found none). For triage tests that need a real model in the registry, not a good one.
    """
    import random

    import torch

    from models.backbone import build_backbone
    from models.multihead import HeadsConfig, from_backbone
    from models.registry import new_version, store_version, write_manifest
    from models.tokenizer import train_tokenizer
    from warehouse import registry as db_registry
    from warehouse.connection import connect
    from warehouse.migrate import migrate

    r = random.Random(seed)
    words = "my card is not working lost stolen exchange rate transfer declined please help why".split()
    corpus = [" ".join(r.choice(words) for _ in range(r.randint(3, 10))) for _ in range(300)]
    work = settings.home / "tiny-intent-model"
    tok = train_tokenizer(corpus, work / "tok", vocab_size=300, max_length=64)
    torch.manual_seed(seed)
    heads = HeadsConfig(sentiment_labels=[], intent_labels=list(intents))
    model = from_backbone(build_backbone("tiny", tok), heads)
    model.save(work / "model", tok)
    version = new_version()
    version_dir = store_version(settings.registry_dir, version, work / "model")
    write_manifest(version_dir, {"served": {"intent": "gpt"},
                                 "auto_answer": {"threshold": threshold, "target": 0.95, "reason": "test"}})
    with connect(settings) as con:
        migrate(con)
        db_registry.record_model(con, {
            "model_version": version, "backbone": "tiny", "heads": {"intent_labels": list(intents)}, "metrics": {},
            "val_score": 0.0, "served": "gpt", "val_split_id": "test", "artifact_path": str(version_dir)})
        db_registry.promote(con, version, "test intent model", alias=db_registry.INTENT_CHAMPION)
    return version
