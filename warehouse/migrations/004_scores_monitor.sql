-- Scoring, sentiment windows and alerts (issue 4). Names in DESIGN.md are a contract.

-- One row per (article, model version): every head from one forward pass.
CREATE TABLE scores (
    article_id            VARCHAR NOT NULL,
    model_version         VARCHAR NOT NULL,
    sentiment_label       VARCHAR NOT NULL,        -- argmax of the served sentiment head
    sentiment_p_negative  FLOAT NOT NULL,
    sentiment_p_neutral   FLOAT NOT NULL,
    sentiment_p_positive  FLOAT NOT NULL,
    sentiment_score       FLOAT NOT NULL,          -- p_positive - p_negative, in [-1, 1]
    topic_label           VARCHAR,                 -- NULL when the model has no topic head
    topic_confidence      FLOAT,
    topic_probs           FLOAT[],                 -- in the order of model_registry.heads.topic
    n_tokens              INTEGER NOT NULL,
    truncated             BOOLEAN NOT NULL,
    scored_at             TIMESTAMPTZ NOT NULL,        -- when the shard was scored
    committed_at          TIMESTAMPTZ NOT NULL DEFAULT now(),  -- when the row landed (monitor watermark)
    score_run_id          VARCHAR NOT NULL,
    flow_run_id           VARCHAR,
    PRIMARY KEY (article_id, model_version)
);

CREATE TABLE embeddings (
    article_id     VARCHAR NOT NULL,
    model_version  VARCHAR NOT NULL,
    embedding      FLOAT[] NOT NULL,               -- pooled last hidden state, length n_embd
    PRIMARY KEY (article_id, model_version)
);

-- One row per score flow run: what was selected, scored and committed, and how fast.
CREATE TABLE score_runs (
    score_run_id   VARCHAR PRIMARY KEY,
    model_version  VARCHAR NOT NULL,
    flow_run_id    VARCHAR,
    started_at     TIMESTAMPTZ NOT NULL,
    finished_at    TIMESTAMPTZ NOT NULL,
    n_shards       INTEGER NOT NULL,
    rows_selected  BIGINT NOT NULL,
    rows_inserted  BIGINT NOT NULL,
    rows_duplicate BIGINT NOT NULL,
    score_seconds  DOUBLE,                         -- model time summed over shards
    docs_per_s     DOUBLE
);

-- Aggregates per window, granularity ('15m' | '1h' | '4h' | '1d'), dimension and key, with the key's own
-- trailing baseline and the spike test result (NULL where the window was not testable).
CREATE TABLE sentiment_windows (
    window_start               TIMESTAMPTZ NOT NULL,
    granularity                VARCHAR NOT NULL,
    dimension                  VARCHAR NOT NULL,   -- 'overall' | 'topic' | 'ticker' | 'source'
    key                        VARCHAR NOT NULL,   -- '*' for overall
    window_end                 TIMESTAMPTZ NOT NULL,
    n_articles                 INTEGER NOT NULL,
    n_negative                 INTEGER NOT NULL,
    n_positive                 INTEGER NOT NULL,
    negative_share             DOUBLE NOT NULL,
    mean_score                 DOUBLE NOT NULL,
    baseline_articles          BIGINT,             -- articles of this key in the trailing baseline
    baseline_negative_share    DOUBLE,
    p_value                    DOUBLE,             -- beta-binomial upper tail of n_negative
    surprise                   DOUBLE,             -- -log10(p_value)
    is_spike                   BOOLEAN NOT NULL DEFAULT false,
    model_version              VARCHAR,
    computed_at                TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (window_start, granularity, dimension, key)
);

