-- Model registry: one row per trained model version; `stage` is the champion alias.

CREATE TABLE model_registry (
    model_version       VARCHAR PRIMARY KEY,
    created_at          TIMESTAMPTZ NOT NULL,
    backbone            VARCHAR NOT NULL,          -- preset name or checkpoint it started from
    pretrained_from     VARCHAR,                   -- domain-pretraining run it was initialised from
    heads               JSON NOT NULL,             -- labels of each head
    metrics             JSON NOT NULL,             -- GPT, baseline and ensemble figures per split
    val_score           DOUBLE NOT NULL,           -- the promotion metric (validation macro-F1)
    baseline_val_score  DOUBLE,
    served              VARCHAR NOT NULL,          -- 'gpt' | 'ensemble': what predict/score use
    val_split_id        VARCHAR NOT NULL,          -- fingerprint of the validation split
    data_snapshot       JSON,                      -- datasets, split sizes, label counts
    artifact_path       VARCHAR NOT NULL,          -- versioned directory (safetensors, card)
    stage               VARCHAR NOT NULL DEFAULT 'candidate',  -- 'candidate' | 'champion' | 'archived'
    flow_run_id         VARCHAR
);

CREATE TABLE model_promotions (
    event_at      TIMESTAMPTZ NOT NULL,
    action        VARCHAR NOT NULL,                -- 'promote' | 'rollback' | 'refuse'
    from_version  VARCHAR,
    to_version    VARCHAR,
    reason        VARCHAR
);

CREATE OR REPLACE VIEW v_models AS
SELECT model_version, created_at, stage, served, backbone, round(val_score, 4) AS val_score,
       round(baseline_val_score, 4) AS baseline_val_score, artifact_path
FROM model_registry;
