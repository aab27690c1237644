-- name: neuron_histogram
-- answers: How is a neuron's coefficient m_i distributed over every stored token, in the base run and in the tuned run? Equal-width bins over the range of both runs; per run, the tokens in each bin and their share.
-- paper: Figure 5's activation histogram (GPT-2's toxic neurons fire less after DPO)
-- needs: the neuron tracked (--track-neurons) or its layer's mlp_post captured, in both runs
-- param base_run: the base run
-- param tuned_run = null: the tuned run (teacher-forced on the base run)
-- param layer: the neuron's layer
-- param neuron: the neuron's index
-- param bins = 40: number of bins
WITH acts AS (
    SELECT $base_run AS run, act FROM neuron_coefficients($base_run, $layer, $neuron)
    UNION ALL
    SELECT $tuned_run AS run, act FROM neuron_coefficients($tuned_run, $layer, $neuron)
),
range AS (SELECT min(act) AS lo, greatest(max(act) - min(act), 1e-12) AS width FROM acts),
binned AS (
    SELECT run, least(floor((act - lo) / width * $bins), $bins - 1)::INTEGER AS bin
    FROM acts CROSS JOIN range
)
SELECT b.run, b.bin, range.lo + b.bin * range.width / $bins AS bin_lo,
       range.lo + (b.bin + 1) * range.width / $bins AS bin_hi,
       count(*) AS tokens,
       count(*) / sum(count(*)) OVER (PARTITION BY b.run) AS share
FROM binned b CROSS JOIN range
GROUP BY b.run, b.bin, range.lo, range.width
ORDER BY b.run, b.bin
