"""Seeded, small runs of the reliability benchmarks' fuzzing and security sections.

``bench/reliability_fuzz.py`` (800 hostile records through JSONL, CSV and RSS over loopback HTTP)
and ``bench/reliability_security.py`` (sandboxed analyst SQL, a planted secret through the monitor
flow, code scan). The full-size figures come from ``bench/reliability.py``.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import reliability_fuzz, reliability_security  # noqa: E402


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return reliability_fuzz.run(n_records=800, seed=1234, work=tmp_path_factory.mktemp("fuzz"), batch_size=100)


def test_fuzz_no_crash_identity_holds_no_xxe(fuzz: dict[str, Any]) -> None:
    assert fuzz["records_total"] >= 800
    assert all(fuzz["records"].get(path, 0) > 0 for path in ("jsonl", "csv", "rss"))
    assert fuzz["batches"].get("jsonl") and fuzz["batches"].get("csv") and fuzz["batches"].get("rss")
    assert fuzz["crashes"] == 0, fuzz["crash_details"]
    assert fuzz["identity_violations"] == 0, fuzz["violation_details"]
    assert fuzz["hostile_not_refused"] == []
    assert fuzz["refused"].get("unsafe XML", 0) >= len(reliability_fuzz.MUST_BE_UNSAFE)
    assert fuzz["xxe_leaks"] == 0, fuzz["xxe_leak_detail"]
    assert fuzz["rows"]["rows_quarantined"] > 0 and fuzz["quarantined_by_reason"]


def test_fuzz_generators_are_seeded() -> None:
    for gen in (reliability_fuzz.feed_doc, reliability_fuzz.csv_file):
        assert gen(random.Random(5), 0, 20, ["d"]) == gen(random.Random(5), 0, 20, ["d"])
    assert ([reliability_fuzz.jsonl_line(random.Random(5), i, ["d"]) for i in range(20)]
            == [reliability_fuzz.jsonl_line(random.Random(5), i, ["d"]) for i in range(20)])


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
