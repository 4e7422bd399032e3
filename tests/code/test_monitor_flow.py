"""The monitor flow end to end: windows, one alert per episode, delivery to a loopback webhook.

The warehouse is filled with a flat stream of already-scored articles (no model needed), with
known spikes injected; a tiny HTTP server on 127.0.0.1 plays the alert receiver.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from bench.reliability_common import load_scored, spiky_stream
from newspulse.receiver import WebhookReceiver as Receiver
from core.settings import get_settings
from warehouse.connection import connect

pytestmark = pytest.mark.usefixtures("prefect_harness")

START = datetime(2026, 10, 1, tzinfo=UTC)
MODEL = "m20261001-000000-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stream(days: int, seed: int, spikes: list[tuple[str, datetime, int, int]]) -> pd.DataFrame:
    """About 24 articles/hour, 25% negative, plus ``(ticker, start, n, n_negative)`` bursts."""
    return spiky_stream(days, seed, spikes, tickers=("AAA", "BBB", "CCC", "DDD", "EEE", "ZZZ"), start=START)


def _load(settings, df: pd.DataFrame, scored_at: datetime | None = None) -> None:
    """Insert articles and the champion's scores for them (what ingest + score would write)."""
    load_scored(settings, df, MODEL, "test", source=df.source, scored_at=scored_at)


def _alerts(settings) -> list[dict]:
    from warehouse.alerts import list_alerts

    with connect(settings) as con:
        return list_alerts(con)


