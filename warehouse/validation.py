"""Great Expectations suites for staged batches, and what their results mean for each row.

Each suite is a list of :class:`Check`: a GX expectation, a severity and (for row checks) a SQL
expression that turns a failing row into a human reason. GX runs on the staged batch inside an
in-memory DuckDB (SQL engine, so a million rows take well under a second); for every failed row
check we run GX's own ``unexpected_index_query`` to find the exact rows, so GX, not our code,
decides what is bad. Severities:

- ``row``: failing rows go to ``quarantine``; the batch goes on.
- ``error``: the batch is marked ``failed_validation`` and the flow run fails (rows are still
  committed, so nothing is lost and a re-run is idempotent).
- ``warning``: recorded in ``validation_runs`` only.

A batch that quarantines more than ``Settings.max_quarantine_fraction`` of its rows is also
``failed_validation``: a source that changed its format should page someone, not trickle.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import duckdb

from core.settings import Settings
from core.formats import SENTIMENT_LABELS, TASKS

Severity = Literal["row", "error", "warning"]

ALLOWED_SENTIMENT = [*SENTIMENT_LABELS, "none"]  # 'none': no price/sentiment signal (gold news set)
ALLOWED_SPLITS = ["train", "validation", "test", "unused"]

ARTICLE_COLUMNS = [
    "record_no", "raw", "error", "source", "source_id", "article_id", "title", "body", "url",
    "text_length", "title_length", "published_raw", "published_at", "published_status", "lang",
    "tickers", "meta", "dataset", "task", "label", "label_set", "sentiment_label", "topic_label",
    "split",
]
BEHAVIOR_NORMALIZED_COLUMNS = [
    "record_no", "raw", "error", "source", "impression_id", "user_id", "time_raw", "time",
    "time_status", "history", "impressions", "n_impressions", "n_bad_tokens",
]


@dataclass(frozen=True)
class Check:
    """One expectation with its severity and, for row checks, the reason shown in quarantine."""

    build: Callable[[], Any]  # returns a GX expectation (built lazily: GX imports in ~5 s)
    severity: Severity
    reason_sql: str | None = None


@dataclass
class ExpectationOutcome:
    """One expectation's result, as stored in ``validation_runs``."""

    expectation_no: int
    expectation: str
    column_name: str | None
    severity: Severity
    success: bool
    element_count: int | None
    unexpected_count: int | None
    kwargs: dict[str, Any]


@dataclass
class ValidationReport:
    """What validating one batch found."""

    suite: str
    rows: int
    rows_failed: int
    outcomes: list[ExpectationOutcome]
    batch_errors: list[str]

    def to_json(self) -> str:
        """Serialise for ``validation.json`` in the batch folder."""
        return json.dumps(asdict(self), default=str, indent=2)

    @classmethod
    def from_json(cls, text: str) -> ValidationReport:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        data["outcomes"] = [ExpectationOutcome(**o) for o in data["outcomes"]]
        return cls(**data)


def validation_summary(manifest: Any, report: ValidationReport) -> dict[str, Any]:
    """The validate task's summary of one batch (``manifest``: its staging Manifest)."""
    return {
        "batch_id": manifest.batch_id,
        "source": manifest.source,
        "suite": report.suite,
        "rows": report.rows,
        "rows_failed": report.rows_failed,
        "batch_errors": report.batch_errors,
        "outcomes": [o.__dict__ for o in report.outcomes],
    }


