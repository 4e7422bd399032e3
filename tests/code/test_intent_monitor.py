"""Incident spikes on the support inbox (issue 16 item 5): intent as a monitor dimension.

Scored support messages are written straight into the warehouse (``support_messages`` +
``support_scores``); the detector runs on the warehouse functions without Prefect, so each test
takes about a second. One test runs the monitor task's message rendering.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from warehouse.connection import connect
from warehouse.intent_monitor import first_intent_alert, intent_scan_params, run_intent_monitor
from warehouse.migrate import migrate

MODEL = "m20261101-000000-intent"
START = datetime(2026, 11, 1, tzinfo=UTC)
INTENTS = ("card_arrival", "card_not_working", "declined_transfer", "exchange_rate", "lost_or_stolen_card",
           "pending_transfer", "top_up_failed", "change_pin", "request_refund", "terminate_account")
WEIGHTS = (0.14, 0.03, 0.03, 0.14, 0.1, 0.14, 0.1, 0.1, 0.12, 0.1)
# Messages per UTC hour: a quiet night, a busy day.
HOURLY = (3, 2, 2, 2, 3, 4, 6, 9, 12, 14, 15, 15, 14, 14, 15, 14, 13, 12, 10, 9, 7, 6, 5, 4)

# support_scores as migration 010 (the triage flow) defines the columns the monitor reads; created
# here only when that migration is not in this checkout.
SUPPORT_SCORES = """
CREATE TABLE IF NOT EXISTS support_scores (
    message_id VARCHAR NOT NULL, model_version VARCHAR NOT NULL, intent_label VARCHAR,
    intent_confidence FLOAT, sentiment_label VARCHAR, queue VARCHAR NOT NULL, priority INTEGER NOT NULL,
    urgent BOOLEAN NOT NULL, decision VARCHAR NOT NULL, scored_at TIMESTAMPTZ NOT NULL,
    committed_at TIMESTAMPTZ DEFAULT now(), PRIMARY KEY (message_id, model_version))
