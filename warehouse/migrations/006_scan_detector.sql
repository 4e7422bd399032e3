-- The scan detector (issue 19): what it saw at every slot, which alerts another one explains,
-- and a score count that lets the monitor notice a clock that went back.

-- One row per (slot end, key) with articles: the most significant window ending there (every
-- length 15 min..1 day was tested), the key's expected negative share and the scan's p-value.
CREATE TABLE sentiment_scan (
    window_end               TIMESTAMPTZ NOT NULL,   -- end of the 15-minute slot: "now" for this test
    dimension                VARCHAR NOT NULL,
    key                      VARCHAR NOT NULL,
    window_start             TIMESTAMPTZ NOT NULL,   -- of the most significant window ending here (else the last hour)
    window_length            VARCHAR NOT NULL,       -- '15m' | '30m' | '1h' | '2h' | '4h' | '6h' | '8h' | '12h' | '1d'
    n_articles               INTEGER NOT NULL,
    n_negative               INTEGER NOT NULL,
    expected_negative_share  DOUBLE,                 -- own lagged history shrunk to the overall share
    baseline_articles        BIGINT,
    p_value                  DOUBLE,                 -- scan p-value (Bonferroni over lengths and tests); NULL: not close
    is_spike                 BOOLEAN NOT NULL,
    model_version            VARCHAR,
    computed_at              TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (window_end, dimension, key)
);

ALTER TABLE alerts ADD COLUMN explained_by VARCHAR;    -- 'topic:energy': a narrower alert that explains this one
ALTER TABLE alerts ADD COLUMN detector VARCHAR;        -- 'scan' | 'windows'
ALTER TABLE monitor_state ADD COLUMN n_scores BIGINT;  -- champion scores seen by the last run

CREATE OR REPLACE VIEW v_alerts AS
SELECT alert_id, status, severity, dimension, key, granularity, window_start, window_end, last_window_end,
       round(observed, 4) AS observed_negative_share, round(baseline, 4) AS baseline_negative_share,
       n_articles, n_negative, p_value, created_at, notified_at, delivery_channel, delivery_attempts,
       acked_at, resolved_at, note, evidence, model_version, explained_by, detector
FROM alerts;

CREATE OR REPLACE VIEW v_open_alerts AS
SELECT * FROM v_alerts WHERE status IN ('pending', 'delivering', 'open', 'acked');

CREATE OR REPLACE VIEW v_sentiment_scan AS
SELECT window_end, dimension, key, window_length, window_start, n_articles, n_negative,
       round(n_negative / n_articles, 4) AS negative_share, round(expected_negative_share, 4) AS expected_negative_share,
       p_value, is_spike
FROM sentiment_scan;