-- One row per episode: created 'pending' ('delivering' while a run sends it), 'open' once
-- delivered, then 'acked' / 'resolved'. Alerts about windows older than the alert age limit are
-- stored 'open' with delivery_channel 'not sent (stale)'.
CREATE TABLE alerts (
    alert_id           VARCHAR PRIMARY KEY,
    dedup_key          VARCHAR NOT NULL UNIQUE,    -- dimension:key:first window start
    dimension          VARCHAR NOT NULL,
    key                VARCHAR NOT NULL,
    granularity        VARCHAR NOT NULL,           -- of the first significant window
    window_start       TIMESTAMPTZ NOT NULL,
    window_end         TIMESTAMPTZ NOT NULL,
    last_window_end    TIMESTAMPTZ NOT NULL,       -- end of the latest significant window (cooldown anchor)
    metric             VARCHAR NOT NULL,           -- 'negative_share'
    observed           DOUBLE NOT NULL,
    baseline           DOUBLE NOT NULL,
    n_articles         INTEGER NOT NULL,
    n_negative         INTEGER NOT NULL,
    p_value            DOUBLE NOT NULL,
    severity           VARCHAR NOT NULL,           -- 'medium' | 'high' | 'critical'
    evidence           JSON,                       -- the most negative contributing headlines
    status             VARCHAR NOT NULL,           -- 'pending' | 'delivering' | 'open' | 'acked' | 'resolved'
    created_at         TIMESTAMPTZ NOT NULL,
    claimed_by         VARCHAR,                    -- the run delivering it (status 'delivering')
    claimed_at         TIMESTAMPTZ,
    event_id           VARCHAR,                    -- the Prefect event emitted for it
    notified_at        TIMESTAMPTZ,
    delivery_channel   VARCHAR,                    -- the notification block it went through
    delivery_attempts  INTEGER NOT NULL DEFAULT 0,
    last_error         VARCHAR,
    acked_at           TIMESTAMPTZ,
    resolved_at        TIMESTAMPTZ,
    note               VARCHAR,
    model_version      VARCHAR,
    flow_run_id        VARCHAR
);

-- What the monitor has processed: the scores watermark per model version.
CREATE TABLE monitor_state (
    model_version  VARCHAR PRIMARY KEY,
    committed_until  TIMESTAMPTZ,                  -- max scores.committed_at already windowed
    updated_at     TIMESTAMPTZ NOT NULL
);

-- Public views -------------------------------------------------------------------------------

-- The current champion's score of every article it has scored.
CREATE OR REPLACE VIEW v_scores AS
SELECT a.article_id, coalesce(a.published_at, a.ingested_at) AS published_at, a.source, a.title,
       a.tickers, s.sentiment_label, s.sentiment_score, s.sentiment_p_negative, s.sentiment_p_neutral,
       s.sentiment_p_positive, s.topic_label, s.topic_confidence, s.truncated, s.model_version, s.scored_at
FROM scores s
JOIN model_registry m ON m.model_version = s.model_version AND m.stage = 'champion'
JOIN articles a ON a.article_id = s.article_id;

-- Every window of every granularity; the per-granularity views below are what analysts query.
CREATE OR REPLACE VIEW v_sentiment_windows AS
SELECT granularity, window_start, window_end, dimension, key, n_articles, n_negative, n_positive,
       round(negative_share, 4) AS negative_share, round(mean_score, 4) AS mean_score,
       round(baseline_negative_share, 4) AS baseline_negative_share, p_value, is_spike
FROM sentiment_windows;

CREATE OR REPLACE VIEW v_sentiment_15m AS
SELECT * EXCLUDE (granularity) FROM v_sentiment_windows WHERE granularity = '15m';
CREATE OR REPLACE VIEW v_sentiment_hourly AS
SELECT * EXCLUDE (granularity) FROM v_sentiment_windows WHERE granularity = '1h';
CREATE OR REPLACE VIEW v_sentiment_4h AS
SELECT * EXCLUDE (granularity) FROM v_sentiment_windows WHERE granularity = '4h';
CREATE OR REPLACE VIEW v_sentiment_daily AS
SELECT * EXCLUDE (granularity) FROM v_sentiment_windows WHERE granularity = '1d';

CREATE OR REPLACE VIEW v_alerts AS
SELECT alert_id, status, severity, dimension, key, granularity, window_start, window_end, last_window_end,
       round(observed, 4) AS observed_negative_share, round(baseline, 4) AS baseline_negative_share,
       n_articles, n_negative, p_value, created_at, notified_at, delivery_channel, delivery_attempts,
       acked_at, resolved_at, note, evidence, model_version
FROM alerts;

CREATE OR REPLACE VIEW v_open_alerts AS
SELECT * FROM v_alerts WHERE status IN ('pending', 'delivering', 'open', 'acked');

CREATE OR REPLACE VIEW v_score_runs AS
SELECT score_run_id, model_version, started_at, finished_at, n_shards, rows_selected, rows_inserted,
       rows_duplicate, round(docs_per_s, 1) AS docs_per_s
FROM score_runs;
