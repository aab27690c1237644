-- name: value_vector_shift
-- answers: How do the value vectors of earlier layers move relative to δx of layer ℓ? For every value vector of every layer j < ℓ: the distribution of cos(δv_i, δx^ℓ) (raw), and of oriented_cos = sign(m̄_i)·cos(δv_i, δx^ℓ), where m̄_i is the neuron's mean coefficient over every token of δx's base run (δx's arm of prompts): what the change of its write m_i·δv_i does. aggregate_cos = cos(Σ_i m̄_i·δv_i, δx^ℓ) per layer j: does the layer's weight change, weighted by how its neurons fire, write along δx?
-- paper: Figure 5 (and Figures 8-11: δx^12 ... δx^18). The paper's claim is that near ℓ most raw cosines are strongly negative, while GPT-2's inactive neurons have small negative m (GELU), so −|m|·δv_i points along δx; oriented_cos and aggregate_cos measure that directly, for GELU and gated MLPs alike.
-- needs: actwh diff WH --base BASE --tuned MODEL; δx directions PREFIX.LAYER (actwh directions add WH PREFIX --delta BASE_RUN TUNED_RUN); the base run's neuron_stats (every run has them) for oriented_cos and aggregate_cos
-- param model: the tuned model
-- param layer: ℓ, the layer of δx (the paper: 19 of GPT-2 medium)
-- param prefix = "dx": the δx directions' name prefix
-- param bins = 40: histogram bins over [-1, 1]
WITH dx AS (
    SELECT vec::FLOAT[] AS v, json_extract_string(meta, '$.base_run') AS base_run,
           coalesce(json_extract_string(meta, '$.arm'), 'all') AS arm  -- 'all': δx before arms
    FROM direction_of($model, $prefix || '.' || CAST($layer AS VARCHAR))
),
means AS (SELECT * FROM mean_coefficients((SELECT base_run FROM dx), (SELECT arm FROM dx))),
cosines AS (
    SELECT d.layer AS value_layer, list_cosine_similarity(d.delta::FLOAT[], dx.v) AS c,
           sign(means.m) * list_cosine_similarity(d.delta::FLOAT[], dx.v) AS oc
    FROM value_vector_diffs d CROSS JOIN dx
    LEFT JOIN means ON means.layer = d.layer AND means.neuron = d.neuron
    WHERE d.model = $model AND d.layer < $layer AND d.delta_norm > 0
),
-- Σ_i m̄_i·δv_i per layer, one coordinate per row, against δx's coordinates.
terms AS (
    SELECT d.layer AS value_layer, generate_subscripts(d.delta::FLOAT[], 1) AS i,
           unnest(d.delta::FLOAT[]) * means.m AS x
    FROM value_vector_diffs d JOIN means ON means.layer = d.layer AND means.neuron = d.neuron
    WHERE d.model = $model AND d.layer < $layer
),
summed AS (SELECT value_layer, i, sum(x) AS s FROM terms GROUP BY value_layer, i),
dx_parts AS (SELECT generate_subscripts(v, 1) AS i, unnest(v) AS x FROM dx),
aggregate AS (
    SELECT value_layer, sum(s * x) / sqrt(sum(s * s) * sum(x * x)) AS aggregate_cos
    FROM summed JOIN dx_parts USING (i)
    GROUP BY value_layer
),
per_layer AS (
    SELECT value_layer, count(*) AS total, avg(c) AS layer_mean,
           count(oc) AS oriented_total, avg(oc) AS oriented_mean
    FROM cosines GROUP BY value_layer
),
raw AS (
    SELECT value_layer, least(floor((c + 1) * $bins / 2), $bins - 1) AS bin, count(*) AS n
    FROM cosines GROUP BY ALL
),
oriented AS (
    SELECT value_layer, least(floor((oc + 1) * $bins / 2), $bins - 1) AS bin, count(*) AS n
    FROM cosines WHERE oc IS NOT NULL GROUP BY ALL
)
SELECT value_layer,
       -1 + (bin + 0.5) * 2 / $bins AS cosine,
       coalesce(raw.n, 0) AS n,
       coalesce(raw.n, 0) / p.total AS proportion,
       p.layer_mean,
       coalesce(oriented.n, 0) AS oriented_n,
       coalesce(oriented.n, 0) / nullif(p.oriented_total, 0) AS oriented_proportion,
       p.oriented_mean,
       a.aggregate_cos
FROM raw FULL JOIN oriented USING (value_layer, bin)
JOIN per_layer p USING (value_layer)
LEFT JOIN aggregate a USING (value_layer)
ORDER BY value_layer, bin
