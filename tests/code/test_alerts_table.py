"""The alerts table and CLI: dedup, extension, ack/resolve, message text, detection scoring."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from newspulse.cli import app
from newspulse.demo_scoring import score_detection
from warehouse import alerts as db_alerts
from warehouse.connection import connect
from warehouse.migrate import migrate

T0 = datetime(2026, 10, 5, 14, tzinfo=UTC)


def _spike(key: str = "ACME", hours: int = 0, **kw) -> dict:
    start = T0 + timedelta(hours=hours)
    return {"granularity": "1h", "dimension": "ticker", "key": key, "window_start": start,
            "window_end": start + timedelta(hours=1), "last_window_end": start + timedelta(hours=1), "n": 40,
            "n_neg": 30, "observed": 0.75, "baseline": 0.25, "p_value": 1e-9, "severity": "high",
            "evidence": [{"title": "ACME warns on profit", "source": "wire", "score": -0.9}], **kw}


def test_insert_is_deduplicated_and_extend_moves_the_end(settings) -> None:
    with connect(settings) as con:
        migrate(con)
        first = db_alerts.insert_alerts(con, [_spike(), _spike("BETA")], model_version="m1", flow_run_id=None)
        again = db_alerts.insert_alerts(con, [_spike()], model_version="m1", flow_run_id=None)
        assert len(first) == 2 and again == []
        assert first[0] == db_alerts.alert_id(db_alerts.dedup_key(_spike()))  # stable ids
        ends = db_alerts.last_alert_ends(con)
        assert ends[("ticker", "ACME")] == (first[0], T0 + timedelta(hours=1))
        db_alerts.extend_alerts(con, {first[0]: T0 + timedelta(hours=5)})
        row = db_alerts.get_alert(con, first[0])
        assert row["last_window_end"] == T0 + timedelta(hours=5) and row["status"] == "pending"
        assert row["evidence"][0]["title"] == "ACME warns on profit"
        # Two runs claim at once: each alert goes to exactly one of them.
        run1 = db_alerts.claim_pending(con, "run-1")
        assert sorted(a["alert_id"] for a in run1) == sorted(first) and db_alerts.claim_pending(con, "run-2") == []
        db_alerts.mark_failed(con, first[0], 3, "ConnectError")  # back to pending for the next run
        db_alerts.release_claims(con, "run-1")
        assert sorted(a["alert_id"] for a in db_alerts.pending_alerts(con)) == sorted(first)
        assert sorted(a["alert_id"] for a in db_alerts.claim_pending(con, "run-3")) == sorted(first)
        db_alerts.mark_delivered(con, first[0], "custom-webhook/x", 1)
        db_alerts.mark_delivered(con, first[0], "custom-webhook/x", 1)  # recorded once: a no-op now
        row = db_alerts.get_alert(con, first[0])
        assert (row["status"], row["delivery_attempts"], row["last_error"]) == ("open", 4, None)
        # A claim that a crashed run left behind is taken over once it is stale.
        assert db_alerts.claim_pending(con, "run-4", stale_after_s=3600) == []
        assert [a["alert_id"] for a in db_alerts.claim_pending(con, "run-4", stale_after_s=0)] == [first[1]]


def test_resolved_alerts_do_not_anchor_the_cooldown(settings) -> None:
    with connect(settings) as con:
        migrate(con)
        aid = db_alerts.insert_alerts(con, [_spike()], model_version="m1", flow_run_id=None)[0]
        assert ("ticker", "ACME") in db_alerts.last_alert_ends(con)
        db_alerts.set_status(con, aid, "resolved")
        assert db_alerts.last_alert_ends(con) == {}


def test_acked_while_delivering_keeps_ack_and_records_delivery(settings) -> None:
    with connect(settings) as con:
        migrate(con)
        aid = db_alerts.insert_alerts(con, [_spike()], model_version="m1", flow_run_id=None)[0]
        db_alerts.claim_pending(con, "run-1")
        db_alerts.set_status(con, aid, "acked")
        db_alerts.mark_delivered(con, aid, "custom-webhook/x", 1)
        row = db_alerts.get_alert(con, aid)
        assert row["status"] == "acked" and row["notified_at"] is not None and row["delivery_channel"] == "custom-webhook/x"


def test_ack_resolve_and_errors(settings) -> None:
    with connect(settings) as con:
        migrate(con)
        aid = db_alerts.insert_alerts(con, [_spike()], model_version="m1", flow_run_id=None)[0]
        assert db_alerts.set_status(con, aid[:8], "acked", "on it")["status"] == "acked"
        done = db_alerts.set_status(con, aid, "resolved")
        assert done["status"] == "resolved" and done["note"] == "on it" and done["resolved_at"] is not None
        with pytest.raises(ValueError, match="already resolved"):
            db_alerts.set_status(con, aid, "acked")
        with pytest.raises(KeyError):
            db_alerts.set_status(con, "nope", "acked")
        with pytest.raises(KeyError):  # a prefix is a prefix, not a LIKE pattern
            db_alerts.set_status(con, "%", "acked")
        with pytest.raises(ValueError):
            db_alerts.set_status(con, aid, "open")


def test_cli_alerts_list_ack_resolve(settings) -> None:
    with connect(settings) as con:
        migrate(con)
        aid = db_alerts.insert_alerts(con, [_spike()], model_version="m1", flow_run_id=None)[0]
    runner = CliRunner()
    listed = runner.invoke(app, ["alerts", "list", "--format", "csv"])
    assert listed.exit_code == 0 and aid in listed.output and "ACME" in listed.output
    assert runner.invoke(app, ["alerts", "ack", aid[:10], "--note", "desk"]).exit_code == 0
    shown = runner.invoke(app, ["alerts", "show", aid])
    assert shown.exit_code == 0 and "acked" in shown.output and "ACME warns on profit" in shown.output
    assert runner.invoke(app, ["alerts", "resolve", aid]).exit_code == 0
    assert aid not in runner.invoke(app, ["alerts", "list", "--format", "csv"]).output  # no longer open
    assert aid in runner.invoke(app, ["alerts", "list", "--status", "resolved", "--format", "csv"]).output
    assert runner.invoke(app, ["alerts", "resolve", aid]).exit_code == 1
    assert runner.invoke(app, ["alerts", "list", "--status", "bogus"]).exit_code == 2


def test_alert_message_is_readable_and_carries_the_id() -> None:
    from tasks.alerts import alert_message

    alert = {**_spike(), "alert_id": "a0123456789abcde", "n_articles": 40, "n_negative": 30}
    subject, body = alert_message(alert)
    assert subject == "[HIGH] Negative sentiment spike: ticker ACME"
    assert "30 of 40 articles negative (75% vs baseline 25%" in body
    assert "ACME warns on profit" in body and body.endswith("alert_id: a0123456789abcde")


def test_score_detection_counts_hits_related_and_false_alarms() -> None:
    truth = {"episodes": [{"dimension": "ticker", "key": "ACME", "onset": "2026-10-05T13:30:00Z",
                           "end": "2026-10-05T18:00:00Z"},
                          {"dimension": "topic", "key": "energy", "onset": "2026-10-09T00:00:00Z",
                           "end": "2026-10-09T04:00:00Z"}],
             "decoys": [{"dimension": "ticker", "key": "TINY", "onset": "2026-10-07T10:00:00Z",
                         "end": "2026-10-07T11:00:00Z"}]}
    alerts = [_spike(),                                    # hit, window ends 15:00 -> 1.5 h delay
              {**_spike(), "dimension": "overall", "key": "*"},  # same time, other key: related
              _spike("ZETA", hours=48)]                     # nothing injected then: false alarm
    got = score_detection(alerts, truth)
    assert (got["detected"], got["true_alerts"], got["related_alerts"], got["false_alarms"]) == (1, 1, 1, 1)
    assert got["recall"] == 0.5 and got["precision"] == 0.5 and got["median_delay_h"] == 1.5
    assert got["missed"] == ["topic energy"] and got["decoys_alerted"] == 0


def test_cli_status_shows_champion_scoring_and_alerts(settings) -> None:
    from warehouse import registry as db_registry

    with connect(settings) as con:
        migrate(con)
        db_alerts.insert_alerts(con, [_spike()], model_version="m1", flow_run_id=None)
        db_registry.record_model(con, {"model_version": "m1", "backbone": "tiny", "heads": {}, "metrics": {},
                                       "val_score": 0.0, "served": "gpt", "val_split_id": "t", "artifact_path": "/x"})
        db_registry.promote(con, "m1", "test")
    out = CliRunner().invoke(app, ["status"])
    assert out.exit_code == 0, out.output
    assert "m1" in out.output and "open_alerts" in out.output and "undelivered_alerts" in out.output
