"""The `newspulse` CLI: demo end to end on a small stream, read-only SQL, status."""

from __future__ import annotations

import json

import duckdb
import pytest
from typer.testing import CliRunner

from newspulse.cli import app

runner = CliRunner()


@pytest.mark.usefixtures("prefect_harness")
def test_demo_then_sql_then_rerun(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEWSPULSE_DATA_DIR", raising=False)
    args = ["demo", "--days", "3", "--articles-per-day", "120", "--users", "30", "--no-train"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Ingested batches" in result.output and "Top quarantine reasons" in result.output

    out = runner.invoke(app, ["sql", "SELECT count(*) AS n FROM v_articles", "--format", "json"])
    assert out.exit_code == 0, out.output
    n_articles = json.loads(out.output)[0]["n"]
    assert n_articles > 300

    # Every batch obeys the identity; gold labels and click logs landed too.
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        bad = con.execute(
            "SELECT count(*) FROM ingest_batches WHERE rows_read <> rows_inserted + rows_duplicate + rows_quarantined"
        ).fetchall()[0][0]
        labels = con.execute("SELECT count(*) FROM labels WHERE dataset = 'synthetic'").fetchall()[0][0]
        behaviors = con.execute("SELECT count(*) FROM behaviors WHERE source = 'synthetic'").fetchall()[0][0]
        runs = con.execute("SELECT count(DISTINCT batch_id) FROM validation_runs").fetchall()[0][0]
        seed = con.execute("SELECT count(*) FROM labels WHERE dataset = 'newspulse_seed'").fetchall()[0][0]
    finally:
        con.close()
    # articles, labels, click logs, and the 600 hand-written seed headlines: one validated batch each
    assert bad == 0 and labels > 0 and behaviors > 0 and runs == 4 and seed == 600

    # Re-running the demo regenerates identical files: nothing new is inserted.
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    out = runner.invoke(app, ["sql", "SELECT count(*) AS n FROM v_articles", "--format", "json"])
    assert json.loads(out.output)[0]["n"] == n_articles


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO articles (article_id, source, ingested_at, batch_id) VALUES ('x', 'y', now(), 'z')",
        "DELETE FROM articles",
        "DROP VIEW v_articles",
        "COPY articles TO '/tmp/np-leak.csv'",
        "ATTACH '/tmp/np-other.duckdb' AS other",
        "INSTALL httpfs",
        "SELECT * FROM read_csv('/etc/passwd')",
    ],
    ids=["insert", "delete", "drop", "copy-to", "attach", "install", "read-file"],
)
def test_sql_is_read_only(settings, statement: str) -> None:
    from warehouse.connection import connect
    from warehouse.migrate import migrate

    with connect(settings) as con:
        migrate(con)
    result = runner.invoke(app, ["sql", statement])
    assert result.exit_code == 2, result.output
    assert "Error" in result.output


def test_status_without_warehouse(settings) -> None:
    settings.warehouse_path.unlink(missing_ok=True)
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0 and "no warehouse" in result.output


def test_demo_receiver_restores_the_environment(monkeypatch) -> None:
    import os

    from newspulse.cli import _demo_receiver
    from core.settings import get_settings

    for key in ("NEWSPULSE_ALERT_WEBHOOK_URL", "NEWSPULSE_ALERT_BLOCK", "NEWSPULSE_ALERT_ALLOW_PRIVATE_URLS"):
        monkeypatch.delenv(key, raising=False)
    get_settings.cache_clear()
    with _demo_receiver() as receiver:
        assert receiver is not None and get_settings().alert_webhook_url.get_secret_value() == receiver.url
        assert get_settings().alert_allow_private_urls
    assert "NEWSPULSE_ALERT_WEBHOOK_URL" not in os.environ and get_settings().alert_webhook_url is None
    monkeypatch.setenv("NEWSPULSE_ALERT_BLOCK", "slack-webhook/desk")  # the user's own delivery wins
    get_settings.cache_clear()
    with _demo_receiver() as receiver:
        assert receiver is None
    get_settings.cache_clear()
