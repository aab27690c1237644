"""(a) Ingestion with the default capture vs bare greedy generation of the same batches.

Default capture: tokens (with log-probs), generations, projections of resid_mid and resid_post
at every layer on every registered direction (here the toxic probe and four random directions),
and the coefficients of the 64 value vectors nearest the probe (``--track-neurons
toxic_probe:64``). The baseline is ``model.generate`` (greedy, 20 new tokens, KV cache) on exactly
the batches ingestion runs — same prompts, same order, same left padding — with nothing stored.

And full capture: the same plus the vectors of ``resid_mid`` and ``mlp_post`` at every layer
(``--capture resid_mid,mlp_post``, float16).

Budgets (DESIGN.md): the default capture at most 5% over bare generation, full capture at most
10%. Run: ``python -m bench.ingest``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from actwh.ingest.batches import eos_ids
from actwh.ingest.generate import Batch
from actwh.ingest.options import IngestOptions
from actwh.ingest.prompts import PromptSet, read_prompts, shipped_prompts
from actwh.ingest.registry import ensure_registered
from actwh.ingest.sequences import encode_prompts, plan_batches
from actwh.ingest.worker import ingest
from actwh.models.loading import load_model
from actwh.warehouse.directions import add_direction
from actwh.warehouse.store import Store
from bench.report import record, table


def generated_batches(loaded, prompts: PromptSet, generate: int, batch_size: int):
    """Greedy ``model.generate`` over the batches ingestion would run (same order, same left
    padding); yields each batch's padded prompt and the generated ids."""
    budget = loaded.adapter.context_length - generate
    sequences, _ = encode_prompts(loaded, prompts.prompts, budget)
    pad = loaded.tokenizer.pad_token_id
    eos = sorted(eos_ids(loaded))
    for batch in plan_batches(sequences, batch_size):
        padded = Batch.left_padded([s.ids for s in batch], pad, loaded.device)
        with torch.inference_mode():
            ids = loaded.model.generate(
                input_ids=padded.ids,
                attention_mask=padded.mask,
                max_new_tokens=generate,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=eos,
            )
        yield padded, ids


def bare_generation(loaded, prompts: PromptSet, generate: int, batch_size: int) -> float:
    started = time.perf_counter()
    for _ in generated_batches(loaded, prompts, generate, batch_size):
        pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--prompts", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    loaded = load_model(args.model, device=args.device)
    shipped = read_prompts(shipped_prompts())
    prompts = PromptSet("bench", shipped.source, shipped.prompts[: args.prompts])
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.create(Path(tmp) / "wh")
        ensure_registered(store, loaded)
        rng = np.random.default_rng(0)
        for i, name in enumerate(["toxic_probe", "r1", "r2", "r3", "r4"]):
            vector = rng.standard_normal(loaded.adapter.d_model).astype(np.float32)
            add_direction(store, loaded.name, name, vector, kind="random", meta={"seed": i})
        bare, captured, full, tokens = [], [], [], 0
        bare_generation(loaded, PromptSet("warm", "", prompts.prompts[:8]), 20, 8)  # warm up
        for repeat in range(args.repeats):
            bare.append(bare_generation(loaded, prompts, 20, 8))
            options = IngestOptions(
                name=f"run{repeat}", generate=20, track_neurons="toxic_probe:64", progress=False
            )
            started = time.perf_counter()
            summary = ingest(str(store.root), loaded, prompts, options)
            captured.append(time.perf_counter() - started)
            tokens = summary.n_tokens
            options.name, options.capture = f"full{repeat}", "resid_mid,mlp_post"
            started = time.perf_counter()
            ingest(str(store.root), loaded, prompts, options)
            full.append(time.perf_counter() - started)
    # On a shared machine noise only ever adds time, and it drifts over minutes: the fastest run
    # of each is one estimate of its cost, the median of each run's ratio to the bare run just
    # before it another.
    b, c, f = min(bare), min(captured), min(full)
    pc, pf = (
        statistics.median(x / y for x, y in zip(xs, bare, strict=True)) for xs in (captured, full)
    )

    def row(method: str, best: float, paired: float) -> dict:
        return {
            "method": method,
            "best s": f"{best:.1f}",
            "tokens/s (best)": f"{tokens / best:,.0f}",
            "relative (best)": f"{best / b:.2f}",
            "relative (median of pairs)": f"{paired:.2f}",
        }

    rows = [
        row("bare greedy generation (HF generate, same batches)", b, 1.0),
        row("actwh ingest, default capture", c, pc),
        row("actwh ingest, full capture (+ resid_mid, mlp_post vectors, float16)", f, pf),
    ]
    runs = [", ".join(f"{x:.1f}" for x in xs) for xs in (bare, captured, full)]

    def verdict(best: float, paired: float, budget: float) -> str:
        met = "met" if max(best / b, paired) <= budget else "NOT met"
        return (
            f"{met} ({(best / b - 1) * 100:+.0f}% best to best, {(paired - 1) * 100:+.0f}% paired)"
        )

    body = (
        f"{args.model} on {loaded.device}, {len(prompts.prompts)} shipped prompts × 20 greedy tokens, "
        f"batch 8, {tokens:,} tokens stored per run; 5 directions × 2 sites × "
        f"{loaded.adapter.n_layers} layers of projections, 64 tracked neurons; {args.repeats} "
        f"alternating runs each (bare {runs[0]} s; default {runs[1]} s; full {runs[2]} s).\n\n"
        + table(rows)
        + f"\n\nBudgets (DESIGN.md): default capture at most 5% over bare generation: "
        f"{verdict(c, pc, 1.05)}; full capture at most 10%: {verdict(f, pf, 1.10)}."
    )
    where = (
        loaded.device.type if args.model == "embedded" else f"{loaded.device.type}, {loaded.name}"
    )
    record(
        "ingest-" + where.replace(", ", "-"),
        f"(a) Ingestion overhead over bare generation ({where})",
        body,
    )


if __name__ == "__main__":
    main()
