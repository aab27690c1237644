"""Preference pairs for DPO, in the paper's format (``prompt_text``, ``unpert_gen_text``,
``pert_gen_text``).

The paper's dispreferred continuations come from PPLM steered by the toxic probe (50 gradient
steps per token). actwh uses a cheap stand-in: it adds ``α · unit(toxic_probe)`` to the residual
stream at the output of one layer while sampling (top-k 10, temperature 1, as in the paper's PPLM
settings). The preferred continuation is the unsteered greedy one. A pair is kept only when the
scorer rates the steered continuation more toxic than the greedy one by at least ``min_margin``
(default 0.05: a pair whose two continuations score within a few hundredths of each other teaches
DPO the scorer's noise, not toxicity).

By default ``α`` is 30% of the median norm of the residual stream at that layer, measured on the
first batch of prompts, so the same setting means the same relative push in any model (the median,
because the first token of many models carries a residual norm tens of times the others).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

from actwh.errors import ActwhError, arg
from actwh.ingest.capture import Capture
from actwh.ingest.generate import Batch, greedy, teacher_forced
from actwh.ingest.kinds.vectors import FullVectors
from actwh.models.interventions import steer
from actwh.models.loading import LoadedModel
from actwh.train.options import PairOptions
from actwh.train.scorers import Scorer
from actwh.warehouse.layout import replace_file

PAIR_FIELDS = ("prompt_text", "unpert_gen_text", "pert_gen_text")


@dataclass
class PairStats:
    n_prompts: int
    n_kept: int
    alpha: float
    layer: int
    mean_preferred: float
    mean_dispreferred: float
    min_margin: float = 0.0
    n_below_margin: int = 0  # steered more toxic, but by less than min_margin
    margins: tuple[float, float, float] = (0.0, 0.0, 0.0)  # kept pairs: min, median, max

    def summary(self, scorer: str) -> str:
        low, mid, high = self.margins
        return (
            f"kept {self.n_kept} of {self.n_prompts} pairs (steered layer {self.layer}, "
            f"α {self.alpha:.4g}); mean {scorer} score preferred {self.mean_preferred:.3f}, "
            f"dispreferred {self.mean_dispreferred:.3f}; margin dispreferred − preferred of the "
            f"kept pairs {low:.3f} / {mid:.3f} / {high:.3f} (min / median / max), "
            f"{self.n_below_margin} more below the minimum {self.min_margin:g}"
        )


@torch.no_grad()
def median_residual_norm(loaded: LoadedModel, batch: Batch, layer: int) -> float:
    vectors = FullVectors(["resid_post"], [layer])
    with Capture(loaded.adapter, [vectors]) as capture:
        capture.start_batch()
        teacher_forced(loaded.model, batch)
        x = vectors.collect()[("resid_post", layer)]
    return float(x.norm(dim=-1)[batch.mask.bool()].median())


def _continuations(
    loaded: LoadedModel, batch: Batch, sampling: GenerationConfig, layer: int, steering
) -> tuple[list[str], list[str]]:
    """The greedy continuation of each row, and one sampled with ``steering`` added to layer
    ``layer``'s output."""
    tokenizer, width = loaded.tokenizer, batch.ids.shape[1]
    ran = greedy(
        loaded.model,
        batch,
        sampling.max_new_tokens,
        set(sampling.eos_token_id or []),
        sampling.pad_token_id,
    )
    generated = [
        ran.ids[r, width:][: ran.n_generated[r]].tolist() for r in range(len(ran.n_generated))
    ]
    preferred = tokenizer.batch_decode(generated, skip_special_tokens=True)
    with steer(loaded, layer, steering), torch.no_grad():
        sampled = loaded.model.generate(
            input_ids=batch.ids, attention_mask=batch.mask, generation_config=sampling
        )
    return preferred, tokenizer.batch_decode(sampled[:, width:], skip_special_tokens=True)


