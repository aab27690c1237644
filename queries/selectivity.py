"""Which neurons write a direction *selectively* — more on toxic contexts than on clean ones?

A neuron that writes along the toxic probe everywhere (an encoding neuron, a large generic one) is
not a toxicity neuron, however high its cosine. Selectivity compares, per neuron, its mean write
along the direction w = m·⟨v, d̂⟩ over each prompt's generated tokens between prompts labelled
toxic and prompts labelled clean: the difference of the two means and its Welch t. The labels are
the run's continuation scores (``score:SCORER``: toxic when the score is at least ``threshold``)
or a field of the prompts (``FIELD:VALUE``: toxic when the prompt's ``FIELD`` is ``VALUE``, such as
``category:provocative`` for the shipped prompts).

Controls, computed with the same numbers:

- a permutation null: the labels shuffled among the prompts ``permutations`` times. A neuron's
  p-value is the share of shuffles whose |t| reaches its own; the count of neurons beyond
  |t| = ``t_cut`` is compared with that count under every shuffle (``selectivity_null``).
- split-half stability: the prompts split at random in two halves (each keeping its share of
  toxic prompts); the correlation across neurons of the two halves' selectivities.

The neurons read are those the run holds per token: its tracked neurons (``neuron_acts``) and every
neuron of the layers whose ``mlp_post`` it captured (``mlp_acts``).
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl

from actwh.errors import ActwhError, NotFound
from actwh.warehouse.arrays import column_to_numpy

_PARAMS = """-- param run: the run whose generated tokens are read (the base model's)
-- param direction = "toxic_probe": the direction (the run model's, else its nearest ancestor's)
-- param labels = "score:profanity": score:SCORER (the run's continuation scores, actwh score; a teacher-forced run's are its source run's) or FIELD:VALUE (toxic when the prompt's field FIELD is VALUE, e.g. category:provocative)
-- param threshold = 0.5: a score at least this is toxic (labels score:SCORER)
-- param arm = "plain": the prompts read: plain, an encoding (rot13, base64, leet), chat, or all
-- param tokens = "generated": the tokens of each prompt averaged over: generated, prompt, or all
-- param t_cut = 3.0: |t| beyond which a neuron counts as selective in the counts
-- param permutations = 200: label shuffles for the null
-- param seed = 0: the shuffles' and the split's random seed
"""

SELECTIVITY = (
    """
-- name: selectivity
-- answers: Which neurons write a direction more on toxic contexts than on clean ones? Per neuron (tracked, or of an mlp_post layer the run captured): its mean write along the direction m·⟨v, d̂⟩ over the generated tokens of toxic and of clean prompts, the difference (selectivity) and its Welch t, the share of label shuffles whose |t| reaches it (p_perm), and its selectivity in each of two random halves of the prompts. Sorted by t, most toward the direction first.
-- paper: a control the paper does not run (are MLP.v_Toxic selective for toxic contexts?)
-- needs: a run with tracked neurons or captured mlp_post; labels: actwh score WH RUN --scorer SCORER (labels score:SCORER), or prompts with a label field
"""
    + _PARAMS
)

SELECTIVITY_NULL = (
    """
-- name: selectivity_null
-- answers: Are there more selective neurons than chance gives? How many neurons have |t| > t_cut under the real labels (toward: t > t_cut), against the same count under label shuffles (mean, 95th percentile, and the share of shuffles reaching the real count), and the split-half correlation of the selectivities across neurons.
-- paper: a control the paper does not run
-- needs: as selectivity
"""
    + _PARAMS
)


def _labels(sql, run: str, labels: str, threshold: float, arm: str) -> pl.DataFrame:
    """``prompt, toxic`` for the run's prompts of ``arm`` that have a label."""
    kind, _, value = labels.partition(":")
    arm_prompts = "SELECT prompt FROM arm_prompts($run, $arm)"
    if kind == "score" and value:
        # A teacher-forced run holds its source run's continuations, so their scores label it.
        frame = sql(
            f"""WITH scored AS (
                    SELECT s.* FROM scores s JOIN runs r ON s.run IN (r.name, r.source_run)
                    WHERE r.name = $run AND s.scorer = $scorer
                    QUALIFY s.run = first(s.run ORDER BY s.run <> $run) OVER ()
                )
                SELECT prompt, score >= $threshold AS toxic FROM scored
                WHERE prompt IN ({arm_prompts})""",
            {"run": run, "scorer": value, "threshold": threshold, "arm": arm},
        )
        if frame.is_empty():
            scored = sql("SELECT DISTINCT scorer FROM scores WHERE run = $run", {"run": run})
            known = ", ".join(sorted(scored["scorer"])) or "none"
            raise NotFound(
                f"run {run!r} has no {value!r} scores (scored by: {known}); "
                f"score it with actwh score WH {run} --scorer {value}"
            )
        return frame
    if re.fullmatch(r"\w+", kind) and value:
        frame = sql(
            f"""SELECT p.prompt, json_extract_string(p.meta, '$.' || $field) AS value
                FROM prompts p JOIN runs r ON r.prompt_set = p.prompt_set
                WHERE r.name = $run AND p.prompt IN ({arm_prompts})""",
            {"run": run, "field": kind, "arm": arm},
        )
        if frame["value"].is_null().all():
            raise ActwhError(
                f"selectivity: labels {labels!r}: no prompt of run {run!r} in arm {arm!r} has a "
                f"field {kind!r}"
            )
        return frame.select("prompt", (pl.col("value") == value).fill_null(False).alias("toxic"))
    raise ActwhError(f"selectivity: labels {labels!r}: expected score:SCORER or FIELD:VALUE")


TOKENS = {"generated": "is_generated", "prompt": "NOT is_generated", "all": "true"}


def _writes(
    sql, run: str, direction: str, prompts: list[int], tokens: str
) -> tuple[np.ndarray, pl.DataFrame]:
    """Per prompt (rows, in ``prompts`` order) and neuron (columns): the mean write along the
    direction over the prompt's ``tokens``; and the neurons, ``layer, neuron, dot``."""
    if tokens not in TOKENS:
        raise ActwhError(f"selectivity: tokens {tokens!r}: expected {', '.join(TOKENS)}")
    model = sql("SELECT model FROM runs WHERE name = $run", {"run": run}).item()
    d = sql("SELECT vec, norm FROM direction_of($m, $d)", {"m": model, "d": direction})
    if d.is_empty():
        from actwh.warehouse.registry import unknown_direction

        known = sql("SELECT DISTINCT name FROM directions")["name"].to_list()
        raise unknown_direction(direction, model, known)
    unit = np.asarray(d["vec"][0], dtype=np.float64) / d["norm"][0]
    generated = f"SELECT prompt, pos FROM tokens WHERE run = $run AND {TOKENS[tokens]}"
    if not sql(f"SELECT count(*) > 0 FROM ({generated})", {"run": run}).item():
        raise NotFound(
            f"selectivity: run {run!r} has no {tokens} tokens; read tokens prompt or all instead"
        )
    tracked = sql(
        f"""SELECT a.layer, a.neuron, a.prompt, avg(a.act) AS m
            FROM neuron_acts a JOIN ({generated}) g USING (prompt, pos)
            WHERE a.run = $run GROUP BY ALL""",
        {"run": run},
    )
    blocks = [tracked.select("layer", "neuron", "prompt", "m")]
    captured = sql(
        "SELECT DISTINCT layer FROM mlp_acts WHERE run = $run ORDER BY layer", {"run": run}
    )["layer"].to_list()
    for layer in captured:
        rows = sql(
            f"""SELECT a.prompt, a.vec FROM mlp_acts a JOIN ({generated}) g USING (prompt, pos)
                WHERE a.run = $run AND a.layer = $layer ORDER BY a.prompt""",
            {"run": run, "layer": layer},
        )
        vectors = column_to_numpy(rows["vec"].to_arrow()).astype(np.float64)
        owner = rows["prompt"].to_numpy()
        found, first = np.unique(owner, return_index=True)
        sizes = np.diff(np.append(first, len(owner)))
        means = np.add.reduceat(vectors, first, axis=0) / sizes[:, None]
        already = set(tracked.filter(pl.col("layer") == layer)["neuron"].to_list())
        keep = [i for i in range(means.shape[1]) if i not in already]
        blocks.append(
            pl.DataFrame(
                {
                    "layer": np.full(len(found) * len(keep), layer, dtype=np.int16),
                    "neuron": np.tile(np.array(keep, dtype=np.int32), len(found)),
                    "prompt": np.repeat(found.astype(np.int32), len(keep)),
                    "m": means[:, keep].ravel(),
                }
            )
        )
    types = {"layer": pl.Int16, "neuron": pl.Int32, "prompt": pl.Int32}
    frame = pl.concat([b.cast(types) for b in blocks])
    if frame.is_empty():
        raise ActwhError(
            f"run {run!r} holds no neuron coefficients per token; ingest it with --track-neurons "
            "(e.g. toxic_probe:64) or --capture mlp_post"
        )
    neurons = frame.select("layer", "neuron").unique().sort("layer", "neuron")
    vectors = (
        sql("SELECT layer, neuron, vec FROM value_vectors WHERE model = $m", {"m": model})
        .join(neurons, on=["layer", "neuron"])
        .sort("layer", "neuron")
    )
    if vectors.height != neurons.height:
        raise ActwhError(
            f"value vectors of {model!r} are missing; run actwh index-vectors WH --model {model}"
        )
    dot = column_to_numpy(vectors["vec"].to_arrow()).astype(np.float64) @ unit
    neurons = neurons.with_columns(pl.Series("dot", dot), pl.int_range(pl.len()).alias("column"))
    index = pl.DataFrame({"prompt": prompts, "row": range(len(prompts))}).cast({"prompt": pl.Int32})
    cells = frame.join(neurons, on=["layer", "neuron"]).join(index, on="prompt")
    writes = np.full((len(prompts), neurons.height), np.nan)
    writes[cells["row"].to_numpy(), cells["column"].to_numpy()] = (
        cells["m"].to_numpy() * cells["dot"].to_numpy()
    )
    return writes, neurons.drop("column")


def _welch(writes: np.ndarray, toxic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column: mean(toxic rows) − mean(clean rows), and its Welch t (0 where undefined)."""
    a, b = writes[toxic], writes[~toxic]
    diff = a.mean(0) - b.mean(0)
    se = np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, diff / se, 0.0)
    return diff, t


def _compute(sql, *args) -> dict:
    """:func:`_computed` of ``args``, once per snapshot of the warehouse ``sql`` reads (a
    snapshot never changes: selectivity and selectivity_null read the same numbers, and the
    findings ask for both)."""
    snapshot = getattr(getattr(sql, "__self__", None), "snapshot", None)
    if snapshot is None:  # not a warehouse's sql: nothing to share
        return _computed(sql, *args)
    return snapshot.once(("selectivity", *args), lambda: _computed(sql, *args))


def _computed(
    sql, run, direction, labels, threshold, arm, tokens, t_cut, permutations, seed
) -> dict:
    labelled = _labels(sql, run, labels, threshold, arm).sort("prompt")
    prompts = labelled["prompt"].to_list()
    toxic = labelled["toxic"].to_numpy().astype(bool)
    writes, neurons = _writes(sql, run, direction, prompts, tokens)
    has = ~np.isnan(writes).any(axis=1)  # prompts that have such tokens
    writes, toxic = writes[has], toxic[has]
    n_toxic, n_clean = int(toxic.sum()), int((~toxic).sum())
    if min(n_toxic, n_clean) < 2:
        raise ActwhError(
            f"selectivity needs at least 2 toxic and 2 clean prompts in arm {arm!r} "
            f"({n_toxic} toxic, {n_clean} clean by labels {labels!r}, threshold {threshold:g})"
        )
    diff, t = _welch(writes, toxic)
    rng = np.random.default_rng(seed)
    reach = np.zeros(len(t))
    counts = np.zeros(permutations, dtype=np.int64)
    for k in range(permutations):
        _, t_null = _welch(writes, rng.permutation(toxic))
        reach += np.abs(t_null) >= np.abs(t)
        counts[k] = int((np.abs(t_null) > t_cut).sum())
    halves = np.zeros(len(toxic), dtype=bool)
    for group in (toxic, ~toxic):  # each half keeps its share of toxic prompts
        members = rng.permutation(np.flatnonzero(group))
        halves[members[: len(members) // 2]] = True
    first, second = (
        writes[half & toxic].mean(0) - writes[half & ~toxic].mean(0) for half in (halves, ~halves)
    )
    return {
        "neurons": neurons,
        "toxic_mean": writes[toxic].mean(0),
        "clean_mean": writes[~toxic].mean(0),
        "diff": diff,
        "t": t,
        "p_perm": (reach + 1) / (permutations + 1),
        "half_1": first,
        "half_2": second,
        "null_counts": counts,
        "n_toxic": n_toxic,
        "n_clean": n_clean,
    }


def selectivity(
    sql, run, direction, labels, threshold, arm, tokens, t_cut, permutations, seed
) -> pl.DataFrame:
    c = _compute(sql, run, direction, labels, threshold, arm, tokens, t_cut, permutations, seed)
    return (
        c["neurons"]
        .with_columns(
            pl.Series("toxic_write", c["toxic_mean"]),
            pl.Series("clean_write", c["clean_mean"]),
            pl.Series("selectivity", c["diff"]),
            pl.Series("t", c["t"]),
            pl.Series("p_perm", c["p_perm"]),
            pl.Series("selective", np.abs(c["t"]) > t_cut),
            pl.Series("half_1", c["half_1"]),
            pl.Series("half_2", c["half_2"]),
            pl.lit(c["n_toxic"]).alias("n_toxic"),
            pl.lit(c["n_clean"]).alias("n_clean"),
        )
        .rename({"dot": "dot_with_direction"})
        .sort("t", descending=True)
    )


def selectivity_null(
    sql, run, direction, labels, threshold, arm, tokens, t_cut, permutations, seed
) -> pl.DataFrame:
    c = _compute(sql, run, direction, labels, threshold, arm, tokens, t_cut, permutations, seed)
    t, counts = c["t"], c["null_counts"]
    real = int((np.abs(t) > t_cut).sum())
    ok = ~np.isnan(c["half_1"]) & ~np.isnan(c["half_2"])
    split = float(np.corrcoef(c["half_1"][ok], c["half_2"][ok])[0, 1]) if ok.sum() > 2 else None
    return pl.DataFrame(
        [
            {
                "neurons": len(t),
                "n_toxic": c["n_toxic"],
                "n_clean": c["n_clean"],
                "selective": real,
                "toward": int((t > t_cut).sum()),
                "away": int((t < -t_cut).sum()),
                "null_mean": float(counts.mean()),
                "null_p95": float(np.percentile(counts, 95)),
                "null_p": float((1 + (counts >= real).sum()) / (len(counts) + 1)),
                "split_half_r": split,
                "permutations": len(counts),
            }
        ]
    )


ANALYSES = [(SELECTIVITY, selectivity), (SELECTIVITY_NULL, selectivity_null)]
