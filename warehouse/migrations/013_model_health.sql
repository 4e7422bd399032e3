-- Label-free model health (issue 17 item 1): per UTC day, overall and per source, how the served
-- model's predictions compare with its reference (models/health.py). A drifting day opens a
-- 'drift' alert (metric 'model_drift', event newspulse.model.drift) through the alerts table.
CREATE TABLE IF NOT EXISTS model_health (
    window_start          TIMESTAMPTZ NOT NULL,    -- the UTC day
    window_end            TIMESTAMPTZ NOT NULL,
    dimension             VARCHAR NOT NULL,        -- 'overall' | 'source'
    key                   VARCHAR NOT NULL,        -- '*' for overall
    model_version         VARCHAR NOT NULL,
    n_articles            INTEGER NOT NULL,
    label_psi             DOUBLE,                  -- PSI of the predicted sentiment mix
    label_p               DOUBLE,                  -- chi-square goodness of fit of that mix
    mean_confidence       DOUBLE,
    ref_mean_confidence   DOUBLE,
    low_conf_share        DOUBLE,                  -- top probability under drift_low_confidence
    ref_low_conf_share    DOUBLE,
    embedding_auc         DOUBLE,                  -- domain classifier reference vs window (0.5: alike)
    embedding_p           DOUBLE,
    novel_share           DOUBLE,                  -- embeddings farther from the reference than 99% of its own
    ref_novel_share       DOUBLE,
    length_psi            DOUBLE,                  -- PSI of the token count over the reference deciles
    mean_tokens           DOUBLE,
    ref_mean_tokens       DOUBLE,
    unknown_rate          DOUBLE,                  -- share of words outside the reference vocabulary
    ref_unknown_rate      DOUBLE,
    disagreement          DOUBLE,                  -- served label vs the TF-IDF baseline's
    ref_disagreement      DOUBLE,
    checks_fired          VARCHAR[] NOT NULL,
    drifting              BOOLEAN NOT NULL,
    reference             VARCHAR NOT NULL,        -- where the reference came from
    note                  VARCHAR,
    computed_at           TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (model_version, window_start, dimension, key)
);

-- Per article, what the checks need beyond its score, computed once (a run re-reads the trailing
-- reference days every 15 minutes): the TF-IDF baseline's label and the unknown-word share.
CREATE TABLE IF NOT EXISTS health_items (
    article_id      VARCHAR NOT NULL,
    model_version   VARCHAR NOT NULL,
    baseline_label  VARCHAR,                       -- NULL: the version has no TF-IDF baseline
    unknown_rate    FLOAT,                         -- NULL: no words, or no vocabulary
    PRIMARY KEY (article_id, model_version)
);

CREATE OR REPLACE VIEW v_model_health AS
SELECT window_start AS day, dimension, key, model_version, n_articles, drifting, checks_fired,
       round(label_psi, 3) AS label_psi, round(mean_confidence, 3) AS mean_confidence,
       round(ref_mean_confidence, 3) AS ref_mean_confidence, round(low_conf_share, 3) AS low_conf_share,
       round(ref_low_conf_share, 3) AS ref_low_conf_share, round(embedding_auc, 3) AS embedding_auc,
       round(novel_share, 3) AS novel_share,
       round(length_psi, 3) AS length_psi, round(mean_tokens, 1) AS mean_tokens,
       round(unknown_rate, 3) AS unknown_rate, round(ref_unknown_rate, 3) AS ref_unknown_rate,
       round(disagreement, 3) AS disagreement, round(ref_disagreement, 3) AS ref_disagreement,
       reference, note, computed_at
FROM model_health;
