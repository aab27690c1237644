"""The logit lens's target tokens when ``--logit-lens K`` is given without ``--target-tokens``.

One rule, the demo's (so that Figure 1 tracks tokens the model says when it is toxic), in order:

1. a resumed run keeps the tokens it chose when it started; a teacher-forced run takes those of
   the run it replays (a pair compares the same tokens);
2. the first tokens of the model's evaluated continuations scored toxic (named query
   ``toxic_tokens`` on its first evaluation run with ``profanity`` scores: ``actwh evaluate``);
3. else the word-start tokens the toxic probe's direction reads out most (through the final
   norm and the unembedding, as `directions show` reads them), where the model has the probe;
4. else none: the run stores the top-K lens only, and says so.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from actwh.ingest.options import RunConfig
from actwh.models.loading import LoadedModel
from actwh.models.value_vectors import top_tokens
from actwh.queries.loader import named_query
from actwh.warehouse.layout import PROBE
from actwh.warehouse.reader import Snapshot
from actwh.warehouse.store import Store

N_TARGETS = 3
SCORER = "profanity"  # the demo's: the scorer that chooses the preference pairs
WORD_START = re.compile(r"^\s.*[^\W_]")  # as toxic_tokens: a token that starts a word


def default_targets(
    store: Store | None,
    loaded: LoadedModel,
    run: str,
    replayed: dict | None,
    directions: dict[str, np.ndarray],
) -> tuple[list[int], str]:
    """The target token ids for run ``run`` of ``loaded`` and how they were chosen."""
    previous = store.catalog.get("runs", name=run) if store is not None else None
    if previous is not None:
        return RunConfig.of(previous["config"]).target_tokens, "as when the run started"
    if replayed is not None:
        return RunConfig.of(replayed["config"]).target_tokens, f"those of run {replayed['name']}"
    said = _said_when_toxic(store, loaded.name) if store is not None else []
    if said:
        return said, "the first tokens of its evaluated continuations scored toxic"
    if PROBE in directions:
        vector = torch.as_tensor(np.asarray(directions[PROBE], dtype=np.float32))[None]
        ids = top_tokens(loaded.adapter, vector, 50, unembed="final_norm")[0][0].tolist()
        words = [i for i in ids if WORD_START.match(str(loaded.tokenizer.decode([i])))]
        return words[:N_TARGETS], f"the tokens {PROBE} reads out most"
    return [], "none (no evaluation of the model, no toxic_probe; give --target-tokens)"


def _said_when_toxic(store: Store, model: str) -> list[int]:
    """toxic_tokens' first tokens on the model's first evaluation run scored by SCORER."""
    snapshot = Snapshot(store)
    try:
        found = snapshot.execute(
            "select min(r.name) as run from runs r join scores s on s.run = r.name "
            "where r.model = $m and r.name like 'eval.%' and r.status = 'complete' "
            "and s.scorer = $s",
            {"m": model, "s": SCORER},
        ).to_pylist()[0]["run"]
        if found is None:
            return []
        named = named_query("toxic_tokens")
        params = named.bind({"run": found, "scorer": SCORER, "n": N_TARGETS})
        rows = snapshot.execute(named.sql, params).to_pylist()
    finally:
        snapshot.close()
    return [r["token_id"] for r in rows]
