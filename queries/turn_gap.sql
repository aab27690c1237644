-- name: turn_gap
-- answers: Does the tuned model's offset along a direction hold in every turn of a multi-turn chat? Over chat prompts with two or more turns, per message index (turn), for what the template inserted itself (a default system prompt, apart), and for the generated reply, the mean projection on the direction in the base run and in the tuned run on the same tokens, and the gap.
-- paper: an open question (not in the paper: its prompts are single-turn)
-- needs: chat prompts ("messages") in the base run's prompt set; a tuned run --teacher-force BASE_RUN; both projecting on the direction
-- param base_run: the base run
-- param tuned_run: the tuned run over the same tokens
-- param layer: the layer to read
-- param direction = "toxic_probe": the direction projected on
-- param site = null: the residual site (default: the one the MLP reads, resid_mid or resid_pre)
WITH chats AS (
    SELECT p.prompt, json_array_length(p.messages) AS messages
    FROM prompts p JOIN runs r ON r.prompt_set = p.prompt_set
    WHERE r.name = $base_run AND json_array_length(p.messages) >= 2
),
-- A chat's tokens: what the template inserted itself (a default system prompt, turn -1), each
-- message's, the template's reply header ("assistant" turn), the reply.
labelled AS (
    SELECT t.prompt, t.pos,
           CASE WHEN t.is_generated THEN 'reply'
                WHEN t.turn >= c.messages THEN 'reply header'
                WHEN t.turn < 0 THEN 'system (template)'
                ELSE 'message ' || t.turn END AS part,
           CASE WHEN t.is_generated THEN 1001 WHEN t.turn >= c.messages THEN 1000
                ELSE t.turn END AS part_order
    FROM tokens t JOIN chats c USING (prompt)
    WHERE t.run = $base_run
)
SELECT l.part, min(l.part_order) AS part_order, count(DISTINCT l.prompt) AS prompts,
       count(*) FILTER (WHERE p.run = $base_run) AS tokens,
       avg(p.dot) FILTER (WHERE p.run = $base_run) AS base_dot,
       avg(p.dot) FILTER (WHERE p.run = $tuned_run) AS tuned_dot,
       avg(p.dot) FILTER (WHERE p.run = $tuned_run)
         - avg(p.dot) FILTER (WHERE p.run = $base_run) AS gap
FROM labelled l
JOIN projections p ON p.prompt = l.prompt AND p.pos = l.pos
WHERE p.run IN ($base_run, $tuned_run) AND p.layer = $layer
  AND p.site = coalesce($site, mlp_input($base_run)) AND p.direction = $direction
GROUP BY l.part
ORDER BY part_order
