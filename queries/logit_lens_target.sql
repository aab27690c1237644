-- name: logit_lens_target
-- answers: Layer by layer, how likely is a target token (" shit" in the paper) at the last prompt position (what predicts the first generated token), in each run, with a normal 95% interval half-width over prompts (ci95; null below min_prompts prompts)? A run that stored the lens at every position (--lens-at all) is read at that position only.
-- paper: Figure 1 (logit lens of GPT2 vs GPT2_DPO; MLPs of layers 18-20 promote the token most)
-- needs: runs ingested with --logit-lens K --target-tokens "..."
-- param token: the target token as stored (e.g. " garbage")
-- param selected_by = null: if a run name, only prompts whose greedy next token in that run is the target (the paper's selection: GPT-2 predicts " shit")
-- param min_prompts = 10: below this many prompts ci95 is null (an interval over a handful of prompts says little)
WITH selected AS (
    SELECT prompt FROM tokens t
    JOIN generations g USING (run, prompt)
    WHERE t.run = $selected_by AND t.pos = g.n_prompt_tokens AND t.token = $token
)
SELECT run, layer, site,
       avg(prob) AS mean_prob,
       CASE WHEN count(*) >= $min_prompts THEN 1.96 * stddev_samp(prob) / sqrt(count(*)) END
         AS ci95,
       count(*) AS n
FROM token_probs p
JOIN generations g USING (run, prompt)
WHERE p.token = $token AND p.pos = g.n_prompt_tokens - 1
  AND ($selected_by IS NULL OR p.prompt IN (SELECT prompt FROM selected))
GROUP BY run, layer, site
ORDER BY run, layer, CASE site WHEN 'resid_pre' THEN 0 WHEN 'resid_mid' THEN 1 ELSE 2 END
