-- name: top_toxic_vectors
-- answers: Which MLP value vectors point most like a direction (the toxic probe), and which vocabulary tokens do they promote?
-- paper: Table 1 (MLP.v_770^19 and the other top MLP.v_Toxic of GPT-2 medium, with their top tokens)
-- needs: actwh vectors WH --model MODEL; the direction (actwh probe, or actwh directions add)
-- param model: the model whose value vectors are ranked
-- param direction = "toxic_probe": the direction to compare with (the model's own, else one of that name)
-- param k = 20: how many value vectors
WITH d AS (
    SELECT vec::FLOAT[] AS v FROM directions
    WHERE name = $direction ORDER BY (model = $model) DESC LIMIT 1
)
SELECT v.layer, v.neuron,
       list_cosine_similarity(v.vec::FLOAT[], d.v) AS cosine,
       v.norm, v.top_tokens
FROM value_vectors v, d
WHERE v.model = $model
ORDER BY cosine DESC
LIMIT $k
