-- Tables that ingestion writes. Names in DESIGN.md are a contract; keep them stable.

CREATE TABLE ingest_batches (
    batch_id          VARCHAR PRIMARY KEY,
    source            VARCHAR NOT NULL,
    target_table      VARCHAR NOT NULL,            -- 'articles' or 'behaviors'
    input             VARCHAR,                     -- file path, URL or dataset file
    flow_run_id       VARCHAR,
    started_at        TIMESTAMPTZ NOT NULL,
    finished_at       TIMESTAMPTZ NOT NULL,
    rows_read         BIGINT NOT NULL,
    rows_inserted     BIGINT NOT NULL,
    rows_duplicate    BIGINT NOT NULL,
    rows_quarantined  BIGINT NOT NULL,
    labels_inserted   BIGINT NOT NULL DEFAULT 0,
    watermark         TIMESTAMPTZ,                 -- newest published_at / event time in the batch
    status            VARCHAR NOT NULL,            -- 'succeeded' | 'failed_validation'
    message           VARCHAR,
    CHECK (rows_read = rows_inserted + rows_duplicate + rows_quarantined)
);

CREATE TABLE articles (
    -- No PRIMARY KEY: the ART index costs ~1.5 s per million inserted rows. Uniqueness is kept by
    -- the commit (anti-join under the single-writer lock, one transaction) and checked by tests.
    article_id    VARCHAR NOT NULL,                -- sha256(source, source_id) or sha256(source, normalized text), 32 hex
    source        VARCHAR NOT NULL,
    source_id     VARCHAR,
    url           VARCHAR,
    title         VARCHAR,
    body          VARCHAR,
    published_at  TIMESTAMPTZ,                     -- UTC; NULL when the source has no date
    ingested_at   TIMESTAMPTZ NOT NULL,
    lang          VARCHAR,
    tickers       VARCHAR[],
    meta          JSON,                            -- source-specific extras (categories, notes)
    batch_id      VARCHAR NOT NULL
);

CREATE TABLE quarantine (
    batch_id        VARCHAR NOT NULL,
    record_no       BIGINT NOT NULL,
    source          VARCHAR,
    target_table    VARCHAR NOT NULL,
    raw             VARCHAR,                       -- the record as received
    reasons         VARCHAR[] NOT NULL,
    quarantined_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (batch_id, record_no)
);

CREATE TABLE validation_runs (
    batch_id          VARCHAR NOT NULL,
    suite             VARCHAR NOT NULL,
    expectation_no    INTEGER NOT NULL,
    expectation       VARCHAR NOT NULL,            -- GX expectation type
    column_name       VARCHAR,
    severity          VARCHAR NOT NULL,            -- 'row' (quarantine) | 'error' | 'warning'
    success           BOOLEAN NOT NULL,
    element_count     BIGINT,
    unexpected_count  BIGINT,
    kwargs            JSON,
    validated_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (batch_id, suite, expectation_no)
);

CREATE TABLE labels (
    dataset     VARCHAR NOT NULL,
    item        VARCHAR NOT NULL,                  -- article_id
    task        VARCHAR NOT NULL,                  -- 'sentiment' | 'topic'
    label       VARCHAR NOT NULL,                  -- primary label
    label_set   VARCHAR[],                         -- every label, for multi-label sources (Reuters)
    split       VARCHAR,                           -- 'train' | 'validation' | 'test' | 'unused' | NULL
    batch_id    VARCHAR NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (dataset, item, task)
);

CREATE TABLE behaviors (
    source         VARCHAR NOT NULL,
    impression_id  VARCHAR NOT NULL,
    user_id        VARCHAR NOT NULL,
    time           TIMESTAMPTZ NOT NULL,
    history        VARCHAR[] NOT NULL,             -- source ids clicked before, oldest first
    impressions    STRUCT(item VARCHAR, clicked BOOLEAN)[] NOT NULL,
    batch_id       VARCHAR NOT NULL,
    ingested_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, impression_id)
);

-- Incremental pulls: a file is read again only when its fingerprint changes.
CREATE TABLE ingested_files (
    source       VARCHAR NOT NULL,
    path         VARCHAR NOT NULL,
    size         BIGINT NOT NULL,
    mtime_ns     BIGINT NOT NULL,
    batch_id     VARCHAR NOT NULL,
    ingested_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, path, size, mtime_ns)
);

-- Per-source watermark and HTTP validators for feeds.
CREATE TABLE source_state (
    source         VARCHAR PRIMARY KEY,
    watermark      TIMESTAMPTZ,
    etag           VARCHAR,
    last_modified  VARCHAR,
    updated_at     TIMESTAMPTZ NOT NULL
);