def article_checks(settings: Settings, now: datetime | None = None) -> list[Check]:
    """The ``articles`` suite: schema, text, lengths, timestamps, labels, ids."""
    import great_expectations.expectations as gxe

    now = now or datetime.now(UTC)
    latest = now + timedelta(seconds=settings.future_tolerance_s)
    earliest = datetime.fromisoformat(settings.min_published_at).replace(tzinfo=UTC)
    lo, hi = settings.min_text_chars, settings.max_text_chars
    return [
        Check(lambda: gxe.ExpectTableColumnsToMatchSet(column_set=ARTICLE_COLUMNS, exact_match=True), "error"),
        Check(lambda: gxe.ExpectColumnValuesToBeNull(column="error"), "row", "error"),
        Check(lambda: gxe.ExpectColumnValuesToNotBeNull(column="source"), "row", "'missing source'"),
        Check(
            lambda: gxe.ExpectColumnValuesToBeBetween(column="text_length", min_value=lo, max_value=hi),
            "row",
            f"CASE WHEN text_length = 0 THEN 'empty text: no title and no body' "
            f"ELSE 'text length ' || text_length || ' outside [{lo}, {hi}]' END",
        ),
        Check(
            lambda: gxe.ExpectColumnValuesToBeBetween(
                column="title_length", min_value=0, max_value=settings.max_title_chars
            ),
            "row",
            f"'title length ' || title_length || ' over {settings.max_title_chars}'",
        ),
        Check(
            lambda: gxe.ExpectColumnValuesToBeInSet(column="published_status", value_set=["ok", "missing"]),
            "row",
            "'unparseable published_at: ' || left(published_raw, 80)",
        ),
        Check(
            lambda: gxe.ExpectColumnValuesToBeBetween(
                column="published_at", min_value=earliest, max_value=latest
            ),
            "row",
            f"CASE WHEN published_at > TIMESTAMPTZ '{latest.isoformat()}' "
            f"THEN 'published_at in the future: ' || published_at "
            f"ELSE 'published_at before {settings.min_published_at}: ' || published_at END",
        ),
        Check(
            lambda: gxe.ExpectColumnValuesToBeInSet(column="task", value_set=list(TASKS)),
            "row",
            "'label without a known task (sentiment|topic): ' || task",
        ),
        Check(
            lambda: gxe.ExpectColumnValuesToBeInSet(column="sentiment_label", value_set=ALLOWED_SENTIMENT),
            "row",
            f"'unknown sentiment label: ' || sentiment_label || ' (allowed: {', '.join(ALLOWED_SENTIMENT)})'",
        ),
        Check(
            # GX has no regex expectation for the DuckDB dialect; bound the length instead.
            lambda: gxe.ExpectColumnValueLengthsToBeBetween(column="topic_label", min_value=1, max_value=64),
            "row",
            "'topic label longer than 64 characters: ' || left(topic_label, 80)",
        ),
        Check(
            lambda: gxe.ExpectColumnValuesToBeInSet(column="split", value_set=ALLOWED_SPLITS),
            "row",
            f"'unknown split: ' || split || ' (allowed: {', '.join(ALLOWED_SPLITS)})'",
        ),
        Check(lambda: gxe.ExpectColumnValuesToNotBeNull(column="article_id"), "error"),
        Check(lambda: gxe.ExpectColumnValueLengthsToEqual(column="article_id", value=32), "error"),
        # Repeats inside a batch are not errors (the commit keeps the first and counts the rest
        # as duplicates); the warning records how many there were in validation_runs.
        Check(lambda: gxe.ExpectColumnValuesToBeUnique(column="article_id"), "warning"),
    ]


