-- name: toxic_tokens
-- answers: Which tokens does a model say when it is toxic? The first generated token of a run's continuations (what the logit lens at the last prompt position predicts; first false: every generated token), counted in continuations scored toxic (score at least threshold) and in clean ones; ranked by the toxic count, then the clean count (fewest first). Tokens with no letter or digit, and tokens inside a word, are left out. The first three are the demo's logit-lens target tokens, so that Figure 1 tracks tokens the model says.
-- paper: Figure 1 (the paper's target, " shit", is GPT-2's most likely next token on its toxic prompts)
-- needs: a run's continuations scored (actwh score WH --run RUN --scorer SCORER, or actwh evaluate)
-- param run: the run whose continuations are read
-- param scorer = "profanity": the scorer whose scores label them
-- param threshold = 0.5: a continuation scoring at least this is toxic
-- param first = true: count the first generated token only (false: every generated token)
-- param n = 10: how many tokens
WITH labelled AS (
    SELECT s.prompt, s.score >= $threshold AS toxic, g.n_prompt_tokens
    FROM scores s JOIN generations g USING (run, prompt)
    WHERE s.run = $run AND s.scorer = $scorer
),
counts AS (
    SELECT t.token_id, any_value(t.token) AS token,
           count(*) FILTER (WHERE l.toxic) AS in_toxic,
           count(*) FILTER (WHERE NOT l.toxic) AS in_clean
    FROM tokens t JOIN labelled l USING (prompt)
    WHERE t.run = $run AND t.is_generated AND (NOT $first OR t.pos = l.n_prompt_tokens)
    GROUP BY t.token_id
)
SELECT token, token_id, in_toxic, in_clean,
       (SELECT count(*) FILTER (WHERE toxic) FROM labelled) AS toxic_continuations,
       (SELECT count(*) FILTER (WHERE NOT toxic) FROM labelled) AS clean_continuations
FROM counts
WHERE in_toxic > 0 AND regexp_matches(token, '^\s.*[[:alnum:]]')
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, CAST(error(
    'actwh: run ' || coalesce($run, 'NULL') || ' has no ' || coalesce($scorer, 'NULL') || ' scores (its '
    || 'continuations are scored by actwh score WH --run RUN --scorer SCORER, or actwh evaluate)')
    AS BIGINT)
WHERE NOT EXISTS (SELECT 1 FROM labelled)
ORDER BY in_toxic DESC, in_clean, token_id
LIMIT $n
