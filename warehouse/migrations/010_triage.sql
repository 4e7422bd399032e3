-- Support triage (issue 16, items 3 and 4): per message, the intent model's score, its route
-- (queue, priority, urgent) and decision (auto-answer draft or a person), and the reply drafts.
--
-- Written only by the triage flow (flows/triage.py), in bulk under the writer slot, one
-- transaction per run, anti-joined on (message_id, model_version): a re-run after a crash
-- inserts the missing rows and nothing twice. `model_version` is the intent model's version
-- (the `intent-champion` alias when the run planned); a new intent model triages the messages
-- again beside the old rows, and the views below show the intent-champion's row of each message
-- (its latest row where the champion has not triaged it yet).
-- Column names read by the intent monitor: message_id, model_version, intent_label,
-- intent_confidence, sentiment_label, urgent, decision, scored_at, committed_at.

CREATE TABLE support_scores (
    message_id              VARCHAR NOT NULL,
    model_version           VARCHAR NOT NULL,     -- the intent model
    intent_label            VARCHAR,              -- NULL: not scored (empty text, scoring failed)
    intent_confidence       FLOAT,                -- the top intent's probability
    intent_top3             JSON,                 -- [{"intent": ..., "p": ...}, ...]
    sentiment_label         VARCHAR,              -- NULL when no sentiment model serves
    sentiment_score         FLOAT,                -- p(positive) - p(negative), in [-1, 1]
    sentiment_model_version VARCHAR,
    queue                   VARCHAR NOT NULL,
    priority                INTEGER NOT NULL,     -- 1 = handle first
    urgent                  BOOLEAN NOT NULL,
    decision                VARCHAR NOT NULL,     -- 'auto_answer' | 'human'
    reasons                 VARCHAR,              -- '; '-joined reasons of the decision
    lang                    VARCHAR,              -- as ingested; else 'en', or 'und' when the text looks non-English
    scored_at               TIMESTAMPTZ NOT NULL,
    committed_at            TIMESTAMPTZ DEFAULT now(),
    triage_run_id           VARCHAR,
    flow_run_id             VARCHAR,
    PRIMARY KEY (message_id, model_version)
);

-- Drafts for auto-answered messages: the approved answer (template id + version) as rendered,
-- or its rewrite by the instruct model when that kept every fact. Never sent by this project.
CREATE TABLE reply_drafts (
    message_id        VARCHAR NOT NULL,
    model_version     VARCHAR NOT NULL,
    template_id       VARCHAR NOT NULL,
    template_version  INTEGER NOT NULL,
    draft_text        VARCHAR NOT NULL,
    rewritten         BOOLEAN NOT NULL DEFAULT false,
    rewrite_rejected  VARCHAR,                    -- why a rewrite was refused (template text kept)
    facts             JSON,                       -- the template facts the draft carries
    status            VARCHAR NOT NULL DEFAULT 'draft',
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    triage_run_id     VARCHAR,
    PRIMARY KEY (message_id, model_version)
);

-- Each message's current triage: the intent-champion's row, else the latest committed one.
CREATE OR REPLACE VIEW v_support_triage AS
SELECT * EXCLUDE (rn) FROM (
    SELECT s.*, row_number() OVER (
               PARTITION BY s.message_id
               ORDER BY (s.model_version IN (SELECT model_version FROM v_serving WHERE alias = 'intent-champion')) DESC,
                        s.committed_at DESC, s.scored_at DESC) AS rn
    FROM support_scores s
) WHERE rn = 1;

-- The human queues: every message triaged to a person, most urgent first, then oldest first.
CREATE OR REPLACE VIEW v_ticket_queue AS
SELECT t.queue, t.priority, t.urgent, t.intent_label AS intent, round(t.intent_confidence, 3) AS confidence,
       t.sentiment_label AS sentiment, coalesce(m.created_at, m.ingested_at) AS created_at, m.channel,
       m.customer_id, m.text, t.reasons, t.message_id, t.model_version, t.scored_at
FROM v_support_triage t
JOIN support_messages m ON m.message_id = t.message_id
WHERE t.decision = 'human'
ORDER BY t.priority, coalesce(m.created_at, m.ingested_at), t.message_id;

-- Auto-answered messages with their stored draft (status 'draft': a person sends or discards it).
CREATE OR REPLACE VIEW v_reply_drafts AS
SELECT t.queue, t.intent_label AS intent, round(t.intent_confidence, 3) AS confidence,
       coalesce(m.created_at, m.ingested_at) AS created_at, m.text AS message, d.draft_text, d.template_id,
       d.template_version, d.rewritten, d.status, d.created_at AS drafted_at, t.message_id, t.model_version
FROM v_support_triage t
JOIN support_messages m ON m.message_id = t.message_id
JOIN reply_drafts d ON d.message_id = t.message_id AND d.model_version = t.model_version
WHERE t.decision = 'auto_answer'
ORDER BY coalesce(m.created_at, m.ingested_at), t.message_id;

-- Intent volume per hour of message time (ingest time where the source has none).
CREATE OR REPLACE VIEW v_intent_volume_hourly AS
SELECT date_trunc('hour', coalesce(m.created_at, m.ingested_at)) AS hour,
       coalesce(t.intent_label, '(none)') AS intent,
       count(*) AS n,
       count(*) FILTER (WHERE t.urgent) AS urgent_n,
       count(*) FILTER (WHERE t.decision = 'auto_answer') AS auto_answered_n,
       round(avg(t.intent_confidence), 4) AS mean_confidence
FROM v_support_triage t
JOIN support_messages m ON m.message_id = t.message_id
GROUP BY 1, 2
ORDER BY 1, 2;
