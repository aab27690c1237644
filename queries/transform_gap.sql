-- name: transform_gap
-- answers: Do encoded prompts (ROT13, Base64, leetspeak) escape the DPO offset? For each transform (plain, each encoding, and chat for multi-turn prompts), the mean projection of the residual stream on a direction over generated tokens, base vs tuned on the same tokens, and the gap; for an encoding, source_gap is the gap of the plain prompts its variants were made from (the matched comparison: the same source prompts, encoded and not).
-- paper: an open question of §11 (not in the paper)
-- needs: prompts from actwh prompts transform; a base run and a tuned run --teacher-force BASE_RUN, both projecting on the direction
-- param base_run: the base model's run over plain and transformed prompts
-- param tuned_run: the tuned model's run over the same tokens
-- param layer: the layer to read
-- param direction = "toxic_probe": the direction projected on
-- param site = "resid_post": the residual site
WITH variant AS (
    SELECT a.prompt, p.source_prompt, a.arm AS transform
    FROM prompt_arms($base_run) a
    JOIN runs r ON r.name = $base_run
    JOIN prompts p ON p.prompt_set = r.prompt_set AND p.prompt = a.prompt
),
per_prompt AS (
    SELECT pr.run, pr.prompt, avg(pr.dot) AS dot, avg(pr.cos) AS cos
    FROM projections pr
    JOIN tokens t ON t.run = pr.run AND t.prompt = pr.prompt AND t.pos = pr.pos
    WHERE pr.run IN ($base_run, $tuned_run) AND pr.layer = $layer AND pr.site = $site
      AND pr.direction = $direction AND t.is_generated
    GROUP BY pr.run, pr.prompt
),
gaps AS (
    SELECT prompt, avg(dot) FILTER (WHERE run = $tuned_run) - avg(dot) FILTER (WHERE run = $base_run)
             AS gap
    FROM per_prompt GROUP BY prompt
),
matched AS (
    SELECT v.transform, avg(g.gap) AS source_gap
    FROM variant v JOIN gaps g ON g.prompt = v.source_prompt
    GROUP BY v.transform
)
SELECT v.transform,
       count(DISTINCT v.prompt) AS prompts,
       avg(pp.dot) FILTER (WHERE pp.run = $base_run) AS base_dot,
       avg(pp.dot) FILTER (WHERE pp.run = $tuned_run) AS tuned_dot,
       avg(pp.dot) FILTER (WHERE pp.run = $tuned_run)
         - avg(pp.dot) FILTER (WHERE pp.run = $base_run) AS gap,
       avg(pp.cos) FILTER (WHERE pp.run = $base_run) AS base_cos,
       avg(pp.cos) FILTER (WHERE pp.run = $tuned_run) AS tuned_cos,
       any_value(m.source_gap) AS source_gap
FROM variant v JOIN per_prompt pp ON pp.prompt = v.prompt LEFT JOIN matched m USING (transform)
GROUP BY v.transform
ORDER BY v.transform = 'plain' DESC, v.transform
