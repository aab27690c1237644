-- name: tracked_write
-- answers: How much do all the tracked neurons together write along a direction, base run vs tuned run on the same tokens? Σ_i mean(m_i)·⟨v_i, d̂⟩ over the generated tokens of one arm of prompts (plain unless asked), per layer, and in total on the last row (layer NULL).
-- paper: Figure 2, summed over every tracked neuron (does the net write of the toxic neurons fall?)
-- needs: as activation_drop
-- param base_run: the base model's run
-- param tuned_run: the tuned model's run over the same tokens
-- param direction = "toxic_probe": the direction (the base model's, else its nearest ancestor's)
-- param arm = "plain": the prompts read: plain, an encoding (rot13, base64, leet), chat, or all
SELECT layer, count(*) AS neurons,
       sum(base_write) AS base_write, sum(tuned_write) AS tuned_write,
       sum(tuned_write) - sum(base_write) AS change,
       count(*) FILTER (WHERE base_write > 0) AS writing_toward
FROM tracked_writes($base_run, $tuned_run, $direction, $arm)
GROUP BY GROUPING SETS ((layer), ())
ORDER BY layer NULLS LAST
