"""The triage flow end to end on a temp warehouse with fake models: routing, urgency, auto-answer
drafts, views, idempotent and crash-safe re-runs, a broken or partial routing table, the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import duckdb
import pandas as pd
import pytest
from typer.testing import CliRunner

from models.replies import extract_facts, load_kb
from tests.code.test_triage_batch import FakeIntentModel, FakeSentimentModel

pytestmark = pytest.mark.usefixtures("prefect_harness")
KB = load_kb()

MESSAGES = [  # (id, text, lang)
    ("lost", "My card was stolen last night, definitely", "en"),
    ("declined-angry", "Terrible! My card payment was declined again", None),
    ("declined-calm", "my card payment was declined", None),
    ("arrive-sure", "Definitely: when will my card arrive?", None),
    ("arrive-unsure", "when will my card arrive?", None),
    ("rate-sure", "Definitely what exchange rate do you use", None),
    ("german", "Meine Karte ist nicht angekommen", "de"),
    ("blank", "   ", None),
    ("link", "How do I link my card to the app", None),
]


def _add_messages(settings, rows, start: datetime | None = None) -> None:
    from warehouse.connection import connect
    from warehouse.migrate import migrate

    start = start or datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    df = pd.DataFrame([{"message_id": mid, "source": "helpdesk", "source_message_id": mid, "channel": "chat",
                        "customer_id": f"c-{mid}", "created_at": start + timedelta(minutes=i), "text": text,
                        "lang": lang, "batch_id": "b1", "ingested_at": start + timedelta(hours=1)}
                       for i, (mid, text, lang) in enumerate(rows)])
    with connect(settings) as con:
        migrate(con)
        con.execute("INSERT INTO support_messages (message_id, source, source_message_id, channel, customer_id, "
                    "created_at, text, lang, batch_id, ingested_at) SELECT message_id, source, source_message_id, "
                    "channel, customer_id, created_at, text, lang, batch_id, ingested_at FROM df")


@pytest.fixture
def models(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Fake intent-champion and cpu-champion behind the tasks' model loading."""
    import tasks.triage as t

    fakes = {"intent": FakeIntentModel(threshold=0.9), "sentiment": FakeSentimentModel()}
    rows = {"intent-champion": {"model_version": "intent-v1", "artifact_path": "fake://intent"},
            "cpu-champion": {"model_version": "news-v1", "artifact_path": "fake://sentiment"}}
    monkeypatch.setattr(t, "resolve_alias", lambda con, alias: rows.get(alias))
    monkeypatch.setattr(t, "load_scorer", lambda path, precision=None: fakes[path.removeprefix("fake://")])
    monkeypatch.setattr(t, "_precision", lambda settings: "fp32")
    return {"fakes": fakes, "rows": rows}


