-- Recommendation features (flows/recommend.py, nightly). A run works per click-log source: two
-- logs may reuse user ids (MIND's U… and the demo's U0001), so `source` is part of every key.

CREATE TABLE rec_runs (
    rec_run_id               VARCHAR PRIMARY KEY,
    source                   VARCHAR NOT NULL,       -- behaviors.source this run served
    model_version            VARCHAR NOT NULL,       -- backbone whose embeddings and scores fed the features
    click_model              VARCHAR,                -- click model folder (safetensors); NULL: no model yet
    flow_run_id              VARCHAR,
    as_of                    TIMESTAMPTZ NOT NULL,   -- recommendations are as seen at this time
    started_at               TIMESTAMPTZ NOT NULL,
    finished_at              TIMESTAMPTZ NOT NULL,
    users                    BIGINT NOT NULL,
    cold_start_users         BIGINT NOT NULL,
    candidates               BIGINT NOT NULL,
    rows_written             BIGINT NOT NULL,
    events_unmapped          BIGINT NOT NULL,        -- click-log item ids with no article (no text)
    items_without_embedding  BIGINT NOT NULL,        -- articles the backbone has not embedded yet
    metrics                  JSON                    -- click model training and validation figures
);

CREATE TABLE user_profiles (
    source              VARCHAR NOT NULL,
    user_id             VARCHAR NOT NULL,
    model_version       VARCHAR NOT NULL,
    n_clicks            INTEGER NOT NULL,            -- clicked items known at as_of (0: cold start)
    last_seen_at        TIMESTAMPTZ,
    profile             FLOAT[],                     -- recency-weighted mean of clicked items' embeddings
    topic_affinity      JSON,                        -- {topic: smoothed click share}
    sentiment_affinity  FLOAT,                       -- mean sentiment score of clicked items
    rec_run_id          VARCHAR NOT NULL,
    as_of               TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, user_id, model_version)
);

CREATE TABLE rec_features (
    source          VARCHAR NOT NULL,
    user_id         VARCHAR NOT NULL,
    article_id      VARCHAR NOT NULL,
    model_version   VARCHAR NOT NULL,
    score           FLOAT NOT NULL,                  -- what the rank orders by (click_prob, or the prior)
    rank            INTEGER NOT NULL,                -- 1 = best
    click_prob      FLOAT,                           -- click model probability; NULL for cold-start users
    similarity      FLOAT,                           -- cosine(user profile, item embedding)
    topic_affinity  FLOAT,                           -- the user's smoothed click share of the item's topic
    recency_h       FLOAT,                           -- hours from the item's time to as_of
    popularity      FLOAT,                           -- clicks on the item in the popularity window
    sentiment       FLOAT,                           -- the item's sentiment score in [-1, 1]
    cold_start      BOOLEAN NOT NULL,
    rec_run_id      VARCHAR NOT NULL,
    as_of           TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, user_id, article_id, model_version)
);

-- Top-k per user from the champion's latest run, with the article and the features behind it.
CREATE OR REPLACE VIEW v_user_recommendations AS
SELECT r.source, r.user_id, r.rank, r.article_id, a.title, a.source AS article_source,
       coalesce(a.published_at, a.ingested_at) AS published_at, s.topic_label AS topic,
       round(r.score, 5) AS score, round(r.click_prob, 5) AS click_prob, round(r.similarity, 4) AS similarity,
       round(r.topic_affinity, 4) AS topic_affinity, round(r.recency_h, 2) AS recency_h, r.popularity,
       round(r.sentiment, 4) AS sentiment, r.cold_start, r.model_version, r.rec_run_id, r.as_of
FROM rec_features r
JOIN model_registry m ON m.model_version = r.model_version AND m.stage = 'champion'
JOIN articles a ON a.article_id = r.article_id
LEFT JOIN scores s ON s.article_id = r.article_id AND s.model_version = r.model_version;

CREATE OR REPLACE VIEW v_user_profiles AS
SELECT p.source, p.user_id, p.n_clicks, p.n_clicks = 0 AS cold_start, p.last_seen_at, p.topic_affinity,
       round(p.sentiment_affinity, 4) AS sentiment_affinity, p.model_version, p.rec_run_id, p.as_of
FROM user_profiles p
JOIN model_registry m ON m.model_version = p.model_version AND m.stage = 'champion';

CREATE OR REPLACE VIEW v_rec_runs AS
SELECT rec_run_id, source, model_version, as_of, started_at, finished_at, users, cold_start_users,
       candidates, rows_written, events_unmapped, items_without_embedding, click_model, metrics
FROM rec_runs;
