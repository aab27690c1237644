-- name: toxicity_table
-- answers: Toxicity, perplexity and F1 of every evaluated model — base, DPO, interventions, un-aligned.
-- paper: Tables 2 and 4 (and 5, 7 for Llama-2)
-- needs: actwh evaluate WH --model MODEL for each model
-- param scorer = "profanity": which toxicity scorer's numbers
SELECT e.model, m.role, m.parent, e.prompt_set, e.n_prompts,
       e.toxicity, e.perplexity, e.f1, e.ppl_tokens, e.n_f1
FROM evaluations e JOIN models m ON m.name = e.model
WHERE e.scorer = $scorer
ORDER BY e.prompt_set,
         CASE m.role WHEN 'base' THEN 0 WHEN 'dpo' THEN 1 WHEN 'intervened' THEN 2 ELSE 3 END,
         e.model
