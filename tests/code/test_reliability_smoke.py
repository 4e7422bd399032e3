"""Seeded, small runs of the reliability benchmarks' fuzzing and security sections.

``bench/reliability_fuzz.py`` (600 Hypothesis-generated hostile records through JSONL, CSV,
Parquet, every public-dataset reader and RSS over loopback HTTP) and
``bench/reliability_security.py`` (sandboxed analyst SQL, a planted secret through the monitor
flow, code scan). The full-size figures come from ``bench/reliability.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


from bench import fuzz_strategies, reliability_fuzz, reliability_security  # noqa: E402

PATHS = ("jsonl", "csv", "parquet", "datasets", "rss")


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return reliability_fuzz.run(n_records=600, seed=1234, work=tmp_path_factory.mktemp("fuzz"), batch_size=80)


def test_fuzz_no_crash_identity_holds_no_xxe(fuzz: dict[str, Any]) -> None:
    assert fuzz["records_total"] >= 600
    assert all(fuzz["records"].get(path, 0) > 0 and fuzz["batches"].get(path, 0) > 0 for path in PATHS), fuzz
    assert {k.split(":", 1)[1] for k in fuzz["records"] if k.startswith("dataset:")} == set(fuzz_strategies.DATASET_MAKERS)
    assert fuzz["crashes"] == 0, fuzz["crash_details"]
    assert fuzz["identity_violations"] == 0, fuzz["violation_details"]
    assert fuzz["hostile_not_refused"] == []
    assert fuzz["refused"].get("unsafe XML", 0) >= len(reliability_fuzz.MUST_BE_UNSAFE)
    assert fuzz["xxe_leaks"] == 0, fuzz["xxe_leak_detail"]
    assert fuzz["rows"]["rows_quarantined"] > 0 and fuzz["quarantined_by_reason"]
    assert fuzz["staging_left"] == 0  # every staged batch was committed and its folder removed


def _examples(strategy: Any, n: int, seed: int) -> list[Any]:
    got: list[Any] = []
    fuzz_strategies.drive(strategy, n, seed, got.append)
    return got


@pytest.mark.parametrize("make", [
    lambda: fuzz_strategies.jsonl_files(["d"]), lambda: fuzz_strategies.csv_files(["d"]),
    lambda: fuzz_strategies.feed_docs(["d"]), lambda: fuzz_strategies.parquet_files(["d"]),
    lambda: fuzz_strategies.dataset_inputs(),
], ids=["jsonl", "csv", "feed", "parquet", "datasets"])
def test_fuzz_strategies_are_seeded_and_hostile(make: Any) -> None:
    """The same seed gives the same inputs (a finding can be replayed), another seed others."""
    first, again, other = _examples(make(), 15, 5), _examples(make(), 15, 5), _examples(make(), 15, 6)
    assert first == again
    assert first != other
    assert len({repr(x) for x in first}) > 5  # not one input repeated


def test_jsonl_strategy_draws_every_kind_of_damage() -> None:
    """Over 200 lines: truncated, invalid UTF-8, non-object lines, duplicate ids all occur."""
    lines = [line for data, _ in _examples(fuzz_strategies.jsonl_files(["dup0"], 30), 40, 3)
             for line in data.split(b"\n")]
    def is_object(line: bytes) -> bool:
        import json
        try:
            return isinstance(json.loads(line), dict)
        except ValueError:
            return False
    undecodable = sum(1 for line in lines if not _utf8(line))
    broken = sum(1 for line in lines if _utf8(line) and line.strip() and not is_object(line))
    assert len(lines) > 200 and undecodable > 0 and broken > 0
    assert sum(b'"dup0"' in line for line in lines) > 0


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_fuzz_probes_keep_good_rows(fuzz: dict[str, Any]) -> None:
    """Fixed probe files (bugs this fuzzer found, now fixed): nothing raises, every good row is
    inserted, and a line with a lone-surrogate key is quarantined with its reason."""
    assert fuzz["probe_findings"] == []
    assert fuzz["crashes"] == 0, fuzz["crash_details"]


def test_security(prefect_harness, tmp_path: Path) -> None:
    result = reliability_security.run(tmp_path)
    sql = result["sql"]
    assert sql["allowed"] == [], [a for a in sql["attempts"] if a["verdict"] == "ALLOWED"]
    assert sql["refused"] == sql["must_refuse"]
    assert not any(a["file_written"] or a["data_leaked"] for a in sql["attempts"])
    assert sql["warehouse_unchanged"]
    secrets = result["secrets"]
    assert secrets["alerts_delivered"] >= 1  # the secret really travelled through the flow
    assert secrets["control_token_in_block_secrets"] >= 1  # the grep can see the token where it belongs
    assert secrets["total_occurrences"] == 0, secrets
    assert result["code"]["findings"] == 0, result["code"]["hits"]
