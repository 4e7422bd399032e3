-- Public views for analysts: stable names, documented in README.md. Query these, not the tables.

CREATE OR REPLACE VIEW v_articles AS
SELECT article_id, source, source_id, title, body,
       concat_ws(' ', title, body) AS text,
       published_at, ingested_at, lang, tickers, url, batch_id
FROM articles;

CREATE OR REPLACE VIEW v_ingest_batches AS
SELECT batch_id, source, target_table, input, status, started_at, finished_at,
       rows_read, rows_inserted, rows_duplicate, rows_quarantined, labels_inserted,
       round(rows_quarantined / greatest(rows_read, 1), 4) AS quarantine_share,
       watermark, message
FROM ingest_batches;

CREATE OR REPLACE VIEW v_source_freshness AS
SELECT source,
       count(*) AS batches,
       sum(rows_read) AS rows_read,
       sum(rows_inserted) AS rows_inserted,
       sum(rows_quarantined) AS rows_quarantined,
       max(finished_at) AS last_batch_at,
       max(watermark) AS newest_item_at
FROM ingest_batches GROUP BY source;

CREATE OR REPLACE VIEW v_quarantine AS
SELECT q.batch_id, q.source, q.target_table, q.record_no, q.reasons,
       left(q.raw, 500) AS raw_preview, q.quarantined_at
FROM quarantine q;

CREATE OR REPLACE VIEW v_labelled_texts AS
SELECT l.dataset, l.task, l.label, l.label_set, l.split, a.article_id,
       concat_ws(' ', a.title, a.body) AS text
FROM labels l JOIN articles a ON a.article_id = l.item;

CREATE OR REPLACE VIEW v_impressions AS
SELECT b.source, b.impression_id, b.user_id, b.time, i.pos AS position,
       i.imp.item AS item, i.imp.clicked AS clicked
FROM behaviors b,
     LATERAL (SELECT unnest(b.impressions) AS imp, generate_subscripts(b.impressions, 1) AS pos) i;