def behavior_checks(settings: Settings, now: datetime | None = None) -> list[Check]:
    """The ``behaviors`` suite for MIND-style click logs."""
    import great_expectations.expectations as gxe

    now = now or datetime.now(UTC)
    latest = now + timedelta(seconds=settings.future_tolerance_s)
    return [
        Check(
            lambda: gxe.ExpectTableColumnsToMatchSet(column_set=BEHAVIOR_NORMALIZED_COLUMNS, exact_match=True),
            "error",
        ),
        Check(lambda: gxe.ExpectColumnValuesToBeNull(column="error"), "row", "error"),
        Check(lambda: gxe.ExpectColumnValuesToNotBeNull(column="impression_id"), "row", "'missing impression id'"),
        Check(lambda: gxe.ExpectColumnValuesToBeUnique(column="impression_id"), "warning"),
        Check(lambda: gxe.ExpectColumnValuesToNotBeNull(column="user_id"), "row", "'missing user id'"),
        Check(
            lambda: gxe.ExpectColumnValuesToBeInSet(column="time_status", value_set=["ok"]),
            "row",
            "CASE WHEN time_status = 'missing' THEN 'missing time' "
            "ELSE 'unparseable time: ' || left(time_raw, 60) END",
        ),
        Check(
            lambda: gxe.ExpectColumnValuesToBeBetween(column="time", max_value=latest),
            "row",
            "'time in the future: ' || time",
        ),
        Check(
            lambda: gxe.ExpectColumnValuesToBeBetween(column="n_impressions", min_value=1),
            "row",
            "'no impressions shown'",
        ),
        Check(
            lambda: gxe.ExpectColumnValuesToBeBetween(column="n_bad_tokens", max_value=0),
            "row",
            "n_bad_tokens || ' impression token(s) not like <item>-0 or <item>-1'",
        ),
    ]


def _patch_gx_for_duckdb() -> None:
    """Make GX keep one DuckDB connection for a whole validation (STACK_NOTES §2.3).

    GX closes pooled connections before fetching, and duckdb-engine results are empty after
    close (GX issues #10738, #11579); GX already persists connections for SQLite. Pinned GX
    version; ``tests/code/test_validation.py`` guards the behaviour.
    """
    from great_expectations.execution_engine import sqlalchemy_execution_engine as see

    class _DuckDialect(str):
        value = "duckdb"

    if not any(str(d) == "duckdb" for d in see._PERSISTED_CONNECTION_DIALECTS):
        see._PERSISTED_CONNECTION_DIALECTS = (*see._PERSISTED_CONNECTION_DIALECTS, _DuckDialect("duckdb"))


