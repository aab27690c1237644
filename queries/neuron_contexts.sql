-- name: neuron_contexts
-- answers: Where does a neuron fire hardest? The k tokens of the base run (from position from_pos on) with the largest oriented coefficient sign·m_i (sign = +1 ranks by m, −1 by −m: a gated neuron writes toward a direction with the sign of cos(v_i, d)), each with the text around it and its coefficient in the base and the tuned run on the same token.
-- paper: neuron pages (Neuronpedia-style top activations; not in the paper)
-- needs: the neuron tracked (--track-neurons) or its layer's mlp_post captured, in both runs; the tuned run teacher-forced on the base run
-- param base_run: the run whose tokens are ranked
-- param tuned_run = null: a run over the same tokens (teacher-forced), for its coefficient there
-- param layer: the neuron's layer
-- param neuron: the neuron's index
-- param k = 10: how many contexts
-- param sign = 1: +1 ranks by m, −1 by −m
-- param window = 8: tokens shown on each side
-- param from_pos = 1: rank tokens from this position on (the first token is an attention sink in many models, with outsized coefficients)
WITH base AS (
    SELECT * FROM neuron_coefficients($base_run, $layer, $neuron) WHERE pos >= $from_pos
),
tuned AS (SELECT * FROM neuron_coefficients($tuned_run, $layer, $neuron)),
top AS (
    SELECT prompt, pos, act AS base_act FROM base
    ORDER BY $sign * act DESC, prompt, pos
    LIMIT $k
),
text AS (
    SELECT top.prompt, top.pos,
           string_agg(t.token, '' ORDER BY t.pos) FILTER (WHERE t.pos < top.pos) AS before,
           any_value(t.token) FILTER (WHERE t.pos = top.pos) AS token,
           string_agg(t.token, '' ORDER BY t.pos) FILTER (WHERE t.pos > top.pos) AS after,
           bool_or(t.is_generated) FILTER (WHERE t.pos = top.pos) AS generated
    FROM top JOIN tokens t
      ON t.run = $base_run AND t.prompt = top.prompt
     AND t.pos BETWEEN top.pos - $window AND top.pos + $window
    GROUP BY top.prompt, top.pos
)
SELECT top.prompt, top.pos, top.base_act, tuned.act AS tuned_act,
       coalesce(text.before, '') AS before, text.token, coalesce(text.after, '') AS after,
       text.generated
FROM top JOIN text USING (prompt, pos)
LEFT JOIN tuned USING (prompt, pos)
ORDER BY $sign * top.base_act DESC, top.prompt, top.pos