"""


def _messages(days: int, seed: int, surge: tuple[datetime, float, str, int] | None = None) -> pd.DataFrame:
    """A steady inbox over ``days`` days from START; ``surge`` = (onset, hours, intent, extra messages
    per hour of that intent)."""
    r = random.Random(seed)
    rows = []
    for h in range(days * 24):
        t0 = START + timedelta(hours=h)
        n = max(0, round(HOURLY[t0.hour] * r.uniform(0.7, 1.3)))
        items = [r.choices(INTENTS, WEIGHTS)[0] for _ in range(n)]
        if surge and surge[0] <= t0 < surge[0] + timedelta(hours=surge[1]):
            items += [surge[2]] * surge[3]
        for i, intent in enumerate(items):
            ts = t0 + timedelta(seconds=r.randrange(3600))
            rows.append({"message_id": f"s{seed}-{h}-{i}", "ts": ts, "intent": intent,
                         "text": f"message about {intent.replace('_', ' ')} #{h}-{i}",
                         "confidence": round(r.uniform(0.4, 0.99), 3)})
    return pd.DataFrame(rows)


def _load(con, df: pd.DataFrame, model: str = MODEL) -> None:
    con.execute(SUPPORT_SCORES)
    con.register("new_msgs", df)
    try:
        con.execute("""INSERT INTO support_messages BY NAME SELECT message_id, 'inbox' AS source, message_id AS
                       source_message_id, 'chat' AS channel, 'c1' AS customer_id, ts AS created_at, text,
                       'b1' AS batch_id, ts AS ingested_at FROM new_msgs""")
        con.execute("""INSERT INTO support_scores BY NAME SELECT message_id, ? AS model_version, intent AS intent_label,
                       confidence AS intent_confidence, 'neutral' AS sentiment_label, 'general' AS queue,
                       3 AS priority, false AS urgent, 'human' AS decision, ts AS scored_at, now() AS committed_at
                       FROM new_msgs""", [model])
    finally:
        con.unregister("new_msgs")


def _intent_alerts(con) -> list[dict]:
    from warehouse.alerts import list_alerts

    return [a for a in list_alerts(con) if a["dimension"] == "intent"]


@pytest.fixture
def con(settings):
    with connect(settings) as c:
        migrate(c)
        yield c


def test_surge_gives_one_intent_alert_with_evidence_and_is_not_duplicated(con) -> None:
    onset = START + timedelta(days=5, hours=13)
    _load(con, _messages(6, seed=1, surge=(onset, 3, "card_not_working", 12)))
    out = run_intent_monitor(con, intent_scan_params())
    assert out["model_version"] == MODEL and out["new_alerts"], out
    alerts = _intent_alerts(con)
    assert [a["key"] for a in alerts] == ["card_not_working"], [(a["key"], a["window_start"]) for a in alerts]
    a = alerts[0]
    assert a["metric"] == "intent_share" and a["status"] == "pending" and a["detector"] == "scan"
    assert a["observed"] > 0.2 and a["baseline"] < 0.08
    # detected within the hour: the first alerting window ends at most an hour after the onset
    assert onset < a["window_end"] <= onset + timedelta(hours=1), a
    assert first_intent_alert(con, ["card_not_working", "declined_transfer"], onset)["alert_id"] == a["alert_id"]
    # evidence: the window's messages of that intent, most confident first
    ev = a["evidence"]
    assert ev and all("card not working" in e["text"] for e in ev)
    assert [e["confidence"] for e in ev] == sorted((e["confidence"] for e in ev), reverse=True)
    # the same scores again: nothing new; a full recompute finds the same episode (dedup key)
    assert run_intent_monitor(con, intent_scan_params())["new_alerts"] == []
    assert run_intent_monitor(con, intent_scan_params(), full=True)["new_alerts"] == []
    assert len(_intent_alerts(con)) == 1


def test_no_support_data_is_a_no_op(settings) -> None:
    with connect(settings) as c:
        migrate(c)
        c.execute("DROP TABLE IF EXISTS reply_drafts")  # as before the triage migration
        c.execute("DROP VIEW IF EXISTS v_support_triage CASCADE")
        c.execute("DROP TABLE IF EXISTS support_scores CASCADE")
        assert run_intent_monitor(c)["model_version"] is None
        c.execute(SUPPORT_SCORES)  # the table, but nothing scored yet
        out = run_intent_monitor(c)
        assert out["model_version"] is None and out["new_alerts"] == []
        assert c.execute("SELECT count(*) FROM alerts").fetchall()[0][0] == 0


def test_steady_inbox_does_not_fire(con) -> None:
    _load(con, _messages(8, seed=2))
    out = run_intent_monitor(con, intent_scan_params())
    assert out["model_version"] == MODEL and out["new_alerts"] == [], _intent_alerts(con)


def test_a_labelled_corpus_without_times_is_not_inbox_traffic(con) -> None:
    """BANKING77-like training rows (gold intent, no created time) triaged with the inbox: all
    ingested at one instant, they would look like a surge; they are left out."""
    _load(con, _messages(8, seed=2))
    at = START + timedelta(days=7, hours=12)
    corpus = pd.DataFrame([{"message_id": f"train-{i}", "ts": at, "intent": "terminate_account",
                            "text": f"close my account {i}", "confidence": 0.9} for i in range(60)])
    _load(con, corpus)
    con.execute("UPDATE support_messages SET created_at = NULL WHERE message_id LIKE 'train-%'")
    con.execute("INSERT INTO labels BY NAME SELECT 'banking77' AS dataset, message_id AS item, 'intent' AS task, "
                "'terminate_account' AS label, 'train' AS split, 'b1' AS batch_id, now() AS created_at FROM support_messages WHERE message_id LIKE 'train-%'")
    assert run_intent_monitor(con, intent_scan_params())["new_alerts"] == []
    # the same rows as inbox traffic (no gold label) are a surge
    con.execute("DELETE FROM labels WHERE item LIKE 'train-%'")
    assert [a["key"] for a in _intent_alerts(con)] == []
    out = run_intent_monitor(con, intent_scan_params(), full=True)
    assert [a["key"] for a in _intent_alerts(con)] == ["terminate_account"], out


def test_cooldown_extends_then_a_later_episode_opens_a_new_alert(con) -> None:
    first = START + timedelta(days=4, hours=10)
    df = _messages(5, seed=3, surge=(first, 2, "declined_transfer", 12))
    _load(con, df)
    assert len(run_intent_monitor(con, intent_scan_params(), cooldown=timedelta(hours=12))["new_alerts"]) == 1
    # The same intent surges again 6 hours later (within the cooldown): the alert is extended.
    again = first + timedelta(hours=6)
    late = _messages(1, seed=4)
    late = late[late.intent == "__none__"]  # no background, only the second surge
    burst = pd.DataFrame([{"message_id": f"b{i}", "ts": again + timedelta(minutes=3 * i), "intent": "declined_transfer",
                           "text": f"my transfer was declined again #{i}", "confidence": 0.9} for i in range(30)])
    _load(con, pd.concat([late, burst]))
    out = run_intent_monitor(con, intent_scan_params(), cooldown=timedelta(hours=12))
    assert out["new_alerts"] == [] and out["extended"] == 1
    (a,) = _intent_alerts(con)
    assert a["last_window_end"] > again
    # Two days later (past the cooldown) a new episode is a new alert.
    third = first + timedelta(days=2)
    burst3 = pd.DataFrame([{"message_id": f"c{i}", "ts": third + timedelta(minutes=3 * i), "intent": "declined_transfer",
                            "text": f"transfer declined #{i}", "confidence": 0.8} for i in range(30)])
    bg = _messages(7, seed=5)
    bg = bg[bg.ts >= START + timedelta(days=5)]
    bg["message_id"] = "bg-" + bg["message_id"]
    _load(con, pd.concat([bg, burst3]))
    out = run_intent_monitor(con, intent_scan_params(), cooldown=timedelta(hours=12))
    assert len(out["new_alerts"]) == 1
    assert sorted(a["window_start"] < third for a in _intent_alerts(con)) == [False, True]


def test_intent_alert_message_says_intent_surge() -> None:
    from tasks.alerts import alert_message, spike_event

    alert = {"alert_id": "a1", "dimension": "intent", "key": "card_not_working", "metric": "intent_share",
             "severity": "high", "observed": 0.34, "baseline": 0.02, "n_articles": 41, "n_negative": 14,
             "p_value": 1e-9, "granularity": "1h", "window_start": START, "window_end": START + timedelta(hours=1),
             "evidence": [{"text": "my card stopped working", "channel": "chat", "confidence": 0.97}]}
    subject, body = alert_message(alert)
    assert "Incident spike" in subject and "card_not_working" in subject
    assert body.startswith("card_not_working: 34% of support messages in the last hour vs 2% usual")
    assert "my card stopped working" in body
    event = spike_event(alert, notify=True)
    assert event.resource["prefect.resource.id"] == "newspulse.intent.card_not_working"
    assert event.payload["metric"] == "intent_share"


@pytest.mark.usefixtures("prefect_harness")
def test_monitor_flow_delivers_the_intent_alert_through_the_block_once(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The monitor flow with support scores and no news model: the intent step stores the alert,
    the delivery step sends it through the webhook block (an 'Incident spike' message with the
    evidence), the report is published; a second run sends nothing."""
    from flows.monitor import monitor_flow
    from newspulse.receiver import WebhookReceiver
    from core.settings import get_settings

    onset = START + timedelta(days=5, hours=13)
    with connect(settings) as c:
        migrate(c)
        _load(c, _messages(6, seed=1, surge=(onset, 3, "card_not_working", 12)))
    with WebhookReceiver() as receiver:
        monkeypatch.setenv("NEWSPULSE_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{receiver.port}/hook")
        monkeypatch.setenv("NEWSPULSE_ALERT_ALLOW_PRIVATE_URLS", "true")
        monkeypatch.setenv("NEWSPULSE_ALERT_RETRY_BACKOFF_S", "0.05")
        get_settings.cache_clear()
        first = monitor_flow(notify_backfill=True)
        assert first["model_version"] is None  # no news champion: the news step did nothing
        assert first["intent"]["model_version"] == MODEL and len(first["intent"]["new_alerts"]) == 1
        assert first["events"] == 1 and len(first["delivered"]) == 1
        (post,) = receiver.posts
        assert "Incident spike: support intent card_not_working" in post["subject"]
        assert "of support messages in the last" in post["text"] and "message about card not working" in post["text"]
        second = monitor_flow(notify_backfill=True)
        assert second["intent"]["new_alerts"] == [] and len(receiver.posts) == 1
    with connect(settings) as c:
        (a,) = _intent_alerts(c)
    assert a["status"] == "open" and a["event_id"] and a["notified_at"] is not None
