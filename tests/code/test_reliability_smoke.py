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


# Confirmed bug (reported, not fixed here): a JSON key holding a lone surrogate ("k\\ud800", or the
# raw bytes ED A0 80) in the first lines of a JSONL file goes into the SQL text of the exact-path
# staging query and DuckDB raises "cannot encode str as UTF-8": the whole file fails to stage.
def _known_crash(error: str) -> bool:
    return "surrogate" in error and "cannot encode" in error


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return reliability_fuzz.run(n_records=800, seed=1234, work=tmp_path_factory.mktemp("fuzz"), batch_size=100)


def test_fuzz_no_crash_identity_holds_no_xxe(fuzz: dict[str, Any]) -> None:
    assert fuzz["records_total"] >= 800
    assert all(fuzz["records"].get(path, 0) > 0 for path in ("jsonl", "csv", "rss"))
    assert fuzz["batches"].get("jsonl") and fuzz["batches"].get("csv") and fuzz["batches"].get("rss")
    unknown = [c for c in fuzz["crash_details"] if not _known_crash(c["error"])]
    assert not unknown, unknown
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
    """Fixed probe files: nothing raises and every good row is inserted."""
    findings = fuzz["probe_findings"]
    known_crashes = [c for c in fuzz["crash_details"] if _known_crash(c["error"])]
    unexplained = [f for f in findings if not (
        (f["kind"] == "crash" and _known_crash(f["error"]))
        or (f["kind"] == "good rows quarantined" and "title" in f["probe"] and "space" in f["probe"]))]
    assert not unexplained, unexplained
    if findings or known_crashes:
        pytest.xfail(reason="confirmed bugs: (1) a JSON key ' title' / 'title ' overrides the real 'title' of "
                            "every line, good rows quarantined as 'empty text'; (2) a key with a lone surrogate "
                            f"crashes JSONL staging of the whole file. Probes: {[f['probe'] for f in findings]}; "
                            f"fuzz batches crashed: {len(known_crashes)}")


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
