-- name: residual_offset
-- answers: How large is the residual offset δx that DPO learned, layer by layer, and how much of it lies along a direction? δx is averaged over the prompts of one arm (arm: plain unless it was added with another), and the shift of the mean projection is over the same prompts.
-- paper: §5.2, Figures 3 and 4 (δx = x_DPO − x_GPT2 at resid_mid; the shift that keeps toxic value vectors from firing)
-- needs: δx directions PREFIX.LAYER (actwh directions add WH PREFIX --delta BASE_RUN TUNED_RUN) and projections on the direction in both runs
-- param prefix = "dx": the δx directions' name prefix
-- param direction = "toxic_probe": the direction to compare δx with (that of δx's model, else its nearest ancestor's)
WITH dx AS (
    SELECT CAST(split_part(name, '.', -1) AS INTEGER) AS layer, model, norm, vec::FLOAT[] AS v,
           json_extract_string(meta, '$.base_run') AS base_run,
           json_extract_string(meta, '$.tuned_run') AS tuned_run,
           json_extract_string(meta, '$.site') AS site,
           coalesce(json_extract_string(meta, '$.arm'), 'all') AS arm
    FROM directions
    WHERE kind = 'delta' AND name LIKE $prefix || '.%'
),
d AS (SELECT vec::FLOAT[] AS v, norm FROM direction_of((SELECT min(model) FROM dx), $direction)),
shift AS (
    SELECT dx.layer,
           avg(p.dot) FILTER (WHERE p.run = dx.tuned_run)
             - avg(p.dot) FILTER (WHERE p.run = dx.base_run) AS mean_dot_shift
    FROM dx JOIN projections p
      ON p.layer = dx.layer AND p.site = dx.site AND p.direction = $direction
     AND p.run IN (dx.base_run, dx.tuned_run)
    WHERE p.prompt IN (SELECT prompt FROM arm_prompts((SELECT min(base_run) FROM dx),
                                                      (SELECT min(arm) FROM dx)))
    GROUP BY dx.layer
)
SELECT dx.layer, dx.norm AS dx_norm,
       list_cosine_similarity(dx.v, d.v) AS cos_with_direction,
       shift.mean_dot_shift / d.norm AS shift_along_direction,
       dx.base_run, dx.tuned_run, dx.site, dx.arm
FROM dx CROSS JOIN d LEFT JOIN shift USING (layer)
ORDER BY dx.layer
