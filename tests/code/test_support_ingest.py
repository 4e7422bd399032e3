"""Support messages as a source: reader, GX suite, quarantine, idempotence, labels, CLI, BANKING77."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from core.intents import BANKING77_INTENTS
from sources.support import read_banking77, read_support_file
from tests.conftest import shared_data_dir

DATA = shared_data_dir()
BANKING77 = DATA / "banking77" if DATA else None


def _query(settings, sql: str) -> list[tuple]:
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _inbox(path: Path) -> Path:
    """A small CSV export: 6 good rows (one repeated), and one row per quarantine reason."""
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    rows = [
        "message_id,channel,customer_id,created_at,text,intent",
        "m1,Email,c1,2026-11-01T10:00:00Z,My card has not arrived yet,card_arrival",
        "m2,chat,c2,2026-11-01T10:05:00Z,\"I think my card was stolen, help\",lost_or_stolen_card",
        "m3,app,c3,2026-11-01T10:06:00Z,How do I change my PIN?,",
        "m1,Email,c1,2026-11-01T10:00:00Z,My card has not arrived yet,card_arrival",
        "m4,chat,c4,2026-11-01T10:07:00Z,,card_arrival",
        f"m5,chat,c5,{future},Where is my money?,pending_transfer",
        "m6,chat,c6,2026-11-01T10:08:00Z,Please help,not_an_intent",
        "m7,chat,c7,2026-11-01T10:09:00Z," + "x" * 6000 + ",",
        "m8,chat,c8,yesterday-ish,Card declined,declined_card_payment",
        "m9,chat,too,many,fields,here,x",
        *[f"n{i},phone,c{i},2026-11-02T09:0{i}:00+01:00,Question {i} about my account," for i in range(3)],
    ]
    path.write_text("\r\n".join(rows) + "\r\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- readers (no Prefect)

def test_reader_maps_fields_and_keeps_bad_rows(tmp_path: Path) -> None:
    df = read_support_file(_inbox(tmp_path / "inbox.csv"), "csv", source="helpdesk", defaults={"channel": "web"})
    assert len(df) == 13 and list(df.record_no) == list(range(1, 14))
    first = df.iloc[0]
    assert (first.message_id, first.channel, first.customer_id, first.label) == ("m1", "Email", "c1", "card_arrival")
    assert df.iloc[1].text == "I think my card was stolen, help"
    assert df.iloc[9].error == "expected 6 fields, got 7" and df.iloc[-1].channel == "phone"
    jl = tmp_path / "inbox.jsonl"
    jl.write_text(json.dumps({"id": "j1", "message": "hi there", "ticket_tag": 3}) + "\n[1]\n{bad\n", encoding="utf-8")
    got = read_support_file(jl, "jsonl", source="helpdesk", defaults={"channel": "chat"})
    assert got.iloc[0].text == "hi there" and got.iloc[0].channel == "chat" and '"ticket_tag": 3' in got.iloc[0].meta
    assert list(got.error[1:]) == ["JSON value is not an object", "malformed JSON line"]


def test_banking77_reader_on_a_fixture(tmp_path: Path) -> None:
    path = tmp_path / "test.csv"
    path.write_bytes(b'text,category\r\nI am still waiting on my card?,card_arrival\r\n"Hi, it is \xc2\xa3 5",exchange_rate\r\n')
    df = read_banking77(path)
    assert list(df.message_id) == ["test-1", "test-2"] and list(df.split) == ["test", "test"]
    assert df.iloc[1].text == "Hi, it is £ 5" and set(df.dataset) == {"banking77"}


@pytest.mark.skipif(BANKING77 is None or not BANKING77.is_dir(), reason="../shared/data/banking77 not present")
def test_intent_set_matches_categories() -> None:
    assert list(BANKING77_INTENTS) == json.loads((BANKING77 / "categories.json").read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- the flow

@pytest.mark.usefixtures("prefect_harness")
def test_support_file_ingest_quarantines_and_is_idempotent(settings, tmp_path: Path) -> None:
    from flows.ingest import ingest_flow

    path = _inbox(tmp_path / "inbox.csv")
    [b] = ingest_flow(files=[str(path)], source="helpdesk", target="support_messages")
    assert b["target_table"] == "support_messages" and b["status"] == "succeeded", b
    assert (b["rows_read"], b["rows_inserted"], b["rows_duplicate"], b["rows_quarantined"]) == (13, 6, 1, 6)
    assert b["labels_inserted"] == 2
    reasons = dict(_query(settings, f"""SELECT split_part(raw, ',', 1), reasons[-1] FROM quarantine
                                        WHERE batch_id = '{b["batch_id"]}' AND target_table = 'support_messages'"""))
    assert reasons["m4"] == "empty text"
    assert reasons["m5"].startswith("created time in the future")
    assert reasons["m6"].startswith("unknown intent label: not_an_intent")
    assert reasons["m7"] == "text too long: 6000 characters (max 5000)"
    assert reasons["m8"] == "unparseable created time: yesterday-ish"
    assert reasons["m9"] == "expected 6 fields, got 7"
    rows = _query(settings, "SELECT source_message_id, channel, customer_id, created_at FROM v_support_messages ORDER BY 1")
    assert [r[:3] for r in rows[:3]] == [("m1", "email", "c1"), ("m2", "chat", "c2"), ("m3", "app", "c3")]
    assert rows[0][3] == datetime(2026, 11, 1, 10, tzinfo=UTC) and rows[3][3] == datetime(2026, 11, 2, 8, tzinfo=UTC)
    assert _query(settings, "SELECT intent FROM v_labelled_messages ORDER BY 1") == [("card_arrival",), ("lost_or_stolen_card",)]
    # News tables are untouched: support rows never reach the news heads, monitor or corpus.
    assert _query(settings, "SELECT count(*) FROM articles") == [(0,)]

    # Same file again: skipped. Touched: read again, nothing new.
    assert ingest_flow(files=[str(path)], source="helpdesk", target="support_messages") == []
    path.write_text(path.read_text(encoding="utf-8") + "\r\n", encoding="utf-8")
    [again] = ingest_flow(files=[str(path)], source="helpdesk", target="support_messages")
    assert (again["rows_inserted"], again["rows_duplicate"], again["rows_quarantined"], again["labels_inserted"]) == (0, 7, 6, 0)
    assert _query(settings, "SELECT count(*), count(DISTINCT message_id) FROM support_messages") == [(6, 6)]


@pytest.mark.usefixtures("prefect_harness")
def test_banking77_dataset_by_name_gives_intent_labels(settings, tmp_path: Path) -> None:
    from flows.ingest import ingest_flow
    from warehouse.training_data import intent_examples

    folder = tmp_path / "data" / "banking77"
    folder.mkdir(parents=True)
    train = "text,category\r\n" + "".join(f"card question number {i}?,card_arrival\r\n" for i in range(20))
    (folder / "train.csv").write_text(train + "where is my refund,refund_pending_typo\r\n", encoding="utf-8")
    (folder / "test.csv").write_text("text,category\r\nmy pin is blocked,pin_blocked\r\n", encoding="utf-8")
    batches = ingest_flow(datasets=["banking77"], data_dir=str(tmp_path / "data"))
    assert sorted((b["input"].rsplit("/", 1)[-1], b["rows_inserted"], b["rows_quarantined"]) for b in batches) == [
        ("test.csv", 1, 0), ("train.csv", 20, 1)]
    assert ingest_flow(datasets=["banking77"], data_dir=str(tmp_path / "data")) == []
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        ex = intent_examples(con, ["banking77"])
    finally:
        con.close()
    assert len(ex) == 21 and set(ex.split) == {"train", "validation", "test"}
    assert ex.loc[ex.split == "test", "intent"].tolist() == ["pin_blocked"]
    # A quick model's cap: at most 6 train rows per intent, 5 per intent in validation/test, the same rows each time.
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        capped, again = (intent_examples(con, ["banking77"], max_per_intent=6) for _ in range(2))
    finally:
        con.close()
    counts = capped.groupby(["split", "intent"]).size()
    assert counts[("train", "card_arrival")] == 6 and counts.drop("train", level=0).max() <= 5
    assert capped.message_id.tolist() == again.message_id.tolist()
    assert set(capped.message_id) <= set(ex.message_id)


def test_cli_rejects_unknown_dataset_and_missing_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from newspulse.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["ingest", "dataset", "banking78", "--data-dir", str(tmp_path)])
    assert out.exit_code == 2 and "unknown dataset 'banking78'" in out.output
    out = runner.invoke(app, ["ingest", "support", str(tmp_path / "nope.csv")])
    assert out.exit_code == 2 and "no such support file" in out.output
