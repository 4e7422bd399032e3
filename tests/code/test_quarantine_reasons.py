"""Quarantine reasons group by a stable code; the offending value is a separate detail (migration 012)."""

from __future__ import annotations

from warehouse.connection import connect
from warehouse.migrate import migrate
from warehouse.query import run_readonly

REASONS = [
    (["published_at in the future: 2031-10-05 10:00:00+00", "text length 9 outside [20, 5000]"]),
    (["published_at in the future: 2032-01-01 08:00:00+00", "missing source"]),
    (["published_at before 1990-01-01: 1970-01-01 00:00:00+00", "unparseable published_at: yesterday"]),
    (["unknown sentiment label: bullish (allowed: negative, neutral, positive)", "empty text: no title and no body"]),
]


def test_reason_codes_group_and_details_keep_the_value(settings) -> None:
    with connect(settings) as con:
        migrate(con)
        for i, reasons in enumerate(REASONS):
            con.execute("INSERT INTO quarantine VALUES ('b1', ?, 'wire', 'articles', 'raw', ?, now())", [i, reasons])
    grouped = run_readonly(settings, "SELECT reason_code, count(*) AS n FROM v_quarantine_reasons GROUP BY 1 "
                                     "ORDER BY 1")  # the sandboxed analyst connection sees the macros
    assert grouped.rows == [("empty text", 1), ("missing source", 1), ("published_at in the future", 2),
                            ("published_at too old", 1), ("text length outside limits", 1),
                            ("unknown sentiment label", 1), ("unparseable published_at", 1)]
    details = dict(run_readonly(settings, "SELECT reason, detail FROM v_quarantine_reasons").rows)
    assert details["published_at in the future: 2031-10-05 10:00:00+00"] == "2031-10-05 10:00:00+00"
    assert details["unparseable published_at: yesterday"] == "yesterday"
    assert details["missing source"] is None
    row = run_readonly(settings, "SELECT reasons, reason_codes, details FROM v_quarantine WHERE record_no = 0").rows[0]
    assert row[0] == REASONS[0]  # the stored reasons are unchanged
    assert row[1] == ["published_at in the future", "text length outside limits"]
    assert row[2] == ["2031-10-05 10:00:00+00", "text length 9 outside [20, 5000]"]