def _artifact(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return str(sorted(found, key=lambda x: x.created)[-1].data)


def _use_webhook(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    monkeypatch.setenv("NEWSPULSE_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{port}/hook?token=s3cret-token")
    monkeypatch.setenv("NEWSPULSE_ALERT_RETRY_BACKOFF_S", "0.05")
    monkeypatch.setenv("NEWSPULSE_ALERT_ALLOW_PRIVATE_URLS", "true")
    get_settings.cache_clear()


def test_spike_found_delivered_once_with_retry_then_not_again(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.monitor import monitor_flow

    spike_at = START + timedelta(days=8, hours=10)
    # A 4-hour episode on ZZZ (one alert, not four) and a tiny burst on YYY (no alert).
    bursts = [("ZZZ", spike_at + timedelta(hours=h), 30, 24) for h in range(4)]
    bursts.append(("YYY", START + timedelta(days=9, hours=3), 5, 5))
    _load(settings, _stream(10, seed=1, spikes=bursts))
    receiver = Receiver(fail_first=1)  # the first POST gets a 500: the retry must deliver it
    try:
        _use_webhook(monkeypatch, receiver.port)
        summary = monitor_flow(notify_backfill=True)
        alerts = _alerts(settings)
        zzz = [a for a in alerts if a["key"] == "ZZZ"]
        assert len(zzz) == 1, alerts
        a = zzz[0]
        assert a["dimension"] == "ticker" and a["status"] == "open" and a["notified_at"] is not None
        assert spike_at <= a["window_end"] and a["window_start"] <= spike_at + timedelta(hours=1)
        assert a["last_window_end"] >= spike_at + timedelta(hours=3)  # the episode extended the one alert
        assert a["observed"] > 0.6 and a["baseline"] < 0.4 and a["evidence"]
        assert not [x for x in alerts if x["key"] == "YYY"]
        assert a["event_id"] is not None
        # The burst also lifts the overall, its source and its topic: those alerts say that ZZZ
        # explains them and do not page (issue 19: one page per episode, at the right key).
        paged = [x for x in alerts if not x["explained_by"]]
        assert paged == [a] and all(x["explained_by"] == "ticker:ZZZ" and x["status"] == "open"
                                    and x["notified_at"] is None for x in alerts if x is not a)
        assert a["detector"] == "scan" and a["granularity"] in ("15m", "30m", "1h", "2h", "4h")
        # exactly one POST per paged alert, although the first attempt failed
        assert sorted(p["text"].rsplit("alert_id: ", 1)[1] for p in receiver.posts) == [a["alert_id"]]
        assert summary["delivered"] and not summary["failed"]
        assert receiver.requests == len(paged) + 1  # one 500, then one accepted POST per paged alert
        # The report: a timeline PNG of the alerted keys and a markdown artifact with it and the table.
        png = summary["report_png"]
        assert png and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
        report = _artifact("sentiment-monitor")
        assert "data:image/png;base64," in report and a["alert_id"] in report and "ZZZ" in report
        assert "expected share" in report or "band" in report or a["alert_id"] in report
        assert sum(x["delivery_attempts"] for x in alerts) == len(paged) + 1  # one retry in all
        # nothing new: no new alert, no second delivery
        monitor_flow(notify_backfill=True)
        assert len(receiver.posts) == len(paged) and len(alerts) == len(_alerts(settings))
    finally:
        receiver.close()


def test_receiver_down_keeps_alerts_pending_until_it_returns(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.monitor import monitor_flow

    spike_at = START + timedelta(days=8, hours=10)
    _load(settings, _stream(9, seed=2, spikes=[("ZZZ", spike_at, 40, 32)]))
    port = _free_port()
    _use_webhook(monkeypatch, port)  # nothing listens there yet
    monitor_flow(notify_backfill=True)
    pending = [a for a in _alerts(settings) if not a["explained_by"]]  # explained ones never page
    assert pending and all(a["status"] == "pending" for a in pending)
    # The first alert is tried 3 times; then the run stops (circuit breaker) instead of letting
    # every other alert time out against a dead receiver.
    assert sorted(a["delivery_attempts"] for a in pending) == [0] * (len(pending) - 1) + [3]
    assert all("s3cret-token" not in (a["last_error"] or "") for a in pending)  # the URL's token never leaks
    receiver = Receiver(port=port)
    try:
        monitor_flow(notify_backfill=True)
        delivered = [a for a in _alerts(settings) if not a["explained_by"]]
        assert all(a["status"] == "open" for a in delivered)
        assert len(receiver.posts) == len(delivered)
        monitor_flow(notify_backfill=True)
        assert len(receiver.posts) == len(delivered)
    finally:
        receiver.close()


def test_incremental_run_and_cooldown(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.monitor import monitor_flow

    monkeypatch.setenv("NEWSPULSE_ALERT_BLOCK", "")  # no delivery configured
    get_settings.cache_clear()
    first = START + timedelta(days=8, hours=10)
    _load(settings, _stream(9, seed=3, spikes=[("ZZZ", first, 40, 32)]))
    initial = monitor_flow(notify_backfill=True)
    before = [a for a in _alerts(settings) if a["key"] == "ZZZ"]
    assert len(before) == 1
    # New scores arrive: the same episode continues 2 h later (cooldown: extends), and a second
    # episode on ZZZ starts two days later (a new alert).
    later = _stream(0, seed=4, spikes=[("ZZZ", first + timedelta(hours=2), 40, 32),
                                       ("ZZZ", first + timedelta(days=2), 40, 32)])
    later["article_id"] = "late-" + later["article_id"]
    # Scored long ago, committed only now (a slow shard): the commit time makes them new.
    _load(settings, later, scored_at=START)
    summary = monitor_flow(notify_backfill=True)
    zzz = sorted((a for a in _alerts(settings) if a["key"] == "ZZZ"), key=lambda a: a["window_start"])
    assert len(zzz) == 2, zzz
    assert zzz[0]["alert_id"] == before[0]["alert_id"]
    assert zzz[0]["last_window_end"] >= first + timedelta(hours=3)
    assert zzz[1]["window_start"] >= first + timedelta(days=2) - timedelta(hours=1)
    assert summary["cutoff"].startswith("2026-10-09")  # only windows touched by the new scores were recomputed
    # ... and only the keys with new scores were re-tested (ZZZ, its source and topic, overall)
    assert summary["keys_scanned"] == 4 < initial["keys_scanned"]


def test_old_windows_open_without_paging_anyone(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first run over history must not flood the desk with last month's episodes."""
    from flows.monitor import monitor_flow

    _load(settings, _stream(9, seed=5, spikes=[("ZZZ", START + timedelta(days=8, hours=10), 40, 32)]))
    with Receiver() as receiver:
        _use_webhook(monkeypatch, receiver.port)
        summary = monitor_flow()  # scheduled behaviour: notify_backfill=False
        alerts = _alerts(settings)
        paged = [a for a in alerts if not a["explained_by"]]
        assert paged and summary["stale"] == len(paged) and not receiver.posts
        assert all(a["status"] == "open" and a["delivery_channel"] == "not sent (stale)" for a in paged)
        assert all(a["delivery_channel"].startswith("not sent (explained by") for a in alerts if a not in paged)
        assert all(a["event_id"] for a in alerts)  # automations still see the events


def test_alert_block_of_the_wrong_type_is_refused(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect import flow
    from prefect.blocks.system import Secret

    from tasks.alerts import ensure_alert_block

    Secret(value="not-a-notifier").save("np-test-secret", overwrite=True)
    monkeypatch.delenv("NEWSPULSE_ALERT_WEBHOOK_URL", raising=False)  # nothing may create a block here

    @flow
    def probe(block: str):
        monkeypatch.setenv("NEWSPULSE_ALERT_BLOCK", block)
        get_settings.cache_clear()
        return ensure_alert_block(get_settings())

    assert probe("secret/np-test-secret") is None
    assert probe("no-slash") is None
    assert probe("custom-webhook/does-not-exist") is None


def test_automation_mode_hands_alerts_to_the_automation(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """alert_delivery='automation': events carry the notify label and the message; the flow sends nothing."""
    import time
    import uuid

    from prefect import get_client
    from prefect.events.filters import EventFilter, EventIDFilter, EventNameFilter

    from flows.monitor import monitor_flow
    from tasks.alerts import AUTOMATION, EVENT

    # Its own key and seed: event ids derive from alert ids, and the server keeps the first event per id.
    _load(settings, _stream(9, seed=8, spikes=[("QQQ", START + timedelta(days=8, hours=10), 40, 32)]))
    monkeypatch.setenv("NEWSPULSE_ALERT_DELIVERY", "automation")
    with Receiver() as receiver:
        _use_webhook(monkeypatch, receiver.port)
        summary = monitor_flow(notify_backfill=True)
        alerts = _alerts(settings)
        assert alerts and not receiver.posts  # the automation (not here) would send them
    paged = [a for a in alerts if not a["explained_by"]]
    assert sorted(summary["delivered"]) == sorted(a["alert_id"] for a in paged) and summary["pending"] == 0
    assert all(a["status"] == "open" and a["delivery_channel"] == f"automation:{AUTOMATION}" and a["event_id"]
               for a in paged)
    ours: dict = {}
    deadline = time.monotonic() + 30  # the server persists events asynchronously
    while time.monotonic() < deadline and not {a["event_id"] for a in alerts} <= set(ours):
        with get_client(sync_client=True) as client:
            page = client.read_events(filter=EventFilter(event=EventNameFilter(name=[EVENT]), id=EventIDFilter(
                id=[uuid.UUID(a["event_id"]) for a in alerts])), limit=50)
        ours = {str(e.id): e for e in page.events}
        time.sleep(0.5)
    for a in alerts:
        event = ours[a["event_id"]]
        assert event.resource["newspulse.notify"] == ("false" if a["explained_by"] else "true")
        assert event.payload["subject"].startswith("[") and a["alert_id"] in event.payload["body"]
