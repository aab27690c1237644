-- name: activation_drop
-- answers: Do the top toxic value vectors fire less after DPO? Mean coefficient m_i of each of the top-N tracked value vectors over generated tokens, base run vs tuned run on the same tokens.
-- paper: Figure 2 (mean activation of five top MLP.v_Toxic, GPT2 vs GPT2_DPO, over 20 greedy tokens of 1,199 prompts)
-- needs: a base run ingested with --track-neurons (e.g. toxic_probe:64); the tuned run with --teacher-force BASE_RUN and the same --track-neurons; actwh vectors for the base model
-- param base_run: the base model's run
-- param tuned_run: the tuned model's run over the same tokens
-- param direction = "toxic_probe": rank the tracked value vectors by cosine with this direction
-- param n = 5: how many value vectors
WITH base_model AS (SELECT model FROM runs WHERE name = $base_run),
d AS (
    SELECT vec::FLOAT[] AS v FROM directions
    WHERE name = $direction ORDER BY (model = (SELECT model FROM base_model)) DESC LIMIT 1
),
tracked AS (SELECT DISTINCT layer, neuron FROM neuron_acts WHERE run = $base_run),
ranked AS (
    SELECT t.layer, t.neuron, list_cosine_similarity(v.vec::FLOAT[], d.v) AS cosine
    FROM tracked t
    JOIN value_vectors v
      ON v.model = (SELECT model FROM base_model) AND v.layer = t.layer AND v.neuron = t.neuron,
    d
    ORDER BY cosine DESC
    LIMIT $n
),
generated AS (SELECT prompt, pos FROM tokens WHERE run = $base_run AND is_generated),
means AS (
    SELECT r.layer, r.neuron, r.cosine,
           avg(a.act) FILTER (WHERE a.run = $base_run) AS base_mean,
           avg(a.act) FILTER (WHERE a.run = $tuned_run) AS tuned_mean,
           count(*) FILTER (WHERE a.run = $base_run) AS n_tokens
    FROM ranked r
    JOIN neuron_acts a
      ON a.layer = r.layer AND a.neuron = r.neuron AND a.run IN ($base_run, $tuned_run)
    JOIN generated g ON g.prompt = a.prompt AND g.pos = a.pos
    GROUP BY r.layer, r.neuron, r.cosine
)
SELECT layer, neuron, cosine, base_mean, tuned_mean,
       tuned_mean - base_mean AS change, n_tokens
FROM means
ORDER BY cosine DESC
