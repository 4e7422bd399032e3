-- Quarantine reasons carry the offending value ("published_at in the future: 2031-10-05 ..."), so a
-- GROUP BY reason shows one row per value. Each reason gets a stable code (what is wrong) and a
-- detail (which value), derived from the stored text: the reasons themselves keep their meaning, and
-- rows quarantined before this migration get codes too.
CREATE OR REPLACE MACRO quarantine_reason_code(r) AS CASE
    WHEN r LIKE 'text length % outside %' THEN 'text length outside limits'
    WHEN r LIKE 'title length % over %' THEN 'title too long'
    WHEN r LIKE 'published_at before %' THEN 'published_at too old'
    WHEN r LIKE 'created time before %' THEN 'created time too old'
    WHEN r LIKE 'unknown sentiment label: %' THEN 'unknown sentiment label'
    WHEN r LIKE 'unknown split: %' THEN 'unknown split'
    WHEN r LIKE 'unknown intent label: %' THEN 'unknown intent label'
    WHEN r LIKE 'channel longer than %' THEN 'channel too long'
    WHEN r LIKE 'text too long: %' THEN 'text too long'
    WHEN strpos(r, ': ') > 0 THEN left(r, strpos(r, ': ') - 1)
    ELSE r END;

CREATE OR REPLACE MACRO quarantine_reason_detail(r) AS CASE
    WHEN quarantine_reason_code(r) = r THEN NULL
    WHEN r LIKE 'text length % outside %' OR r LIKE 'title length % over %' THEN r
    WHEN r LIKE 'published_at before %' OR r LIKE 'created time before %'
         OR r LIKE 'channel longer than %' THEN r
    WHEN strpos(r, ': ') > 0 THEN substr(r, strpos(r, ': ') + 2)
    ELSE r END;

-- One row per (rejected record, reason): GROUP BY reason_code counts what went wrong.
CREATE OR REPLACE VIEW v_quarantine_reasons AS
SELECT q.batch_id, q.source, q.target_table, q.record_no,
       quarantine_reason_code(u.reason) AS reason_code, quarantine_reason_detail(u.reason) AS detail,
       u.reason, q.quarantined_at
FROM quarantine q, unnest(q.reasons) AS u(reason);

CREATE OR REPLACE VIEW v_quarantine AS
SELECT q.batch_id, q.source, q.target_table, q.record_no, q.reasons,
       left(q.raw, 500) AS raw_preview, q.quarantined_at,
       list_transform(q.reasons, lambda r: quarantine_reason_code(r)) AS reason_codes,
       list_transform(q.reasons, lambda r: quarantine_reason_detail(r)) AS details
FROM quarantine q;
