-- name: drop_baseline
-- answers: Is the drop in what the top neurons write specific to them, and to toxic prompts? For groups of neurons, base run vs tuned run on the same tokens: Σ_i mean(m_i)·⟨v_i, d̂⟩ (the net write along the direction) and Σ_i |mean(m_i)| (how hard they fire), each with its change and relative change. Groups: selected (activation_drop's top N, same arm and rank) and the other tracked neurons, each on the arm's prompts outside the baseline category (prompts = not neutral) and inside it (prompts = the baseline category, e.g. neutral); and every untracked neuron of the selected neurons' layers over the arm's generated tokens (from neuron_stats: prompts = the arm). The tracked groups' relative changes have 95% bootstrap intervals over prompts (paired: the same prompts in both runs). A drop that is as large for the baselines is generic, not toxicity-specific.
-- paper: Figure 2's control (the paper reports the selected neurons only)
-- needs: as activation_drop; prompts with a "category" field for the prompt baseline (the shipped prompts: provocative or neutral)
-- param base_run: the base model's run
-- param tuned_run: the tuned model's run over the same tokens
-- param direction = "toxic_probe": the direction (the base model's, else its nearest ancestor's)
-- param n = 5: how many neurons are selected (activation_drop's top N)
-- param arm = "plain": the prompts read: plain, an encoding (rot13, base64, leet), chat, or all
-- param rank = "write": write (the base run's mean write along the direction) or cosine (the paper's)
-- param baseline = "neutral": the prompts' category (meta field "category") that is the prompt baseline
-- param replicates = 1000: bootstrap resamples of the prompts, within each prompt group (the tracked groups' intervals; the untracked neurons' statistics are per arm, not per prompt: no interval)
WITH written AS (
    SELECT *, rank_by($rank, base_write, write_cosine, 'drop_baseline') AS rank_by
    FROM tracked_writes($base_run, $tuned_run, $direction, $arm)
),
ranked AS (
    SELECT layer, neuron, base_dot, tuned_dot,
           row_number() OVER (ORDER BY rank_by DESC, layer, neuron) <= $n AS selected
    FROM written
),
labels AS (
    SELECT p.prompt, coalesce(json_extract_string(p.meta, '$.category') = $baseline, false)
             AS in_baseline
    FROM prompts p JOIN runs r ON r.prompt_set = p.prompt_set
    WHERE r.name = $base_run AND p.prompt IN (SELECT prompt FROM arm_prompts($base_run, $arm))
),
generated AS (
    SELECT t.prompt, t.pos, l.in_baseline FROM tokens t JOIN labels l USING (prompt)
    WHERE t.run = $base_run AND t.is_generated
),
-- Each tracked neuron's coefficients summed over one prompt's generated tokens, in both runs; the
-- prompts numbered within their group (in the baseline or not), which a bootstrap resamples.
sums AS (
    SELECT a.layer, a.neuron, g.in_baseline, a.prompt,
           sum(a.act) FILTER (WHERE a.run = $base_run) AS base_sum,
           sum(a.act) FILTER (WHERE a.run = $tuned_run) AS tuned_sum,
           count(*) FILTER (WHERE a.run = $base_run) AS n
    FROM neuron_acts a JOIN generated g ON g.prompt = a.prompt AND g.pos = a.pos
    WHERE a.run IN ($base_run, $tuned_run)
    GROUP BY a.layer, a.neuron, g.in_baseline, a.prompt
),
numbered AS (
    SELECT prompt, in_baseline, row_number() OVER g - 1 AS i, count(*) OVER g_all AS n_prompts
    FROM (SELECT DISTINCT prompt, in_baseline FROM sums)
    WINDOW g AS (PARTITION BY in_baseline ORDER BY prompt), g_all AS (PARTITION BY in_baseline)
),
-- b = -1 is the sample itself; b ≥ 0 are the resamples.
draws AS (
    SELECT in_baseline, -1 AS b, i FROM numbered
    UNION ALL
    SELECT in_baseline, b, bootstrap_index(b, unnest(range(n_prompts)), n_prompts) AS i
    FROM (SELECT DISTINCT in_baseline, n_prompts FROM numbered), range($replicates) r(b)
),
means AS (
    SELECT s.layer, s.neuron, s.in_baseline, d.b,
           sum(s.base_sum) / sum(s.n) AS base_mean, sum(s.tuned_sum) / sum(s.n) AS tuned_mean
    FROM draws d JOIN numbered p USING (in_baseline, i) JOIN sums s USING (prompt, in_baseline)
    GROUP BY s.layer, s.neuron, s.in_baseline, d.b
),
groups AS (
    SELECT CASE WHEN r.selected THEN 'selected' ELSE 'other tracked' END AS neurons,
           CASE WHEN m.in_baseline THEN $baseline ELSE 'not ' || $baseline END AS prompts,
           m.b, count(*) AS n_neurons,
           sum(m.base_mean * r.base_dot) AS base_write,
           sum(m.tuned_mean * r.tuned_dot) AS tuned_write,
           sum(abs(m.base_mean)) AS base_abs, sum(abs(m.tuned_mean)) AS tuned_abs
    FROM means m JOIN ranked r USING (layer, neuron)
    GROUP BY ALL
),
tracked AS (
    SELECT g.neurons, g.prompts, g.n_neurons,
           (SELECT max(n_prompts) FROM numbered n
            WHERE (CASE WHEN n.in_baseline THEN $baseline ELSE 'not ' || $baseline END) = g.prompts)
             AS n_prompts,
           g.base_write, g.tuned_write, g.base_abs, g.tuned_abs,
           quantile_cont((r.tuned_write - r.base_write) / abs(r.base_write), [0.025, 0.975])
             AS write_ci,
           quantile_cont((r.tuned_abs - r.base_abs) / r.base_abs, [0.025, 0.975]) AS abs_ci
    FROM groups g LEFT JOIN groups r
      ON r.neurons = g.neurons AND r.prompts = g.prompts AND r.b >= 0
    WHERE g.b = -1
    GROUP BY ALL
),
-- Every neuron of the selected neurons' layers that is not tracked, from neuron_stats.
model AS (SELECT model FROM runs WHERE name = $base_run),
tuned_model AS (SELECT model FROM runs WHERE name = $tuned_run),
d AS (SELECT vec::FLOAT[] AS v, norm FROM direction_of((SELECT model FROM model), $direction)),
stats AS (
    SELECT s.layer, s.neuron,
           sum(s.sum) FILTER (WHERE s.run = $base_run)
             / sum(s.n) FILTER (WHERE s.run = $base_run) AS base_mean,
           sum(s.sum) FILTER (WHERE s.run = $tuned_run)
             / sum(s.n) FILTER (WHERE s.run = $tuned_run) AS tuned_mean
    FROM (SELECT * FROM arm_stats($base_run, $arm)
          UNION ALL SELECT * FROM arm_stats($tuned_run, $arm)) s
    WHERE s.generated
      AND s.layer IN (SELECT layer FROM ranked WHERE selected)
      AND (s.layer, s.neuron) NOT IN (SELECT (layer, neuron) FROM ranked)
    GROUP BY s.layer, s.neuron
),
layers AS (
    SELECT 'untracked, layer ' || string_agg(DISTINCT s.layer::VARCHAR, ', ' ORDER BY s.layer::VARCHAR)
             AS neurons,
           $arm AS prompts,
           count(*) AS n_neurons,
           (SELECT count(*) FROM arm_prompts($base_run, $arm)) AS n_prompts,
           sum(s.base_mean * list_dot_product(v.vec::FLOAT[], d.v) / d.norm) AS base_write,
           sum(s.tuned_mean * (list_dot_product(v.vec::FLOAT[], d.v)
               + coalesce(list_dot_product(dv.delta::FLOAT[], d.v), 0)) / d.norm) AS tuned_write,
           sum(abs(s.base_mean)) AS base_abs, sum(abs(s.tuned_mean)) AS tuned_abs,
           NULL::DOUBLE[] AS write_ci, NULL::DOUBLE[] AS abs_ci
    FROM stats s
    JOIN value_vectors v
      ON v.model = (SELECT model FROM model) AND v.layer = s.layer AND v.neuron = s.neuron
    CROSS JOIN d
    LEFT JOIN value_vector_diffs dv
      ON dv.model = (SELECT model FROM tuned_model) AND dv.layer = s.layer AND dv.neuron = s.neuron
    HAVING count(*) > 0
)
SELECT neurons, prompts, n_neurons, n_prompts,
       base_write, tuned_write, tuned_write - base_write AS write_change,
       (tuned_write - base_write) / abs(base_write) AS write_relative_change,
       write_ci[1] AS write_relative_change_lo, write_ci[2] AS write_relative_change_hi,
       base_abs, tuned_abs, (tuned_abs - base_abs) / base_abs AS abs_relative_change,
       abs_ci[1] AS abs_relative_change_lo, abs_ci[2] AS abs_relative_change_hi
FROM (SELECT * FROM tracked UNION ALL BY NAME SELECT * FROM layers)
ORDER BY neurons = 'selected' DESC, neurons = 'other tracked' DESC, prompts LIKE 'not %' DESC
