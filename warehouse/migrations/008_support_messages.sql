-- Support messages as a source (issue 16, item 1): a customer-service inbox beside the news.
--
-- Their own table, not a `kind` on `articles`: every consumer of `articles` is a news consumer.
-- The hourly scorer scores every article with the news heads, the monitor's sentiment windows,
-- the LM corpus for domain pretraining, v_articles / v_labelled_texts and the recommender all
-- read `articles` without a kind filter, so a kind column would quietly pour bank-support chat
-- into news sentiment alerts and recommendations unless every one of them learned to filter.
-- Support rows also have fields news has not (channel, customer id) and lack title/url/tickers.
-- What they share with news is kept shared: ingest_batches, quarantine (target_table =
-- 'support_messages'), validation_runs, ingested_files and `labels` (task 'intent', item =
-- message_id), so batch identity, quarantine reasons and gold labels work exactly as for news.

CREATE TABLE support_messages (
    message_id         VARCHAR PRIMARY KEY,        -- sha256(source, inbox id) or of (source, customer, time, text), 32 hex
    source             VARCHAR NOT NULL,           -- the inbox or dataset ('banking77')
    source_message_id  VARCHAR,                    -- the inbox's own id (BANKING77: '<file>-<row>')
    channel            VARCHAR,                    -- 'email' | 'chat' | 'app' | 'phone' ... (lower case), NULL when unknown
    customer_id        VARCHAR,
    created_at         TIMESTAMPTZ,                -- UTC; NULL when the source has no time (BANKING77)
    text               VARCHAR NOT NULL,
    lang               VARCHAR,
    meta               JSON,                       -- unmapped columns of the export
    batch_id           VARCHAR NOT NULL,
    ingested_at        TIMESTAMPTZ NOT NULL
);

-- Public views (stable names, README "Support messages").
CREATE OR REPLACE VIEW v_support_messages AS
SELECT message_id, source, source_message_id, channel, customer_id, created_at, ingested_at,
       text, lang, batch_id
FROM support_messages;

-- Gold intents with their texts: what the intent head trains on (labels.task = 'intent').
CREATE OR REPLACE VIEW v_labelled_messages AS
SELECT l.dataset, l.label AS intent, l.split, m.message_id, m.text
FROM labels l JOIN support_messages m ON m.message_id = l.item
WHERE l.task = 'intent';
