-- Turn the `staged` table (records-frame columns, all text) into `normalized`: cleaned text, parsed
-- timestamps, stable ids, split label fields. Nothing is filtered here; validation decides.
-- Numeric character references (&#8217; &#x27;) decoded to their characters; invalid code
-- points (NUL, surrogates, out of range) are left as written.
CREATE OR REPLACE MACRO np_num_entities(x) AS CASE WHEN NOT contains(x, '&#') THEN x ELSE
    array_to_string(list_transform(string_split(x, '&#'), lambda p, i:
        CASE WHEN i = 1 THEN p
             WHEN regexp_matches(p, '^[0-9]{1,7};')
                  AND try_cast(regexp_extract(p, '^([0-9]+);', 1) AS INTEGER) BETWEEN 9 AND 1114111
                  AND NOT try_cast(regexp_extract(p, '^([0-9]+);', 1) AS INTEGER) BETWEEN 55296 AND 57343
               THEN chr(CAST(regexp_extract(p, '^([0-9]+);', 1) AS INTEGER)) || regexp_replace(p, '^[0-9]+;', '')
             WHEN regexp_matches(p, '^[xX][0-9a-fA-F]{1,6};')
                  AND try_cast('0x' || regexp_extract(p, '^[xX]([0-9a-fA-F]+);', 1) AS INTEGER) BETWEEN 9 AND 1114111
                  AND NOT try_cast('0x' || regexp_extract(p, '^[xX]([0-9a-fA-F]+);', 1) AS INTEGER) BETWEEN 55296 AND 57343
               THEN chr(CAST('0x' || regexp_extract(p, '^[xX]([0-9a-fA-F]+);', 1) AS INTEGER))
                    || regexp_replace(p, '^[xX][0-9a-fA-F]+;', '')
             ELSE '&#' || p END), '')
    END;

-- True when x certainly needs no cleaning: no control character (to_json escapes those, and '"'
-- and '\', so a text with quotes is not vouched for here), no DEL, markup, entity, double or
-- edge space. Plain byte scans, ~5x cheaper than the regex test in np_clean.
CREATE OR REPLACE MACRO np_plain(x) AS
    strlen(to_json(x)::VARCHAR) = strlen(x) + 2 AND NOT contains(x, '<') AND NOT contains(x, '&')
    AND NOT contains(x, '  ') AND NOT contains(x, chr(127)) AND NOT starts_with(x, ' ') AND NOT suffix(x, ' ');

CREATE OR REPLACE MACRO np_clean(x) AS
    CASE WHEN x IS NULL THEN NULL
         -- fast path: most texts need nothing (no markup, control characters or extra spaces)
         WHEN np_plain(x) THEN nullif(x, '')
         -- (one regex: DuckDB's trim() alone costs more than this whole test)
         WHEN NOT regexp_matches(x, '[<&\x00-\x1f\x7f]|\s\s|^\s|\s$') THEN nullif(x, '')
         -- trim spaces and newlines (the only whitespace left after the replacements below)
         ELSE nullif(trim(regexp_replace(regexp_replace(
                replace(replace(replace(replace(replace(replace(np_num_entities(
                    regexp_replace(
                        regexp_replace(x, '<(script|style)[^>]*>.*?</(script|style)>', ' ', 'gis'),
                        -- only things that look like tags or comments: 'EPS < 2 and > 1' keeps its words
                        '<!--.*?-->|</?[A-Za-z][A-Za-z0-9:-]*(\s[^<>]*)?/?>', ' ', 'gs')
                    ), '&nbsp;', ' '), '&apos;', ''''), '&lt;', '<'), '&gt;', '>'), '&quot;', '"'), '&amp;', '&'),
                -- keep paragraph breaks, drop other control characters, squeeze spaces
                '[ \t\r\f\v\x00-\x08\x0b\x0e-\x1f\x7f]+', ' ', 'g'), '\s*\n\s*(\n\s*)*', E'\n', 'g'), ' ' || chr(10)), '')
    END;

-- nullif(trim(x), ''), without trim's cost when both ends are printable ASCII (nothing to trim).
CREATE OR REPLACE MACRO np_trim(x) AS
    CASE WHEN ord(x) BETWEEN 33 AND 126 AND ord(x[-1]) BETWEEN 33 AND 126 THEN x ELSE nullif(trim(x), '') END;

CREATE OR REPLACE MACRO np_ts(p) AS coalesce(
    try_cast(p AS TIMESTAMPTZ),
    -- formats with an offset give TIMESTAMPTZ; naive ones are read as UTC (the session zone)
    try_strptime(p, ['%a, %d %b %Y %H:%M:%S %z', '%d %b %Y %H:%M:%S %z', '%Y-%m-%dT%H:%M:%S%z',
                     '%Y-%m-%dT%H:%M:%S.%f%z']),
    try_strptime(p, ['%a, %d %b %Y %H:%M:%S GMT', '%a, %d %b %Y %H:%M:%S UTC', '%m/%d/%Y %I:%M:%S %p',
                     '%d-%m-%Y', '%d/%m/%Y', '%d-%b-%y', '%d %B %Y', '%B %d, %Y'])::TIMESTAMPTZ,
    CASE WHEN regexp_full_match(p, '\d{9,10}') THEN to_timestamp(try_cast(p AS BIGINT))
         WHEN regexp_full_match(p, '\d{12,13}') THEN to_timestamp(try_cast(p AS BIGINT) / 1000) END
);

CREATE OR REPLACE TEMP VIEW normalized AS
WITH base AS (
    SELECT
        record_no,
        raw,
        np_trim(error) AS error,
        coalesce(np_trim(source), $default_source) AS source,
        np_trim(source_id) AS source_id,
        np_clean(title) AS title,
        np_clean(body) AS body,
        np_trim(url) AS url,
        np_trim(published_at) AS published_raw,
        lower(nullif(trim(lang), '')) AS lang,
        np_trim(tickers) AS tickers_raw,
        CASE WHEN json_valid(meta) THEN meta::JSON END AS meta,
        nullif(trim(dataset), '') AS dataset,
        lower(nullif(trim(task), '')) AS task,
        nullif(trim(label), '') AS label_raw,
        lower(nullif(trim(split), '')) AS split
    FROM staged
), typed AS (
    SELECT *,
        np_ts(published_raw) AS published_at,
        string_split(lower(label_raw), '|') AS label_parts
    FROM base
)
SELECT
    record_no, raw, error, source, source_id,
    -- The text (title, space, body; cleaned, so never '') is built only for rows without a
    -- source id; its length is the parts' lengths.
    left(sha256(source || chr(31) || CASE WHEN source_id IS NOT NULL THEN source_id
                                          ELSE '#text:' || lower(concat_ws(' ', title, body)) END), 32) AS article_id,
    title, body, url,
    coalesce(length(title), 0) + coalesce(length(body), 0)
        + CASE WHEN title IS NOT NULL AND body IS NOT NULL THEN 1 ELSE 0 END AS text_length,
    coalesce(length(title), 0) AS title_length,
    published_raw, published_at,
    CASE WHEN published_raw IS NULL THEN 'missing'
         WHEN published_at IS NULL THEN 'unparseable'
         ELSE 'ok' END AS published_status,
    lang,
    CASE WHEN tickers_raw IS NULL THEN NULL
         -- the usual shapes, [] and one plain ticker, without the list functions (same result)
         WHEN tickers_raw = '[]' THEN []::VARCHAR[]
         WHEN regexp_full_match(tickers_raw, '\["[A-Z0-9.]+"\]') THEN [tickers_raw[3:-3]]
         ELSE list_sort(list_distinct(list_filter(
                list_transform(regexp_split_to_array(tickers_raw, '[\[\]"'',;\s]+'), lambda t: upper(trim(t))),
                lambda t: t <> ''))) END AS tickers,
    meta,
    CASE WHEN label_raw IS NOT NULL THEN coalesce(dataset, source) END AS dataset,
    CASE WHEN label_raw IS NOT NULL THEN coalesce(task, 'missing') END AS task,
    trim(label_parts[1]) AS label,
    CASE WHEN len(label_parts) > 1 THEN list_transform(label_parts, lambda l: trim(l)) END AS label_set,
    CASE WHEN task = 'sentiment' THEN trim(label_parts[1]) END AS sentiment_label,
    CASE WHEN task = 'topic' THEN trim(label_parts[1]) END AS topic_label,
    split
FROM typed;
