-- name: prompt_shift
-- answers: Which prompts did tuning change most? Per prompt, the mean projection on a direction over its generated tokens in the base run and in the tuned run on the same tokens, and the change; the prompt's transform (rot13, base64, leet) and number of chat messages (0: not a chat).
-- paper: token-level views (which prompts to look at first; not in the paper)
-- needs: a base run and a tuned run --teacher-force BASE_RUN, both projecting on the direction at the site
-- param base_run: the base run
-- param tuned_run: the tuned run over the same tokens
-- param layer: the layer to read
-- param direction = "toxic_probe": the direction projected on
-- param site = null: the residual site (default: the one the MLP reads, resid_mid or resid_pre)
WITH per_prompt AS (
    SELECT p.prompt,
           avg(p.dot) FILTER (WHERE p.run = $base_run) AS base_dot,
           avg(p.dot) FILTER (WHERE p.run = $tuned_run) AS tuned_dot
    FROM projections p
    JOIN tokens t ON t.run = $base_run AND t.prompt = p.prompt AND t.pos = p.pos
    WHERE p.run IN ($base_run, $tuned_run) AND p.layer = $layer
      AND p.site = coalesce($site, mlp_input($base_run)) AND p.direction = $direction
      AND t.is_generated
    GROUP BY p.prompt
),
SELECT pp.prompt, pr.transform, coalesce(json_array_length(pr.messages), 0) AS messages,
       pp.base_dot, pp.tuned_dot, pp.tuned_dot - pp.base_dot AS change
FROM per_prompt pp
JOIN runs r ON r.name = $base_run
JOIN prompts pr ON pr.prompt_set = r.prompt_set AND pr.prompt = pp.prompt
ORDER BY abs(pp.tuned_dot - pp.base_dot) DESC NULLS LAST, pp.prompt
