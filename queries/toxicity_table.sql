-- name: toxicity_table
-- answers: Toxicity, perplexity and F1 of every evaluated model — base, DPO, interventions, un-aligned — by every scorer, with a 95% bootstrap interval over prompts for the toxicity and for its change from the model's parent (paired: the same prompts).
-- paper: Tables 2 and 4 (and 5, 7 for Llama-2)
-- needs: actwh evaluate WH --model MODEL [--scorer profanity,wordlist] for each model
-- param scorer = null: one scorer's rows (default: every scorer's)
-- param replicates = 1000: bootstrap resamples of the prompts (percentile interval, 2.5% to 97.5%)
WITH evals AS (
    SELECT e.*, m.role, m.parent FROM evaluations e JOIN models m ON m.name = e.model
    WHERE $scorer IS NULL OR e.scorer = $scorer
),
-- Per prompt: the model's score, and its parent's for the same prompt (same prompt set, scorer).
items AS (
    SELECT e.model, e.scorer, e.prompt_set, s.prompt, s.score, ps.score AS parent_score,
           row_number() OVER (PARTITION BY e.model, e.scorer, e.prompt_set ORDER BY s.prompt) - 1
             AS i,
           count(*) OVER (PARTITION BY e.model, e.scorer, e.prompt_set) AS n
    FROM evals e
    JOIN scores s ON s.run = e.run AND s.scorer = e.scorer
    LEFT JOIN evaluations pe
      ON pe.model = e.parent AND pe.prompt_set = e.prompt_set AND pe.scorer = e.scorer
    LEFT JOIN scores ps ON ps.run = pe.run AND ps.scorer = pe.scorer AND ps.prompt = s.prompt
),
sizes AS (SELECT DISTINCT model, scorer, prompt_set, n FROM items),
draws AS (
    SELECT model, scorer, prompt_set, b, bootstrap_index(b, unnest(range(n)), n) AS i
    FROM sizes, range($replicates) r(b)
),
replicates AS (
    SELECT d.model, d.scorer, d.prompt_set, d.b,
           avg(it.score) AS toxicity, avg(it.score - it.parent_score) AS change
    FROM draws d JOIN items it USING (model, scorer, prompt_set, i)
    GROUP BY d.model, d.scorer, d.prompt_set, d.b
),
intervals AS (
    SELECT model, scorer, prompt_set,
           quantile_cont(toxicity, 0.025) AS toxicity_lo, quantile_cont(toxicity, 0.975) AS toxicity_hi,
           quantile_cont(change, 0.025) AS change_lo, quantile_cont(change, 0.975) AS change_hi
    FROM replicates GROUP BY model, scorer, prompt_set
),
changes AS (
    SELECT model, scorer, prompt_set, avg(score - parent_score) AS change
    FROM items GROUP BY model, scorer, prompt_set
)
SELECT e.model, e.role, e.parent, e.prompt_set, e.scorer, e.n_prompts,
       e.toxicity, ci.toxicity_lo, ci.toxicity_hi,
       c.change AS toxicity_change, ci.change_lo, ci.change_hi,
       e.perplexity, e.f1, e.ppl_tokens, e.n_f1
FROM evals e
LEFT JOIN intervals ci USING (model, scorer, prompt_set)
LEFT JOIN changes c USING (model, scorer, prompt_set)
ORDER BY e.prompt_set, e.scorer,
         CASE e.role WHEN 'base' THEN 0 WHEN 'dpo' THEN 1 WHEN 'intervened' THEN 2 ELSE 3 END,
         e.model
