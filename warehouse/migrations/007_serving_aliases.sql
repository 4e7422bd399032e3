-- Who scores what (issue 15, item 2): two serving aliases, and views that say which model analysts see.
--
-- `champion`      the best model by the champion gate (fine-tunes of the pretrained SmolLM2 model
--                 compete for it). `score-gpu` serves it, the distill flow uses it as the teacher,
--                 and recommendations use its embeddings. Stored as before: model_registry.stage.
-- `cpu-champion`  what the hourly CPU scorer (`score-hourly`) serves: normally the distilled
--                 student, which reaches it only through the distill flow's gate (or an operator's
--                 `newspulse models promote --alias cpu-champion`). Stored as the flag below; when
--                 no model holds it, it resolves to the champion, so a project without a student
--                 behaves exactly as before. `stage` keeps its meaning: only champion moves change it.
--
-- What analysts see is the resolved cpu-champion: it scores every fresh article within the hour,
-- and one model's labels keep the monitor's baselines consistent. So v_scores, the monitor
-- (sentiment_windows, sentiment_scan, alerts) and the scan's confusion matrix follow it, while
-- v_scores_by_model shows every model's scores side by side (teacher next to student).

ALTER TABLE model_registry ADD COLUMN cpu_champion BOOLEAN DEFAULT false;  -- holds the cpu-champion alias
-- Every event names the alias it moved; the events recorded before this migration all moved the champion.
ALTER TABLE model_promotions ADD COLUMN alias VARCHAR DEFAULT 'champion';  -- 'champion' | 'cpu-champion'

-- Alias -> the model that serves it, resolved: `held` is false where cpu-champion falls back to
-- the champion (no model holds it). No row for an alias nothing serves (no champion yet).
CREATE OR REPLACE VIEW v_serving AS
WITH champ AS (SELECT model_version FROM model_registry WHERE stage = 'champion'),
     cpu AS (SELECT model_version FROM model_registry WHERE cpu_champion)
SELECT 'champion' AS alias, model_version, true AS held, 'score-gpu' AS scored_by
FROM champ
UNION ALL
SELECT 'cpu-champion', coalesce(cpu.model_version, champ.model_version), cpu.model_version IS NOT NULL, 'score-hourly'
FROM (SELECT 1) one LEFT JOIN cpu ON true LEFT JOIN champ ON true
WHERE coalesce(cpu.model_version, champ.model_version) IS NOT NULL;

-- Every model's score of every article it scored, with the aliases its model serves now
-- ('champion', 'cpu-champion', 'champion, cpu-champion', or 'none'): compare teacher and student here.
CREATE OR REPLACE VIEW v_scores_by_model AS
SELECT a.article_id, coalesce(a.published_at, a.ingested_at) AS published_at, a.source, a.title,
       a.tickers, s.model_version, coalesce(r.alias, 'none') AS alias, s.sentiment_label, s.sentiment_score,
       s.sentiment_p_negative, s.sentiment_p_neutral, s.sentiment_p_positive, s.topic_label, s.topic_confidence,
       s.truncated, s.scored_at
FROM scores s
JOIN articles a ON a.article_id = s.article_id
LEFT JOIN (SELECT model_version, string_agg(alias, ', ' ORDER BY alias) AS alias FROM v_serving GROUP BY 1) r
       ON r.model_version = s.model_version;

-- The desk's scores: the resolved cpu-champion's score of every article it has scored (it was
-- the champion's before this migration; without a student it still is). `alias` says which
-- aliases that model serves ('cpu-champion', or 'champion, cpu-champion' when one model serves both).
CREATE OR REPLACE VIEW v_scores AS
SELECT a.article_id, coalesce(a.published_at, a.ingested_at) AS published_at, a.source, a.title,
       a.tickers, s.sentiment_label, s.sentiment_score, s.sentiment_p_negative, s.sentiment_p_neutral,
       s.sentiment_p_positive, s.topic_label, s.topic_confidence, s.truncated, s.model_version, s.scored_at,
       r.alias
FROM scores s
JOIN (SELECT model_version, string_agg(alias, ', ' ORDER BY alias) AS alias FROM v_serving GROUP BY 1
      HAVING bool_or(alias = 'cpu-champion')) r ON r.model_version = s.model_version
JOIN articles a ON a.article_id = s.article_id;

CREATE OR REPLACE VIEW v_models AS
SELECT m.model_version, m.created_at, m.stage, coalesce(r.alias, 'none') AS aliases, m.served, m.backbone,
       round(m.val_score, 4) AS val_score, round(m.baseline_val_score, 4) AS baseline_val_score, m.artifact_path
FROM model_registry m
LEFT JOIN (SELECT model_version, string_agg(alias, ', ' ORDER BY alias) AS alias FROM v_serving GROUP BY 1) r
       ON r.model_version = m.model_version;