def _query(settings, sql: str) -> list[tuple]:
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_triage_routes_drafts_and_reruns_idempotently(settings, models) -> None:
    from flows.triage import triage_flow

    _add_messages(settings, MESSAGES)
    out = triage_flow(batch_size=4)  # 9 messages -> 3 batch tasks
    assert out["rows_inserted"] == 9 and out["batches"] == 3 and out["batches_committed"] == 3
    assert out["auto_answered"] == 2 and out["drafts_inserted"] == 2 and out["not_scored"] == 2
    rows = {r[0]: r[1:] for r in _query(settings, "SELECT message_id, queue, priority, urgent, decision, intent_label, "
                                                  "sentiment_label, model_version FROM support_scores")}
    assert rows["lost"][:4] == ("account_security", 1, True, "human")
    assert rows["declined-angry"][2:4] == (True, "human") and rows["declined-angry"][5] == "negative"
    assert rows["declined-calm"][2] is False
    assert rows["arrive-sure"][3] == "auto_answer" and rows["rate-sure"][3] == "auto_answer"
    assert rows["arrive-unsure"][3] == "human"
    for mid in ("german", "blank"):
        assert rows[mid][0] == "general" and rows[mid][3] == "human" and rows[mid][4] is None
    assert {r[6] for r in rows.values()} == {"intent-v1"}

    drafts = _query(settings, "SELECT message_id, template_id, template_version, draft_text, status, facts "
                              "FROM reply_drafts ORDER BY message_id")
    assert [d[0] for d in drafts] == ["arrive-sure", "rate-sure"] and {d[4] for d in drafts} == {"draft"}
    for mid, tid, version, text, _, facts in drafts:
        intent = {"arrive-sure": "card_arrival", "rate-sure": "exchange_rate"}[mid]
        assert (tid, version) == (KB[intent].template_id, KB[intent].version)
        want, got = extract_facts(KB[intent].text), extract_facts(text)
        assert got["numbers"] == want["numbers"] and got["urls"] == want["urls"]
        assert isinstance(json.loads(facts), list)

    queue = _query(settings, "SELECT message_id, queue, priority, urgent, reasons FROM v_ticket_queue")
    assert len(queue) == 7 and queue[0][2] == 1 and {queue[0][0], queue[1][0]} == {"lost", "declined-angry"}
    assert [q[2] for q in queue] == sorted(q[2] for q in queue)  # priority order
    assert {r[0] for r in _query(settings, "SELECT message_id FROM v_reply_drafts")} == {"arrive-sure", "rate-sure"}
    volume = _query(settings, "SELECT hour, intent, n, urgent_n, auto_answered_n, mean_confidence "
                              "FROM v_intent_volume_hourly")
    assert sum(v[2] for v in volume) == 9
    assert sum(v[3] for v in volume) == 2 and sum(v[4] for v in volume) == 2
    assert any(v[1] == "card_arrival" and v[2] == 2 for v in volume)

    again = triage_flow(batch_size=4)  # nothing new: nothing staged, nothing written
    assert again["rows_inserted"] == 0 and again["reason"] == "no new messages"
    _add_messages(settings, [("late", "definitely: when will my card arrive??", None)],
                  start=datetime(2026, 11, 3, tzinfo=UTC))
    third = triage_flow()
    assert third["rows_inserted"] == 1 and third["auto_answered"] == 1
    assert _query(settings, "SELECT count(*), count(DISTINCT message_id) FROM support_scores")[0] == (10, 10)
    assert _query(settings, "SELECT count(*) FROM reply_drafts")[0][0] == 3


def test_commit_twice_after_a_crash_duplicates_nothing(settings, models) -> None:
    """A run that died after staging and scoring, before its commit: committing the same files twice
    inserts each message once."""
    from models.routing import load_routing
    from models.triage_batch import triage_file
    from warehouse.connection import connect
    from warehouse.triage import commit_triage, export_untriaged

    _add_messages(settings, MESSAGES)
    run_dir = settings.staging_dir / "triage-crashed"
    with connect(settings) as con:
        inputs = export_untriaged(con, "intent-v1", run_dir, 5)
    assert len(inputs) == 2
    extra = {"scored_at": datetime.now(UTC), "triage_run_id": "crashed", "flow_run_id": None}
    triage_file(inputs[0], models["fakes"]["intent"], load_routing(), KB, extra=extra, threshold=0.9)
    with connect(settings) as con:
        first = commit_triage(con, run_dir, "intent-v1")   # only the finished batch
        second = commit_triage(con, run_dir, "intent-v1")  # the same files again
        left = export_untriaged(con, "intent-v1", settings.staging_dir / "next", 100)
    assert first.rows_inserted == 5 and second.rows_inserted == 0 and second.rows_duplicate == 5
    assert second.drafts_inserted == 0
    assert len(pd.read_parquet(left[0])) == 4  # the unfinished batch's messages are picked up next run


def test_a_failing_batch_loses_nothing(settings, models) -> None:
    from flows.triage import triage_flow

    _add_messages(settings, MESSAGES)
    models["fakes"]["intent"].fail_on = "e"  # every message of some batches fails: the model is "broken" there
    state = triage_flow(batch_size=3, return_state=True)
    assert state.is_failed() and "picked up by the next run" in str(state.message)
    done = _query(settings, "SELECT count(*) FROM support_scores")[0][0]
    assert done < 9
    models["fakes"]["intent"].fail_on = None  # fixed
    out = triage_flow(batch_size=3)
    assert out["rows_inserted"] == 9 - done
    assert _query(settings, "SELECT count(*), count(DISTINCT message_id) FROM support_scores")[0] == (9, 9)


def test_no_intent_model_yet_does_nothing(settings, models) -> None:
    from flows.triage import triage_flow

    models["rows"].pop("intent-champion")
    _add_messages(settings, MESSAGES[:2])
    out = triage_flow()
    assert out["rows_inserted"] == 0 and "no intent model yet" in out["reason"]
    assert _query(settings, "SELECT count(*) FROM support_scores")[0][0] == 0


