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
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

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
    from newspulse.settings import Settings, get_settings

    monkeypatch.setenv("NEWSPULSE_WAREHOUSE_PATH", str(tmp_path / "warehouse" / "test.duckdb"))
    monkeypatch.setenv("NEWSPULSE_HOME", str(tmp_path / "var"))
    get_settings.cache_clear()
    s = Settings()
    s.ensure_dirs()
    yield s
    get_settings.cache_clear()
