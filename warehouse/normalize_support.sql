-- Turn the `staged` table (support-frame columns, all text) into `normalized` support messages:
-- cleaned text, parsed created time, a stable message id. Nothing is filtered; validation decides.
-- The np_clean / np_ts macros come from normalize.sql (staging.py runs its macro part first).
CREATE OR REPLACE TEMP VIEW normalized AS
WITH base AS (
    SELECT
        record_no,
        raw,
        nullif(trim(error), '') AS error,
        coalesce(nullif(trim(source), ''), $default_source) AS source,
        nullif(trim(message_id), '') AS source_message_id,
        lower(nullif(trim(channel), '')) AS channel,
        nullif(trim(customer_id), '') AS customer_id,
        nullif(trim(created_at), '') AS created_raw,
        np_clean(text) AS text,
        lower(nullif(trim(lang), '')) AS lang,
        CASE WHEN json_valid(meta) THEN meta::JSON END AS meta,
        nullif(trim(dataset), '') AS dataset,
        -- Intent names are compared exactly: BANKING77 spells some with capitals or a '?'.
        nullif(trim(label), '') AS label,
        lower(nullif(trim(split), '')) AS split
    FROM staged
), typed AS (
    SELECT *, np_ts(created_raw) AS created_at FROM base
)
SELECT
    record_no, raw, error, source, source_message_id,
    -- The inbox's own id when it has one; else the content (customer, time, text), so the same
    -- export read twice gives the same ids and the commit counts them as duplicates.
    left(sha256(source || chr(31) || coalesce(source_message_id,
        '#msg:' || coalesce(customer_id, '') || chr(31) || coalesce(created_raw, '') || chr(31)
        || lower(coalesce(text, '')))), 32) AS message_id,
    channel, customer_id, created_raw, created_at,
    CASE WHEN created_raw IS NULL THEN 'missing'
         WHEN created_at IS NULL THEN 'unparseable'
         ELSE 'ok' END AS created_status,
    text,
    coalesce(length(text), 0) AS text_length,
    lang, meta,
    CASE WHEN label IS NOT NULL THEN coalesce(dataset, source) END AS dataset,
    label,
    split
FROM typed;