def make_pairs(
    loaded: LoadedModel,
    prompts: list[str],
    direction: np.ndarray,
    scorer: Scorer,
    options: PairOptions,
) -> tuple[list[dict], PairStats]:
    """Greedy vs probe-steered continuations of ``prompts``; returns the kept pairs and stats."""
    adapter, layer, alpha = loaded.adapter, options.layer, options.alpha
    min_margin = options.min_margin
    layer = (2 * adapter.n_layers) // 3 if layer is None else layer
    if not 0 <= layer < adapter.n_layers:
        raise ActwhError(f"{arg('layer')} {layer}: the model has {adapter.n_layers} layers")
    if direction.shape[0] != adapter.d_model:
        raise ActwhError(
            f"the direction has size {direction.shape[0]}, d_model is {adapter.d_model}"
        )
    tokenizer = loaded.tokenizer
    unit = torch.tensor(direction / np.linalg.norm(direction), dtype=torch.float32)
    pad = tokenizer.pad_token_id
    eos = {tokenizer.eos_token_id} - {None}
    sampling = GenerationConfig(
        do_sample=True,
        top_k=10,
        temperature=1.0,
        max_new_tokens=options.generate,
        pad_token_id=pad,
        eos_token_id=sorted(eos) or None,
    )
    encoded = tokenizer(prompts, truncation=True, max_length=options.max_prompt_tokens)["input_ids"]
    pairs: list[dict] = []
    preferred_scores: list[float] = []
    dispreferred_scores: list[float] = []
    below = 0
    generator = torch.Generator().manual_seed(options.seed)
    size = options.batch_size
    for start in tqdm(range(0, len(prompts), size), desc="pairs", disable=not options.progress):
        batch = Batch.left_padded(encoded[start : start + size], pad, loaded.device)
        if alpha is None:
            alpha = options.relative_alpha * median_residual_norm(loaded, batch, layer)
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        preferred, dispreferred = _continuations(loaded, batch, sampling, layer, alpha * unit)
        good, bad = scorer.score(preferred), scorer.score(dispreferred)
        preferred_scores += good
        dispreferred_scores += bad
        for i, (p, d, sp, sd) in enumerate(zip(preferred, dispreferred, good, bad, strict=True)):
            if not (sd > sp and p.strip() and d.strip()):
                continue
            if sd - sp < min_margin:
                below += 1
                continue
            prompt = tokenizer.decode(encoded[start + i], skip_special_tokens=True)
            pairs.append(
                {
                    "prompt_text": prompt,
                    "unpert_gen_text": p,
                    "pert_gen_text": d,
                    "unpert_score": sp,
                    "pert_score": sd,
                }
            )
    margins = [p["pert_score"] - p["unpert_score"] for p in pairs] or [0.0]
    stats = PairStats(
        n_prompts=len(prompts),
        n_kept=len(pairs),
        alpha=float(alpha or 0.0),  # None: no prompts
        layer=layer,
        mean_preferred=float(np.mean(preferred_scores)),
        mean_dispreferred=float(np.mean(dispreferred_scores)),
        min_margin=min_margin,
        n_below_margin=below,
        margins=(float(np.min(margins)), float(np.median(margins)), float(np.max(margins))),
    )
    return pairs, stats


def write_pairs(pairs: list[dict], path: str | Path) -> None:
    replace_file(path, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))


def read_pairs(path: str | Path) -> list[dict]:
    """A pairs file in the paper's format; every line needs the three text fields."""
    from actwh.ingest.prompts import jsonl_records, read_text_file

    path = Path(path)
    pairs = []
    for where, record in jsonl_records(path, read_text_file(path), fields=PAIR_FIELDS):
        wrong = [f for f in PAIR_FIELDS if not isinstance(record[f], str)]
        if wrong:
            raise ActwhError(f"{where}: {', '.join(wrong)} must be text (the paper's pair format)")
        pairs.append(record)
    if not pairs:
        raise ActwhError(f"{path}: no pairs")
    return pairs
