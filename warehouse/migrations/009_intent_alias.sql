-- The customer-service intent model (issue 16): a third serving alias, `intent-champion`.
--
-- Intent models (BANKING77's 77 intents; models.multihead intent head, no sentiment head) are
-- trained by the same fine-tune flow and judged by the same paired-bootstrap gate, but against
-- the intent model that serves triage, never against the news champion: the two answer different
-- questions. The triage flow (every 5 minutes) serves `intent-champion`; news scoring, the
-- monitor's sentiment windows and recommendations never see it. Like `cpu-champion`, it is a flag
-- that never changes `stage`, and every move is a `model_promotions` event with its alias.

ALTER TABLE model_registry ADD COLUMN intent_champion BOOLEAN DEFAULT false;

CREATE OR REPLACE VIEW v_serving AS
WITH champ AS (SELECT model_version FROM model_registry WHERE stage = 'champion'),
     cpu AS (SELECT model_version FROM model_registry WHERE cpu_champion)
SELECT 'champion' AS alias, model_version, true AS held, 'score-gpu' AS scored_by
FROM champ
UNION ALL
SELECT 'cpu-champion', coalesce(cpu.model_version, champ.model_version), cpu.model_version IS NOT NULL, 'score-hourly'
FROM (SELECT 1) one LEFT JOIN cpu ON true LEFT JOIN champ ON true
WHERE coalesce(cpu.model_version, champ.model_version) IS NOT NULL
UNION ALL
SELECT 'intent-champion', model_version, true, 'triage-every-5-min'
FROM model_registry WHERE intent_champion;
