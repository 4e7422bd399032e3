"""Tests for :mod:`warehouse.validation`: the GX DuckDB patch, every row check with its reason,
batch-level severity and the ``validation.json`` round trip.

A record is staged with :func:`warehouse.staging.stage_frame` and validated exactly as the ingest
path does; the reasons are read back from the batch's ``failures.parquet``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from sources.records import SENTIMENT_LABELS, behaviors_frame, records_frame
from warehouse import staging, validation
from warehouse.connection import connect_memory
from warehouse.validation import ALLOWED_SPLITS, Check, ValidationReport, run_suite

# --------------------------------------------------------------------------------------------
# helpers (this file only)
# --------------------------------------------------------------------------------------------


def _validate_rows(settings, rows: list[dict], target: str = "articles") -> tuple[ValidationReport, dict[int, list[str]], Path]:
    """Stage ``rows`` as one batch, validate it; returns (report, {record_no: sorted reasons}, batch dir)."""
    batch_dir, manifest = staging.new_batch(settings.staging_dir, "src", target, "test")
    frame = records_frame(rows) if target == "articles" else behaviors_frame(rows)
    with connect_memory(settings) as mem:
        staging.stage_frame(mem, batch_dir, manifest, frame)
    with connect_memory(settings) as mem:
        report = validation.validate_batch(mem, batch_dir, target, settings)
    con = duckdb.connect()
    try:
        failures = con.execute(
            f"SELECT record_no, list(reason ORDER BY reason) FROM read_parquet('{batch_dir / 'failures.parquet'}') "
            "GROUP BY record_no"
        ).fetchall()
    finally:
        con.close()
    reasons = {int(no): list(rs) for no, rs in failures}
    assert report.rows == len(rows)
    assert report.rows_failed == len(reasons)
    assert all(r for rs in reasons.values() for r in rs), "every failure needs a non-empty reason"
    return report, reasons, batch_dir


@pytest.fixture
def small(settings):
    """Settings with small text limits, so 'too long' needs few characters."""
    return settings.model_copy(update={"max_text_chars": 50, "max_title_chars": 20})


def _iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


def _gxe():
    import great_expectations.expectations as gxe

    return gxe


# --------------------------------------------------------------------------------------------
# the GX DuckDB patch (regression guard)
# --------------------------------------------------------------------------------------------


def test_gx_patch_adds_duckdb_to_persisted_dialects_once() -> None:
    from great_expectations.execution_engine import sqlalchemy_execution_engine as see

    validation._patch_gx_for_duckdb()
    validation._patch_gx_for_duckdb()
    assert [str(d) for d in see._PERSISTED_CONNECTION_DIALECTS].count("duckdb") == 1


@pytest.mark.parametrize("n_rows, every", [pytest.param(10, 3, id="small"), pytest.param(5000, 7, id="5000-rows")])
def test_run_suite_reports_exact_unexpected_rows(n_rows: int, every: int) -> None:
    gxe = _gxe()
    con = duckdb.connect(":memory:")
    try:
        con.execute(
            f"""CREATE TABLE t AS SELECT i AS record_no,
                       CASE WHEN i % {every} = 0 THEN NULL ELSE 'v' || i END AS x,
                       i AS n
                FROM range(1, {n_rows + 1}) r(i)"""
        )
        expected_nulls = sorted(i for i in range(1, n_rows + 1) if i % every == 0)
        checks = [
            Check(lambda: gxe.ExpectColumnValuesToNotBeNull(column="x"), "row", "'x is null at ' || t.n"),
            Check(lambda: gxe.ExpectColumnValuesToBeBetween(column="n", min_value=1, max_value=n_rows), "row", "'n out of range'"),
        ]
        for _ in range(2):  # twice in one process (and one connection): the patch must keep working
            report = run_suite(con, "t", "guard", checks, 1.0)
            not_null = next(o for o in report.outcomes if o.expectation == "expect_column_values_to_not_be_null")
            assert not_null.success is False
            assert not_null.element_count == n_rows
            assert not_null.unexpected_count == len(expected_nulls)
            between = next(o for o in report.outcomes if o.expectation == "expect_column_values_to_be_between")
            assert between.success is True and between.unexpected_count == 0
            failures = con.execute("SELECT record_no, reason FROM failures ORDER BY record_no").fetchall()
            assert [r[0] for r in failures] == expected_nulls
            assert failures[0][1] == f"x is null at {expected_nulls[0]}"
            assert report.rows == n_rows and report.rows_failed == len(expected_nulls)
            assert report.batch_errors == []
            assert [o.expectation_no for o in report.outcomes] == [1, 2]
        # The caller's connection is still open and usable.
        assert con.execute("SELECT count(*) FROM t").fetchall() == [(n_rows,)]
    finally:
        con.close()


def test_run_suite_severities() -> None:
    gxe = _gxe()
    con = duckdb.connect(":memory:")
    try:
        con.execute("CREATE TABLE t AS SELECT i AS record_no, NULL::VARCHAR AS x, NULL::VARCHAR AS y FROM range(1, 5) r(i)")
        checks = [
            Check(lambda: gxe.ExpectColumnValuesToNotBeNull(column="x"), "error"),
            Check(lambda: gxe.ExpectColumnValuesToNotBeNull(column="y"), "warning"),
            Check(lambda: gxe.ExpectColumnValuesToBeNull(column="x"), "row", "'never'"),
        ]
        report = run_suite(con, "t", "sev", checks, 1.0)
        assert [(o.severity, o.success) for o in report.outcomes] == [("error", False), ("warning", False), ("row", True)]
        assert len(report.batch_errors) == 1
        assert "expect_column_values_to_not_be_null(x) failed" in report.batch_errors[0]
        assert con.execute("SELECT count(*) FROM failures").fetchall() == [(0,)]
        assert report.rows_failed == 0
    finally:
        con.close()


def test_run_suite_rejects_the_same_expectation_twice() -> None:
    """GX keeps one copy of equal expectations, so a suite may not list one twice: clear error."""
    gxe = _gxe()
    con = duckdb.connect(":memory:")
    try:
        con.execute("CREATE TABLE t AS SELECT i AS record_no, NULL::VARCHAR AS x FROM range(1, 5) r(i)")
        checks = [
            Check(lambda: gxe.ExpectColumnValuesToNotBeNull(column="x"), "error"),
            Check(lambda: gxe.ExpectColumnValuesToNotBeNull(column="x"), "warning"),
        ]
        with pytest.raises(ValueError, match="checks 1 and 2 are the same expectation"):
            run_suite(con, "t", "dup", checks, 1.0)
    finally:
        con.close()


# --------------------------------------------------------------------------------------------
# row checks of the articles suite
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record, reason",
    [
        pytest.param({"title": "Fine title", "error": "reader could not parse"}, "reader could not parse", id="reader-error"),
        pytest.param({"title": "", "body": "   "}, "empty text: no title and no body", id="empty-text"),
        pytest.param({"title": "<p></p>", "body": "&nbsp;"}, "empty text: no title and no body", id="markup-only-text"),
        pytest.param({"title": "ab"}, "text length 2 outside [3, 50]", id="too-short"),
        pytest.param({"body": "x" * 51}, "text length 51 outside [3, 50]", id="too-long"),
        pytest.param({"title": "t" * 10, "body": "b" * 40}, "text length 51 outside [3, 50]", id="too-long-joined"),
        pytest.param({"title": "t" * 21}, "title length 21 over 20", id="long-title"),
        pytest.param({"title": "Dated", "published_at": "yesterday"}, "unparseable published_at: yesterday", id="unparseable-date"),
        pytest.param({"title": "Dated", "published_at": _iso(timedelta(hours=2))}, "published_at in the future: ", id="future-date"),
        pytest.param({"title": "Dated", "published_at": "2999-01-01"}, "published_at in the future: 2999-01-01", id="far-future"),
        pytest.param({"title": "Dated", "published_at": "1899-12-31"}, "published_at before 1900-01-01: 1899-12-31", id="too-old"),
        pytest.param({"title": "Labelled", "label": "positive"}, "label without a known task (sentiment|topic): missing", id="label-without-task"),
        pytest.param({"title": "Labelled", "label": "joy", "task": "emotion"}, "label without a known task (sentiment|topic): emotion", id="unknown-task"),
        pytest.param({"title": "Labelled", "label": "bullish", "task": "sentiment"}, "unknown sentiment label: bullish (allowed: ", id="unknown-sentiment"),
        pytest.param({"title": "Labelled", "label": "t" * 65, "task": "topic"}, "topic label longer than 64 characters: ", id="long-topic"),
        pytest.param({"title": "Split", "split": "dev"}, "unknown split: dev (allowed: train, validation, test, unused)", id="unknown-split"),
    ],
)
def test_every_article_row_check_fires_with_its_reason(small, record: dict, reason: str) -> None:
    report, reasons, _ = _validate_rows(small, [record])
    assert list(reasons) == [1]
    assert len(reasons[1]) == 1, reasons[1]
    assert reasons[1][0].startswith(reason), reasons[1]
    assert report.rows_failed == 1


def test_several_reasons_for_one_record(small) -> None:
    _, reasons, _ = _validate_rows(small, [{"title": "t" * 60, "published_at": "nope", "split": "dev", "label": "x"}])
    assert [r.split(":")[0].split(" (")[0] for r in reasons[1]] == [
        "label without a known task",
        "text length 60 outside [3, 50]",
        "title length 60 over 20",
        "unknown split",
        "unparseable published_at",
    ]


def test_valid_records_with_every_label_kind_pass(small) -> None:
    rows: list[dict[str, Any]] = [
        {"title": "No label at all"},
        {"title": "abc"},  # exactly min_text_chars
        {"body": "b" * 50},  # exactly max_text_chars
        {"title": "t" * 20},  # exactly max_title_chars
        {"title": "Old but ok", "published_at": "1900-01-01"},
        {"title": "Almost now", "published_at": _iso(timedelta(minutes=30))},  # within future_tolerance_s
        {"title": "Topic multi", "label": "earn|acq", "task": "topic", "split": "train"},
        {"title": "Topic single", "label": "l" * 64, "task": "topic", "dataset": "reuters"},
        *({"title": f"Sentiment {lab}", "label": lab.upper(), "task": "sentiment", "split": split}
          for lab, split in zip([*SENTIMENT_LABELS, "none"], ALLOWED_SPLITS, strict=True)),
    ]
    report, reasons, _ = _validate_rows(small, rows)
    assert reasons == {}
    assert report.rows == len(rows) and report.rows_failed == 0
    assert report.batch_errors == []
    assert all(o.success for o in report.outcomes), [o for o in report.outcomes if not o.success]


def test_future_tolerance_setting_is_used(settings) -> None:
    loose = settings.model_copy(update={"future_tolerance_s": 3 * 3600})
    strict = settings.model_copy(update={"future_tolerance_s": 0})
    row = {"title": "Soon", "published_at": _iso(timedelta(hours=2))}
    assert _validate_rows(loose, [row])[1] == {}
    assert list(_validate_rows(strict, [row])[1]) == [1]


# --------------------------------------------------------------------------------------------
# batch level
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n_good, n_bad, fraction, limit_error",
    [
        pytest.param(1, 2, 0.5, True, id="over-limit"),
        pytest.param(2, 1, 0.5, False, id="under-limit"),
        pytest.param(2, 2, 0.5, False, id="exactly-at-limit"),
        pytest.param(3, 1, 0.0, True, id="zero-tolerance"),
        pytest.param(0, 3, 1.0, False, id="all-bad-allowed"),
        pytest.param(0, 0, 0.0, False, id="empty-batch"),
    ],
)
def test_batch_quarantine_fraction(settings, n_good: int, n_bad: int, fraction: float, limit_error: bool) -> None:
    s = settings.model_copy(update={"max_quarantine_fraction": fraction})
    rows = [{"title": f"Good story {i}"} for i in range(n_good)] + [{"title": ""} for _ in range(n_bad)]
    report, reasons, _ = _validate_rows(s, rows)
    assert report.rows_failed == n_bad == len(reasons)
    if limit_error:
        assert len(report.batch_errors) == 1
        assert f"{n_bad} of {n_good + n_bad} rows" in report.batch_errors[0]
        assert f"over the {fraction:.0%} limit" in report.batch_errors[0]
    else:
        assert report.batch_errors == []


def test_validation_json_round_trips(small) -> None:
    report, _, batch_dir = _validate_rows(small, [{"title": "Good story"}, {"title": ""}, {"title": "x", "split": "dev"}])
    stored = ValidationReport.from_json((batch_dir / "validation.json").read_text(encoding="utf-8"))
    assert stored == report
    assert ValidationReport.from_json(report.to_json()) == report
    assert stored.suite == "articles.batch" and stored.rows == 3 and stored.rows_failed == 2
    assert stored.batch_errors and "over the 50% limit" in stored.batch_errors[0]
    assert [o.expectation_no for o in stored.outcomes] == list(range(1, len(validation.article_checks(small)) + 1))
    assert all(isinstance(o, validation.ExpectationOutcome) for o in stored.outcomes)


# --------------------------------------------------------------------------------------------
# behaviors suite
# --------------------------------------------------------------------------------------------

_OK_BEHAVIOR = {"impression_id": "1", "user_id": "U1", "time": "11/15/2019 8:55:22 AM", "history": "N1 N2",
                "impressions": "N3-1 N4-0"}


@pytest.mark.parametrize(
    "change, reason",
    [
        pytest.param({"error": "bad TSV line"}, "bad TSV line", id="reader-error"),
        pytest.param({"user_id": None}, "missing user id", id="missing-user"),
        pytest.param({"user_id": "  "}, "missing user id", id="blank-user"),
        pytest.param({"impression_id": None}, "missing impression id", id="missing-impression-id"),
        pytest.param({"time": None}, "missing time", id="missing-time"),
        pytest.param({"time": "13/45/2019 99:00:00 XM"}, "unparseable time: 13/45/2019 99:00:00 XM", id="bad-time"),
        pytest.param({"time": _iso(timedelta(hours=2))}, "time in the future: ", id="future-time"),
        pytest.param({"impressions": ""}, "no impressions shown", id="no-impressions"),
        pytest.param({"impressions": None}, "no impressions shown", id="null-impressions"),
        pytest.param({"impressions": "N3-1 N4 N5-2 -1"}, "3 impression token(s) not like <item>-0 or <item>-1", id="bad-tokens"),
    ],
)
def test_every_behavior_check_fires_with_its_reason(settings, change: dict, reason: str) -> None:
    _, reasons, _ = _validate_rows(settings, [{**_OK_BEHAVIOR, **change}], target="behaviors")
    assert list(reasons) == [1]
    assert len(reasons[1]) == 1, reasons[1]
    assert reasons[1][0].startswith(reason), reasons[1]


def test_valid_behaviors_pass(settings) -> None:
    rows = [
        _OK_BEHAVIOR,
        {**_OK_BEHAVIOR, "impression_id": "2", "history": "", "time": "2019-11-15T08:55:22Z"},
        {**_OK_BEHAVIOR, "impression_id": "3", "history": None, "impressions": "N-1-1  N2-0 "},
    ]
    report, reasons, _ = _validate_rows(settings, rows, target="behaviors")
    assert reasons == {} and report.batch_errors == []
    assert report.suite == "behaviors.batch"
