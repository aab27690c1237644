-- name: activation_drop
-- answers: Do the neurons that write a direction (the toxic probe) write less of it after DPO? For the top-N tracked neurons, over generated tokens, base run vs tuned run on the same tokens: the mean coefficient m_i and the mean write along the direction, mean(m_i)·⟨v_i, d̂⟩. Neurons are ranked by write_cosine, the cosine of their mean write with the direction (for GPT-2: of the value vector, as in the paper; for a gated MLP: oriented by the sign of the base run's mean coefficient). The total over every tracked neuron: query tracked_write.
-- paper: Figure 2 (mean activation of five top MLP.v_Toxic, GPT2 vs GPT2_DPO, over 20 greedy tokens of 1,199 prompts)
-- needs: a base run ingested with --track-neurons (e.g. toxic_probe:64); the tuned run with --teacher-force BASE_RUN and the same --track-neurons; actwh vectors for the base model (and actwh diff for the tuned model's own value vectors)
-- param base_run: the base model's run
-- param tuned_run: the tuned model's run over the same tokens
-- param direction = "toxic_probe": the direction (the base model's, else its nearest ancestor's)
-- param n = 5: how many neurons
SELECT layer, neuron, cosine, base_mean, tuned_mean, tuned_mean - base_mean AS change, n_tokens,
       write_cosine, base_write, tuned_write
FROM tracked_writes($base_run, $tuned_run, $direction)
ORDER BY write_cosine DESC, layer, neuron
LIMIT $n
