-- name: top_toxic_vectors
-- answers: Which MLP value vectors can write most along a direction (the toxic probe), and which vocabulary tokens do they promote when they do? A GELU neuron (GPT-2) writes +v_i, so the ranking is by cosine (the paper's); a gated neuron writes ±v_i, so by |cosine|, with sign the sign of m_i that writes toward the direction and top_tokens those of sign·v_i. Given a run, how each neuron fires there (generated tokens): frac_pos (share with m > 0), mean_pos and mean_neg (means of max(m, 0), min(m, 0)) and mean_write (mean of m·⟨v, d̂⟩).
-- paper: Table 1 (MLP.v_770^19 and the other top MLP.v_Toxic of GPT-2 medium, with their top tokens); Table 6 for Llama-2
-- needs: actwh index-vectors WH --model MODEL; the direction (actwh train-probe, or actwh directions add); for run, any run of the model or a related one
-- param model: the model whose value vectors are ranked
-- param direction = "toxic_probe": the direction (the model's own, else its nearest ancestor's)
-- param k = 20: how many value vectors
-- param run = null: a run whose coefficients to show (null: none)
WITH d AS (SELECT vec::FLOAT[] AS v FROM direction_of($model, $direction)),
scored AS (
    SELECT v.layer, v.neuron, list_cosine_similarity(v.vec::FLOAT[], d.v) AS cosine,
           v.vec, v.norm, v.top_tokens, v.bottom_tokens
    FROM value_vectors v CROSS JOIN d
    WHERE v.model = $model
),
top AS (
    SELECT *, reach_cos(cosine, (SELECT mlp_gated FROM models WHERE name = $model)) AS reach
    FROM scored ORDER BY reach DESC, layer, neuron LIMIT $k
)
SELECT t.layer, t.neuron, t.cosine, CAST(if(t.cosine < 0, -1, 1) AS TINYINT) AS sign, t.norm,
       coalesce(vector_tokens($model, t.vec, if(t.cosine < 0, -1, 1), 10),
                if(t.cosine < 0, t.bottom_tokens, t.top_tokens)) AS top_tokens,
       s.frac_pos, s.mean_pos, s.mean_neg, s.mean * t.norm * t.cosine AS mean_write
FROM top t LEFT JOIN neuron_means($run) s USING (layer, neuron)
ORDER BY t.reach DESC, t.layer, t.neuron
