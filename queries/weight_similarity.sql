-- name: weight_similarity
-- answers: How much did the weights move in tuning? Per part of the model: the lowest and mean cosine between base and tuned tensors, and the size of the change.
-- paper: §5.1 ("every parameter ... has a cosine similarity score greater than 0.99 and on average a norm difference less than 1e-5")
-- needs: actwh diff WH --base BASE --tuned MODEL
-- param model: the tuned model
SELECT CASE
         WHEN parameter LIKE '%lm_head%' THEN 'unembedding'
         WHEN parameter LIKE '%wte%' OR parameter LIKE '%embed_tokens%' THEN 'embedding'
         WHEN parameter LIKE '%wpe%' THEN 'position embedding'
         WHEN parameter LIKE '%mlp%' THEN 'mlp'
         WHEN parameter LIKE '%attn%' THEN 'attention'
         WHEN parameter LIKE '%ln%' OR parameter LIKE '%norm%' THEN 'norm'
         ELSE 'other'
       END AS part,
       count(*) AS tensors,
       CAST(sum(numel) AS BIGINT) AS parameters,
       min(cosine) AS min_cosine,
       avg(cosine) AS mean_cosine,
       count(*) FILTER (WHERE cosine < 0.99) AS below_0_99,
       avg(norm_diff) AS mean_norm_diff,
       max(norm_diff / nullif(norm_base, 0)) AS max_relative_diff,
       avg(mean_abs_diff) AS mean_abs_diff
FROM weight_diffs
WHERE model = $model
GROUP BY part
ORDER BY min_cosine
