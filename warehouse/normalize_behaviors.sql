-- Turn `staged` click-log records (MIND layout, all text) into `normalized` behaviors rows.
CREATE OR REPLACE TEMP VIEW normalized AS
WITH base AS (
    SELECT record_no, raw, nullif(trim(error), '') AS error,
           coalesce(nullif(trim(source), ''), $default_source) AS source,
           nullif(trim(impression_id), '') AS impression_id,
           nullif(trim(user_id), '') AS user_id,
           nullif(trim(time), '') AS time_raw,
           coalesce(trim(history), '') AS history_raw,
           coalesce(trim(impressions), '') AS impressions_raw
    FROM staged
), parsed AS (
    SELECT *,
        coalesce(try_cast(time_raw AS TIMESTAMPTZ),
                 try_strptime(time_raw, '%m/%d/%Y %I:%M:%S %p')::TIMESTAMPTZ) AS time,
        list_filter(string_split(history_raw, ' '), lambda h: h <> '') AS history,
        list_filter(string_split(impressions_raw, ' '), lambda h: h <> '') AS tokens
    FROM base
)
SELECT record_no, raw, error, source, impression_id, user_id, time_raw, time,
       CASE WHEN time_raw IS NULL THEN 'missing' WHEN time IS NULL THEN 'unparseable' ELSE 'ok' END AS time_status,
       history,
       list_transform(tokens, lambda t: {'item': regexp_extract(t, '^(.+)-[01]$', 1),
                                         'clicked': t[-1:] = '1'}) AS impressions,
       len(tokens) AS n_impressions,
       len(list_filter(tokens, lambda t: NOT regexp_full_match(t, '.+-[01]'))) AS n_bad_tokens
FROM parsed;
