-- Relabel queue and human corrections (issue 17 item 2).
--
-- label_queue: what a person should label next, filled at the end of every monitor run from the
-- served model's scores (tasks/label_queue.py): uncertain predictions (top-2 margin), served
-- model vs TF-IDF baseline disagreement, articles behind alerts and from drifted sources;
-- near-duplicates collapsed onto one row (`duplicates`), at most label_queue_per_day rows per
-- UTC day and label_queue_max_source_share of them from one source. One row per (article, task)
-- ever, so a re-run queues nothing twice.
CREATE TABLE IF NOT EXISTS label_queue (
    article_id       VARCHAR NOT NULL,
    task             VARCHAR NOT NULL,             -- 'sentiment'
    queue_day        DATE NOT NULL,                -- UTC day it was queued (the cap counts per day)
    model_version    VARCHAR NOT NULL,             -- the model whose scores chose it
    source           VARCHAR,
    predicted_label  VARCHAR,                      -- the served label
    baseline_label   VARCHAR,                      -- the TF-IDF baseline's label (NULL: no baseline)
    reasons          VARCHAR[] NOT NULL,           -- 'uncertain' | 'disagreement' | 'alert' | 'drifted_source'
    priority         DOUBLE NOT NULL,              -- larger = label first (models/active.priority)
    margin           DOUBLE,                       -- 1 - (p_top1 - p_top2): 1 = a coin toss
    entropy          DOUBLE,                       -- normalised entropy of the served probabilities
    disagreement     DOUBLE,                       -- total variation served vs baseline (0..1)
    alert_ids        VARCHAR[],                    -- alerts whose evidence names it
    duplicates       VARCHAR[],                    -- near-duplicate article ids collapsed onto this row
    status           VARCHAR NOT NULL DEFAULT 'queued',   -- 'queued' | 'labelled'
    queued_at        TIMESTAMPTZ NOT NULL,
    labelled_at      TIMESTAMPTZ,                  -- when an imported label answered it
    PRIMARY KEY (article_id, task)
);

-- Who labelled and when (human labels: `newspulse labels import`; NULL for published datasets).
ALTER TABLE labels ADD COLUMN IF NOT EXISTS annotator VARCHAR;
ALTER TABLE labels ADD COLUMN IF NOT EXISTS labelled_at TIMESTAMPTZ;

-- Every label a newer one replaced (an import, or a dataset ingested again with a corrected label;
-- or an imported label that lost to a later one of the same item):
-- the replaced row as it was, and what replaced it.
CREATE TABLE IF NOT EXISTS label_history (
    dataset          VARCHAR NOT NULL,
    item             VARCHAR NOT NULL,
    task             VARCHAR NOT NULL,
    label            VARCHAR NOT NULL,
    split            VARCHAR,
    batch_id         VARCHAR NOT NULL,             -- the batch that had written it
    created_at       TIMESTAMPTZ NOT NULL,
    annotator        VARCHAR,
    labelled_at      TIMESTAMPTZ,
    replaced_by      VARCHAR NOT NULL,             -- the import batch whose label replaced it
    replaced_label   VARCHAR NOT NULL,             -- the label that replaced it
    replaced_at      TIMESTAMPTZ NOT NULL
);

-- One row per imported file (by content): re-importing the same file is a no-op.
CREATE TABLE IF NOT EXISTS label_imports (
    batch_id          VARCHAR PRIMARY KEY,
    input             VARCHAR NOT NULL,
    format            VARCHAR NOT NULL,            -- 'csv' | 'labelstudio'
    dataset           VARCHAR NOT NULL,
    rows_read         INTEGER NOT NULL,
    rows_unlabelled   INTEGER NOT NULL,            -- exported rows nobody labelled (skipped)
    rows_inserted     INTEGER NOT NULL,
    rows_replaced     INTEGER NOT NULL,            -- a different label was there: old one -> label_history
    rows_unchanged    INTEGER NOT NULL,
    rows_superseded   INTEGER NOT NULL,            -- older labels of an item within this file -> label_history
    rows_quarantined  INTEGER NOT NULL,
    imported_at       TIMESTAMPTZ NOT NULL
);

CREATE OR REPLACE VIEW v_label_queue AS
SELECT q.queue_day, q.article_id, q.task, q.status, round(q.priority, 3) AS priority, q.reasons, q.source,
       a.title, q.predicted_label, q.baseline_label, round(q.margin, 3) AS margin,
       round(q.disagreement, 3) AS disagreement, len(coalesce(q.duplicates, [])) AS n_duplicates,
       q.alert_ids, q.model_version, q.queued_at, q.labelled_at
FROM label_queue q LEFT JOIN articles a USING (article_id);