def test_routing_table_errors_and_gaps(settings, models, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.triage import triage_flow
    from models.routing import DEFAULT_ROUTING_PATH
    from newspulse.cli import app
    from core.settings import get_settings

    lines = DEFAULT_ROUTING_PATH.read_text(encoding="utf-8").splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([*lines, "card_arival,cards,3,false,true,false"]) + "\n", encoding="utf-8")
    monkeypatch.setenv("NEWSPULSE_ROUTING_TABLE", str(bad))
    get_settings.cache_clear()
    _add_messages(settings, MESSAGES)
    runner = CliRunner()
    result = runner.invoke(app, ["triage"])
    assert result.exit_code == 2 and "unknown intent 'card_arival'" in result.output
    assert "did you mean 'card_arrival'" in result.output
    state = triage_flow(return_state=True)
    assert state.is_failed() and _query(settings, "SELECT count(*) FROM support_scores")[0][0] == 0

    partial = tmp_path / "partial.csv"
    partial.write_text("\n".join(ln for ln in lines if not ln.startswith(("card_arrival,", "exchange_rate,"))) + "\n",
                       encoding="utf-8")
    monkeypatch.setenv("NEWSPULSE_ROUTING_TABLE", str(partial))
    get_settings.cache_clear()
    result = runner.invoke(app, ["triage"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "misses 2 intent(s)" in text and "triaged 9 message(s)" in text
    rows = dict(_query(settings, "SELECT message_id, queue FROM support_scores"))
    assert rows["arrive-sure"] == rows["rate-sure"] == "general"  # nothing lost: the default queue
    assert _query(settings, "SELECT count(*) FROM reply_drafts")[0][0] == 0
    status = runner.invoke(app, ["status"])
    assert status.exit_code == 0, status.output
    text = " ".join(status.output.split())
    assert "2 missing" in text and "card_arrival, exchange_rate" in text
    assert "unrouted_intent" in status.output and "intent_champion" in status.output


def test_with_a_real_tiny_intent_model(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The registered intent-champion itself (an untrained tiny model): resolve, load, score, commit.
    Rewriting is on, but the tiny tokenizer has no chat template, so drafts stay the approved text."""
    import tasks.triage as t
    from flows.triage import triage_flow
    from core.settings import get_settings
    from tests.conftest import register_tiny_intent_model

    monkeypatch.setattr(t, "_precision", lambda settings: "fp32")
    monkeypatch.setenv("NEWSPULSE_REPLY_REWRITE", "true")
    get_settings.cache_clear()
    version = register_tiny_intent_model(settings, threshold=0.0)
    _add_messages(settings, MESSAGES)
    out = triage_flow()
    assert out["model_version"] == version and out["rows_inserted"] == 9 and out["sentiment_version"] is None
    rows = _query(settings, "SELECT intent_label, intent_confidence, intent_top3, decision, sentiment_label "
                            "FROM support_scores WHERE intent_label IS NOT NULL")
    assert len(rows) == 7
    assert {r[0] for r in rows} <= {"card_not_working", "lost_or_stolen_card", "exchange_rate"}
    assert all(0 < r[1] <= 1 and len(json.loads(r[2])) == 3 and r[4] is None for r in rows)
    drafts = _query(settings, "SELECT d.rewritten, d.template_id, s.intent_label FROM reply_drafts d "
                              "JOIN support_scores s USING (message_id, model_version)")
    assert drafts == [] or all(not r[0] and r[1] == r[2] == "exchange_rate" for r in drafts)
    assert len(drafts) == sum(r[0] == "exchange_rate" for r in rows)  # the one auto-answerable intent of the three


def test_a_labelled_corpus_without_times_is_not_triaged(settings, models) -> None:
    """BANKING77-like rows (gold intent, no created_at) train models; they are not tickets. An untimed
    message without a label is still an inbox message and is triaged."""
    from flows.triage import triage_flow
    from warehouse.connection import connect

    _add_messages(settings, [("corpus-1", "my card is not working", None), ("corpus-2", "i lost my card", None),
                             ("inbox-untimed", "when will my card arrive?", None)])
    with connect(settings) as con:
        con.execute("UPDATE support_messages SET created_at = NULL")
        con.execute("INSERT INTO labels (dataset, item, task, label, split, batch_id, created_at) VALUES "
                    "('corpus', 'corpus-1', 'intent', 'card_not_working', 'train', 'b1', now()), "
                    "('corpus', 'corpus-2', 'intent', 'lost_or_stolen_card', 'train', 'b1', now())")
    out = triage_flow()
    assert out["rows_inserted"] == 1
    assert _query(settings, "SELECT message_id FROM support_scores") == [("inbox-untimed",)]
