-- name: activation_drop
-- answers: Do the neurons that write a direction (the toxic probe) write less of it after DPO? For the top-N tracked neurons, over generated tokens of one arm of prompts (plain unless asked), base run vs tuned run on the same tokens: the mean coefficient m_i and the mean write along the direction, mean(m_i)·⟨v_i, d̂⟩, and the change of each with a 95% bootstrap interval over prompts (paired: the same prompts in both runs). Neurons are ranked by rank: write (default), the base run's mean write toward the direction, so a neuron that barely fires ranks low; or cosine, the cosine of the mean write with the direction (the paper's rule: for GPT-2 the cosine of the value vector; for a gated MLP oriented by the sign of the base run's mean coefficient). Whether the change is specific to these neurons and to toxic prompts: query drop_baseline. The total over every tracked neuron: query tracked_write.
-- paper: Figure 2 (mean activation of five top MLP.v_Toxic, GPT2 vs GPT2_DPO, over 20 greedy tokens of 1,199 prompts)
-- needs: a base run ingested with --track-neurons (e.g. toxic_probe:64); the tuned run with --teacher-force BASE_RUN and the same --track-neurons; actwh index-vectors for the base model (and actwh diff for the tuned model's own value vectors)
-- param base_run: the base model's run
-- param tuned_run: the tuned model's run over the same tokens
-- param direction = "toxic_probe": the direction (the base model's, else its nearest ancestor's)
-- param n = 5: how many neurons
-- param arm = "plain": the prompts read: plain, an encoding (rot13, base64, leet), chat, or all
-- param rank = "write": write (the base run's mean write along the direction) or cosine (the paper's)
-- param replicates = 1000: bootstrap resamples of the prompts (percentile interval, 2.5% to 97.5%)
WITH top AS (
    SELECT *, rank_by($rank, base_write, write_cosine, 'activation_drop') AS rank_by
    FROM tracked_writes($base_run, $tuned_run, $direction, $arm)
    ORDER BY rank_by DESC, layer, neuron
    LIMIT $n
),
prompts AS (
    SELECT prompt, row_number() OVER (ORDER BY prompt) - 1 AS i, count(*) OVER () AS n_prompts
    FROM (SELECT DISTINCT prompt FROM tokens
          WHERE run = $base_run AND is_generated
            AND prompt IN (SELECT prompt FROM arm_prompts($base_run, $arm)))
),
-- Each neuron's coefficients summed over one prompt's generated tokens, in both runs.
sums AS (
    SELECT a.layer, a.neuron, p.i,
           sum(a.act) FILTER (WHERE a.run = $base_run) AS base_sum,
           sum(a.act) FILTER (WHERE a.run = $tuned_run) AS tuned_sum,
           count(*) FILTER (WHERE a.run = $base_run) AS n
    FROM neuron_acts a
    JOIN top USING (layer, neuron)
    JOIN tokens g ON g.run = $base_run AND g.is_generated AND g.prompt = a.prompt AND g.pos = a.pos
    JOIN prompts p ON p.prompt = a.prompt
    WHERE a.run IN ($base_run, $tuned_run)
    GROUP BY a.layer, a.neuron, p.i
),
draws AS (
    SELECT b, bootstrap_index(b, unnest(range(n_prompts)), n_prompts) AS i
    FROM (SELECT DISTINCT n_prompts FROM prompts), range($replicates) r(b)
),
replicates AS (
    SELECT s.layer, s.neuron, d.b,
           sum(s.base_sum) / sum(s.n) AS base_mean, sum(s.tuned_sum) / sum(s.n) AS tuned_mean
    FROM draws d JOIN sums s USING (i)
    GROUP BY s.layer, s.neuron, d.b
),
intervals AS (
    SELECT r.layer, r.neuron,
           quantile_cont(r.tuned_mean - r.base_mean, [0.025, 0.975]) AS change_ci,
           quantile_cont(r.tuned_mean * t.tuned_dot - r.base_mean * t.base_dot, [0.025, 0.975])
             AS write_change_ci
    FROM replicates r JOIN top t USING (layer, neuron)
    GROUP BY r.layer, r.neuron
)
SELECT t.layer, t.neuron, t.cosine, t.base_mean, t.tuned_mean,
       t.tuned_mean - t.base_mean AS change,
       i.change_ci[1] AS change_lo, i.change_ci[2] AS change_hi,
       t.n_tokens, t.write_cosine, t.base_write, t.tuned_write,
       t.tuned_write - t.base_write AS write_change,
       i.write_change_ci[1] AS write_change_lo, i.write_change_ci[2] AS write_change_hi
FROM top t LEFT JOIN intervals i USING (layer, neuron)
ORDER BY t.rank_by DESC, t.layer, t.neuron
