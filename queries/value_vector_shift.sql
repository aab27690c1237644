-- name: value_vector_shift
-- answers: How do the value vectors of earlier layers move relative to δx of layer ℓ? Distribution of cos(δx^ℓ, δv_i^j) for every value vector of every layer j < ℓ.
-- paper: Figure 5 (and Figures 8-11: δx^12 ... δx^18); the paper's claim is that near ℓ most cosines are strongly negative
-- needs: actwh diff WH --base BASE --tuned MODEL; δx directions PREFIX.LAYER
-- param model: the tuned model
-- param layer: ℓ, the layer of δx (the paper: 19 of GPT-2 medium)
-- param prefix = "dx": the δx directions' name prefix
-- param bins = 40: histogram bins over [-1, 1]
WITH dx AS (SELECT vec::FLOAT[] AS v FROM directions WHERE name = $prefix || '.' || CAST($layer AS VARCHAR)),
cosines AS (
    SELECT d.layer AS value_layer, list_cosine_similarity(d.delta::FLOAT[], dx.v) AS c
    FROM value_vector_diffs d, dx
    WHERE d.model = $model AND d.layer < $layer AND d.delta_norm > 0
),
binned AS (
    SELECT value_layer, least(floor((c + 1) * $bins / 2), $bins - 1) AS bin, c FROM cosines
)
SELECT value_layer,
       -1 + (bin + 0.5) * 2 / $bins AS cosine,
       count(*) AS n,
       count(*) / sum(count(*)) OVER (PARTITION BY value_layer) AS proportion,
       sum(sum(c)) OVER (PARTITION BY value_layer) / sum(count(*)) OVER (PARTITION BY value_layer)
         AS layer_mean
FROM binned
GROUP BY value_layer, bin
ORDER BY value_layer, bin
