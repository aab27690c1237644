"""The names the study gives what it makes: runs, variants, seeds' models and directions. The
demo (:mod:`actwh.study.demo`) makes them and the findings (:mod:`actwh.study.findings`) read
them, so both take them from here."""

from __future__ import annotations

from actwh.warehouse.layout import PROBE

DIRECTION = PROBE  # the toxicity probe the study trains (step 2) and reads everywhere
CONTROL = "unaligned-control"
LAYER_RUN = "base.last-layer"  # the base model teacher-forced on base: mlp_post of its last layer
SELECTIVE = "selective"  # the un-aligned variant whose keys are chosen by selectivity


def unaligned_names(scale: float, paper_scale: float, keys: str = "cosine") -> tuple[str, str]:
    """The un-aligned variant scaling its keys by ``scale`` and its control: ``unaligned`` and
    ``unaligned-control`` at the paper's scale, ``unaligned.x2`` ... elsewhere in the sweep, and
    ``unaligned.selective`` for keys chosen by selectivity."""
    tail = (f".x{scale:g}" if scale != paper_scale else "") + (
        f".{SELECTIVE}" if keys != "cosine" else ""
    )
    return f"unaligned{tail}", f"{CONTROL}{tail}"


def seed_names(seed: int) -> dict[str, str]:
    """What seed k's pairs → DPO → paired run are called; seed 0 is the study's own. The DPO
    model's run (teacher-forced on ``base``) has the model's name; δx is directions DX.LAYER."""
    if seed == 0:
        return {"pairs": "pairs.jsonl", "dir": "dpo-model", "model": "dpo", "dx": "dx"}
    return {
        "pairs": f"pairs-seed{seed}.jsonl",
        "dir": f"dpo-model-seed{seed}",
        "model": f"dpo.seed{seed}",
        "dx": f"dx_seed{seed}",  # not "dx.seed1": the study's δx are every "dx.%"
    }
