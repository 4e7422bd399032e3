"""The demo's support stream (issue 16 item 5): seeded, its outage as stated, ingestible as is."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from sources.synthetic_support import OUTAGE_INTENTS, STREAM, TRAIN, generate_support_stream
from tests.conftest import shared_data_dir


def _ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def _rows(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def test_same_seed_same_bytes_other_seed_other_stream(tmp_path: Path) -> None:
    a = generate_support_stream(tmp_path / "a", seed=3, days=6)
    b = generate_support_stream(tmp_path / "b", seed=3, days=6)
    c = generate_support_stream(tmp_path / "c", seed=4, days=6)
    for key in ("inbox", "truth", "intents", "train"):
        assert Path(a["paths"][key]).read_bytes() == Path(b["paths"][key]).read_bytes(), key
    assert Path(a["paths"]["inbox"]).read_bytes() != Path(c["paths"]["inbox"]).read_bytes()
    with pytest.raises(ValueError):
        generate_support_stream(tmp_path / "d", days=3)


def test_outage_ground_truth_matches_the_data(tmp_path: Path) -> None:
    got = generate_support_stream(tmp_path, seed=7, days=14)
    truth = got["ground_truth"]
    onset, end = _ts(truth["outage"]["onset"]), _ts(truth["outage"]["end"])
    msgs = _rows(got["paths"]["inbox"])
    with open(got["paths"]["intents"], encoding="utf-8", newline="") as fh:
        gold = {r["message_id"]: r["intent"] for r in csv.DictReader(fh)}
    assert len(msgs) == len(gold) == truth["counts"]["messages"]
    assert 100 * 14 <= len(msgs) <= 300 * 14  # ~100-300 a day
    assert set(msgs[0]) == {"message_id", "channel", "customer_id", "created_at", "text"}
    times = [_ts(m["created_at"]) for m in msgs]
    assert times == sorted(times) and _ts(truth["start"]) <= times[0] and times[-1] < _ts(truth["start"]) + timedelta(days=14)

    def share(lo: datetime, hi: datetime) -> tuple[int, float]:
        ids = [m["message_id"] for m, t in zip(msgs, times, strict=True) if lo <= t < hi]
        return len(ids), sum(gold[i] in OUTAGE_INTENTS for i in ids) / max(len(ids), 1)

    n_during, during = share(onset, end)
    n_day_before, before = share(onset - timedelta(days=1), onset - timedelta(hours=1))
    assert n_during == truth["outage"]["messages_during"] and during == pytest.approx(truth["outage"]["outage_intent_share_during"], abs=1e-4)
    assert during > 0.5 and before < 0.3 and during > 3 * before
    # The hour before the onset is ordinary; the first hour of the outage is not.
    assert share(onset - timedelta(hours=1), onset)[1] < 0.4 < share(onset, onset + timedelta(hours=1))[1]
    # A daily rhythm: the busiest hours hold several times the quietest ones.
    by_hour = [sum(t.hour == h for t in times) for h in range(24)]
    assert max(by_hour) > 4 * min(by_hour)
    # Without BANKING77 the training file covers every stream intent, phrased apart from the stream.
    with open(got["paths"]["train"], encoding="utf-8", newline="") as fh:
        train = list(csv.DictReader(fh))
    assert {r["intent"] for r in train} == set(STREAM) == set(TRAIN)
    assert {r["split"] for r in train} == {"train", "validation"}
    assert not {r["text"].lower() for r in train} & {m["text"].lower() for m in msgs}


@pytest.mark.skipif(shared_data_dir() is None or not (shared_data_dir() / "banking77" / "test.csv").is_file(),
                    reason="BANKING77 not available")
def test_with_banking77_the_stream_uses_its_test_texts(tmp_path: Path) -> None:
    from sources.support import read_banking77

    got = generate_support_stream(tmp_path, seed=7, days=6, data_dir=shared_data_dir())
    assert got["paths"]["train"] is None and got["ground_truth"]["texts"] == "banking77 test"
    test = read_banking77(shared_data_dir() / "banking77" / "test.csv")
    pairs = set(zip(test["text"], test["label"], strict=True))
    with open(got["paths"]["intents"], encoding="utf-8", newline="") as fh:
        gold = {r["message_id"]: r["intent"] for r in csv.DictReader(fh)}
    msgs = _rows(got["paths"]["inbox"])
    assert all((m["text"], gold[m["message_id"]]) in pairs for m in msgs)
    assert got["ground_truth"]["intents"] == 77


@pytest.mark.usefixtures("prefect_harness")
def test_files_ingest_without_quarantine_and_the_outage_is_detected_within_the_hour(settings, tmp_path: Path) -> None:
    """Through the support ingest: nothing quarantined. Then an oracle intent model (the true
    intents as its labels) and the intent monitor: the first alert on an outage intent ends at most
    an hour after the onset, and nothing else fires."""
    from flows.ingest import ingest_flow
    from warehouse.connection import connect
    from warehouse.intent_monitor import first_intent_alert, intent_scan_params, run_intent_monitor

    got = generate_support_stream(tmp_path, seed=7, days=14)
    batches = ingest_flow(files=[got["paths"]["inbox"], got["paths"]["train"]], source="demo_support",
                          target="support_messages")
    assert [b["rows_quarantined"] for b in batches] == [0, 0] and all(b["status"] == "succeeded" for b in batches)
    assert sum(b["rows_inserted"] for b in batches) == got["ground_truth"]["counts"]["messages"] + got["ground_truth"]["counts"]["train"]
    assert batches[1]["labels_inserted"] == got["ground_truth"]["counts"]["train"]
    truth = got["ground_truth"]["outage"]
    with connect(settings) as con:
        con.execute("""CREATE TABLE IF NOT EXISTS support_scores (message_id VARCHAR, model_version VARCHAR,
                       intent_label VARCHAR, intent_confidence FLOAT, queue VARCHAR, priority INTEGER,
                       urgent BOOLEAN, decision VARCHAR, scored_at TIMESTAMPTZ, committed_at TIMESTAMPTZ)""")
        con.execute("""INSERT INTO support_scores BY NAME
                       SELECT m.message_id, 'oracle' AS model_version, g.intent AS intent_label, 0.9 AS intent_confidence,
                              'general' AS queue, 3 AS priority, false AS urgent, 'human' AS decision,
                              now() AS scored_at, now() AS committed_at
                       FROM support_messages m JOIN read_csv(?) g ON g.message_id = m.source_message_id
                       WHERE m.created_at IS NOT NULL""", [got["paths"]["intents"]])
        out = run_intent_monitor(con, intent_scan_params(settings))
        first = first_intent_alert(con, truth["intents"], _ts(truth["onset"]))
        keys = con.execute("SELECT key FROM alerts WHERE dimension = 'intent'").fetchall()
    assert out["model_version"] == "oracle" and first is not None, out
    delay = first["window_end"] - _ts(truth["onset"])
    assert timedelta(0) < delay <= timedelta(hours=1), first
    assert {k for (k,) in keys} <= set(OUTAGE_INTENTS), keys
