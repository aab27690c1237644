-- name: toxicity_table
-- answers: Toxicity, perplexity and F1 of every evaluated model — base, DPO, interventions, un-aligned and their controls — by every scorer, each with a 95% bootstrap interval (over prompts for toxicity, paragraphs of the text for perplexity, samples for F1), and the change from the model's parent with its paired interval (the same prompts, paragraphs and samples in both). An un-aligned variant or control also has its edit: the scale s, how its keys were chosen, whether it is one-sided, and which variant a control is the control of (an un-aligning sweep is its rows by scale).
-- paper: Tables 2 and 4 (and 5, 7 for Llama-2)
-- needs: actwh evaluate WH --model MODEL [--scorer profanity,wordlist] for each model
-- param scorer = null: one scorer's rows (default: every scorer's)
-- param replicates = 1000: bootstrap resamples (percentile interval, 2.5% to 97.5%)
WITH evals AS (
    SELECT e.*, m.role, m.parent,
           -- an un-aligning edit (or its control): its scale, keys, sides
           CASE WHEN json_extract_string(m.config, '$.edit.kind') = 'unalign'
                THEN CAST(json_extract(m.config, '$.edit.scale') AS DOUBLE) END AS edit_scale,
           json_extract_string(m.config, '$.edit.chosen_by') AS keys_by,
           json_extract(m.config, '$.edit.signs') IS NOT NULL AS one_sided,
           json_extract_string(m.config, '$.edit.control_of') AS control_of
    FROM evaluations e JOIN models m ON m.name = e.model
    WHERE $scorer IS NULL OR e.scorer = $scorer
),
parents AS (
    SELECT e.model, e.scorer, e.prompt_set, e.run, pe.run AS parent_run, e.ppl_text, e.f1_data
    FROM evals e LEFT JOIN evaluations pe
      ON pe.model = e.parent AND pe.prompt_set = e.prompt_set AND pe.scorer = e.scorer
),
-- Every item an evaluation averages, with its parent's value for the same item.
items AS (
    SELECT p.model, p.scorer, p.prompt_set, 'toxicity' AS metric, s.prompt AS item,
           s.score::DOUBLE AS value, 1.0 AS weight, ps.score::DOUBLE AS parent_value
    FROM parents p JOIN scores s ON s.run = p.run AND s.scorer = p.scorer
    LEFT JOIN scores ps ON ps.run = p.parent_run AND ps.scorer = p.scorer AND ps.prompt = s.prompt
    UNION ALL
    SELECT p.model, p.scorer, p.prompt_set, i.metric, i.item, i.value, i.weight,
           pi.value AS parent_value
    FROM parents p
    JOIN eval_items i ON i.run = p.run
     AND i.source = CASE i.metric WHEN 'nll' THEN p.ppl_text ELSE p.f1_data END
    LEFT JOIN eval_items pi
      ON pi.run = p.parent_run AND pi.metric = i.metric AND pi.source = i.source
     AND pi.item = i.item
),
numbered AS (
    SELECT *, row_number() OVER g - 1 AS i, count(*) OVER g_all AS n
    FROM items
    WINDOW g AS (PARTITION BY model, scorer, prompt_set, metric ORDER BY item),
           g_all AS (PARTITION BY model, scorer, prompt_set, metric)
),
sizes AS (SELECT DISTINCT model, scorer, prompt_set, metric, n FROM numbered),
draws AS (
    SELECT model, scorer, prompt_set, metric, b, bootstrap_index(b, unnest(range(n)), n) AS i
    FROM sizes, range($replicates) r(b)
),
-- A statistic of a sample: the mean, or for NLL the perplexity exp(Σ NLL / Σ tokens).
replicates AS (
    SELECT d.model, d.scorer, d.prompt_set, d.metric, d.b,
           CASE d.metric WHEN 'nll' THEN exp(sum(x.value) / sum(x.weight)) ELSE avg(x.value) END
             AS stat,
           CASE d.metric WHEN 'nll' THEN exp(sum(x.value) / sum(x.weight))
                                         - exp(sum(x.parent_value) / sum(x.weight))
                         ELSE avg(x.value - x.parent_value) END AS change
    FROM draws d JOIN numbered x USING (model, scorer, prompt_set, metric, i)
    GROUP BY d.model, d.scorer, d.prompt_set, d.metric, d.b
),
whole AS (
    SELECT model, scorer, prompt_set, metric,
           CASE metric WHEN 'nll' THEN exp(sum(value) / sum(weight))
                                  - exp(sum(parent_value) / sum(weight))
                       ELSE avg(value - parent_value) END AS change
    FROM items GROUP BY model, scorer, prompt_set, metric
),
intervals AS (
    SELECT r.model, r.scorer, r.prompt_set, r.metric, w.change,
           quantile_cont(r.stat, 0.025) AS lo, quantile_cont(r.stat, 0.975) AS hi,
           quantile_cont(r.change, 0.025) AS change_lo, quantile_cont(r.change, 0.975) AS change_hi
    FROM replicates r JOIN whole w USING (model, scorer, prompt_set, metric)
    GROUP BY r.model, r.scorer, r.prompt_set, r.metric, w.change
)
SELECT e.model, e.role, e.parent, e.prompt_set, e.scorer, e.n_prompts,
       e.toxicity, t.lo AS toxicity_lo, t.hi AS toxicity_hi,
       t.change AS toxicity_change, t.change_lo AS toxicity_change_lo,
       t.change_hi AS toxicity_change_hi,
       e.perplexity, p.lo AS perplexity_lo, p.hi AS perplexity_hi,
       p.change AS perplexity_change, p.change_lo AS perplexity_change_lo,
       p.change_hi AS perplexity_change_hi,
       e.f1, f.lo AS f1_lo, f.hi AS f1_hi,
       f.change AS f1_change, f.change_lo AS f1_change_lo, f.change_hi AS f1_change_hi,
       e.ppl_tokens, e.n_f1,
       e.edit_scale, e.keys_by, e.one_sided AND e.edit_scale IS NOT NULL AS one_sided,
       e.control_of
FROM evals e
LEFT JOIN intervals t ON t.model = e.model AND t.scorer = e.scorer
 AND t.prompt_set = e.prompt_set AND t.metric = 'toxicity'
LEFT JOIN intervals p ON p.model = e.model AND p.scorer = e.scorer
 AND p.prompt_set = e.prompt_set AND p.metric = 'nll'
LEFT JOIN intervals f ON f.model = e.model AND f.scorer = e.scorer
 AND f.prompt_set = e.prompt_set AND f.metric = 'f1'
ORDER BY e.prompt_set, e.scorer,
         CASE e.role WHEN 'base' THEN 0 WHEN 'dpo' THEN 1 WHEN 'tuned' THEN 1 WHEN 'intervened' THEN 2 ELSE 3 END,
         e.model