def run_suite(
    con: duckdb.DuckDBPyConnection, table: str, suite_name: str, checks: list[Check], max_quarantine_fraction: float
) -> ValidationReport:
    """Validate ``table`` on ``con`` with GX and fill table ``failures(record_no, reason)``.

    ``con`` must be a connection the caller owns (an in-memory staging database): GX gets a
    cursor of it through SQLAlchemy, so no data is copied.
    """
    import great_expectations as gx
    from duckdb_engine import ConnectionWrapper

    _patch_gx_for_duckdb()
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = gx.data_context.types.base.ProgressBarsConfig(globally=False)
    cursor = con.cursor()
    datasource = ctx.data_sources.add_sql(
        name="staging",
        connection_string="duckdb:///:memory:",
        create_temp_table=False,
        kwargs={"creator": lambda: ConnectionWrapper(cursor)},
    )
    batch_def = datasource.add_table_asset(name=table, table_name=table).add_batch_definition_whole_table("all")
    suite = gx.ExpectationSuite(name=suite_name)
    seen: dict[str, int] = {}
    for no, check in enumerate(checks, start=1):
        expectation = check.build()
        # GX silently keeps one copy of equal expectations, which would shift every result.
        ident = f"{expectation.expectation_type}:{json.dumps(expectation.configuration.kwargs, sort_keys=True, default=str)}"
        if ident in seen:
            raise ValueError(f"checks {seen[ident]} and {no} are the same expectation ({ident}); keep one")
        seen[ident] = no
        suite.add_expectation(expectation)
    suite = ctx.suites.add(suite)
    # GX reports results in its own order; map them back to our checks by expectation id.
    check_of = {exp.id: (no, check) for no, (exp, check) in enumerate(zip(suite.expectations, checks, strict=True), start=1)}
    definition = ctx.validation_definitions.add(gx.ValidationDefinition(name=suite_name, data=batch_def, suite=suite))
    try:
        result = definition.run(
            result_format={
                "result_format": "COMPLETE",
                "unexpected_index_column_names": ["record_no"],
                "return_unexpected_index_query": True,
                "partial_unexpected_count": 0,
            }
        )
    finally:
        # Close GX's persisted connection and engine now, while the cursor is still open,
        # not at garbage collection (where SQLAlchemy would roll back a closed connection).
        engine = datasource.get_execution_engine()
        persisted = getattr(engine, "_connection", None)
        if persisted is not None:
            persisted.close()
        engine.close()
        datasource.get_engine().dispose()
        cursor.close()

    con.execute("CREATE OR REPLACE TABLE failures (record_no BIGINT, reason VARCHAR)")
    rows = int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])
    outcomes: list[ExpectationOutcome] = []
    batch_errors: list[str] = []
    for res in result.results:
        cfg = res.expectation_config
        no, check = check_of[cfg.id]
        kwargs = {k: v for k, v in cfg.kwargs.items() if k != "batch_id"}
        info = res.result or {}
        outcome = ExpectationOutcome(
            expectation_no=no,
            expectation=cfg.type,
            column_name=kwargs.get("column"),
            severity=check.severity,
            success=bool(res.success),
            element_count=info.get("element_count"),
            unexpected_count=info.get("unexpected_count"),
            kwargs=json.loads(json.dumps(kwargs, default=str)),
        )
        outcomes.append(outcome)
        if res.success:
            continue
        if res.exception_info and res.exception_info.get("raised_exception"):
            batch_errors.append(f"{cfg.type} raised: {res.exception_info.get('exception_message')}")
            continue
        if check.severity == "row":
            query = str(info.get("unexpected_index_query") or "").strip().rstrip(";")
            if not query:
                batch_errors.append(f"{cfg.type}({outcome.column_name}) failed without a row query")
                continue
            con.execute(
                f"INSERT INTO failures SELECT t.record_no, {check.reason_sql} FROM {table} t "
                f"WHERE t.record_no IN (SELECT record_no FROM ({query}))"
            )
        elif check.severity == "error":
            batch_errors.append(f"{cfg.type}({outcome.column_name or ''}) failed: {json.dumps(info, default=str)[:300]}")
    outcomes.sort(key=lambda o: o.expectation_no)
    failed = int(con.execute("SELECT count(DISTINCT record_no) FROM failures").fetchall()[0][0])
    if rows and failed / rows > max_quarantine_fraction:
        batch_errors.append(
            f"{failed} of {rows} rows ({failed / rows:.0%}) failed validation, "
            f"over the {max_quarantine_fraction:.0%} limit"
        )
    return ValidationReport(suite_name, rows, failed, outcomes, batch_errors)


def validate_batch(con: duckdb.DuckDBPyConnection, batch_dir: Path, target: str, settings: Settings) -> ValidationReport:
    """Validate a staged batch folder; writes ``failures.parquet`` and ``validation.json``."""
    src = batch_dir / "normalized.parquet"
    con.execute(f"CREATE OR REPLACE TABLE batch AS SELECT * FROM read_parquet('{src}')")
    return validate_table(con, batch_dir, target, settings)


def validate_table(con: duckdb.DuckDBPyConnection, batch_dir: Path, target: str, settings: Settings) -> ValidationReport:
    """Validate table ``batch`` of ``con`` (a staged batch); fills table ``failures`` and writes
    ``failures.parquet`` and ``validation.json`` into ``batch_dir``."""
    if target == "support_messages":
        # Imported here: support_validation builds on this module's Check (an import cycle at the top).
        from warehouse.support_validation import support_checks

        checks = support_checks(settings)
    else:
        checks = article_checks(settings) if target == "articles" else behavior_checks(settings)
    report = run_suite(con, "batch", f"{target}.batch", checks, settings.max_quarantine_fraction)
    con.execute(f"COPY failures TO '{batch_dir / 'failures.parquet'}' (FORMAT parquet)")
    (batch_dir / "validation.json").write_text(report.to_json(), encoding="utf-8")
    return report
