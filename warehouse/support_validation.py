"""The Great Expectations suite for staged support messages (``support_messages.batch``).

Same machinery and severities as the news suite (:mod:`warehouse.validation`): ``row`` checks
quarantine the failing messages with a reason, ``error`` checks fail the batch, ``warning``
checks are recorded only. A support message is quarantined when its text is empty or longer
than ``Settings.support_max_text_chars``, its created time cannot be parsed, lies in the future
(beyond ``future_tolerance_s``) or before ``min_published_at``, or its gold intent is not one of
BANKING77's 77 intents (:data:`core.intents.BANKING77_INTENTS`). A missing created time is
allowed (BANKING77 has none): the message still carries a useful intent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.settings import Settings
from core.intents import BANKING77_INTENTS
from warehouse.validation import ALLOWED_SPLITS, Check

SUPPORT_NORMALIZED_COLUMNS = [
    "record_no", "raw", "error", "source", "source_message_id", "message_id", "channel", "customer_id",
    "created_raw", "created_at", "created_status", "text", "text_length", "lang", "meta", "dataset",
    "label", "split",
]
MAX_CHANNEL_CHARS = 64


def support_checks(settings: Settings, now: datetime | None = None) -> list[Check]:
    """The ``support_messages`` suite: schema, text, created time, intent label, ids."""
    import great_expectations.expectations as gxe

    now = now or datetime.now(UTC)
    latest = now + timedelta(seconds=settings.future_tolerance_s)
    earliest = datetime.fromisoformat(settings.min_published_at).replace(tzinfo=UTC)
    hi = settings.support_max_text_chars
    intents = list(BANKING77_INTENTS)
    return [
        Check(lambda: gxe.ExpectTableColumnsToMatchSet(column_set=SUPPORT_NORMALIZED_COLUMNS, exact_match=True),
              "error"),
        Check(lambda: gxe.ExpectColumnValuesToBeNull(column="error"), "row", "error"),
        Check(lambda: gxe.ExpectColumnValuesToNotBeNull(column="source"), "row", "'missing source'"),
        Check(
            lambda: gxe.ExpectColumnValuesToBeBetween(column="text_length", min_value=1, max_value=hi),
            "row",
            f"CASE WHEN text_length = 0 THEN 'empty text' "
            f"ELSE 'text too long: ' || text_length || ' characters (max {hi})' END",
        ),
        Check(
            lambda: gxe.ExpectColumnValuesToBeInSet(column="created_status", value_set=["ok", "missing"]),
            "row",
            "'unparseable created time: ' || left(created_raw, 80)",
        ),
        Check(
            lambda: gxe.ExpectColumnValuesToBeBetween(column="created_at", min_value=earliest, max_value=latest),
            "row",
            f"CASE WHEN created_at > TIMESTAMPTZ '{latest.isoformat()}' "
            f"THEN 'created time in the future: ' || created_at "
            f"ELSE 'created time before {settings.min_published_at}: ' || created_at END",
        ),
        Check(
            lambda: gxe.ExpectColumnValuesToBeInSet(column="label", value_set=intents),
            "row",
            "'unknown intent label: ' || left(label, 80) || ' (not one of the 77 BANKING77 intents)'",
        ),
        Check(
            lambda: gxe.ExpectColumnValuesToBeInSet(column="split", value_set=ALLOWED_SPLITS),
            "row",
            f"'unknown split: ' || split || ' (allowed: {', '.join(ALLOWED_SPLITS)})'",
        ),
        Check(
            lambda: gxe.ExpectColumnValueLengthsToBeBetween(column="channel", min_value=1, max_value=MAX_CHANNEL_CHARS),
            "row",
            f"'channel longer than {MAX_CHANNEL_CHARS} characters: ' || left(channel, 80)",
        ),
        Check(lambda: gxe.ExpectColumnValuesToNotBeNull(column="message_id"), "error"),
        Check(lambda: gxe.ExpectColumnValueLengthsToEqual(column="message_id", value=32), "error"),
        # Repeats inside a batch: the commit keeps the first, counts the rest as duplicates.
        Check(lambda: gxe.ExpectColumnValuesToBeUnique(column="message_id"), "warning"),
    ]
