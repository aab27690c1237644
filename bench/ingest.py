"""(a) Ingestion with the default capture vs bare greedy generation of the same batches.

Default capture: tokens (with log-probs), generations, projections of resid_mid and resid_post
at every layer on every registered direction (here the toxic probe and four random directions),
and the coefficients of the 64 value vectors nearest the probe (``--track-neurons
toxic_probe:64``). The baseline is ``model.generate`` (greedy, 20 new tokens, KV cache) on exactly
the batches ingestion runs — same prompts, same order, same left padding — with nothing stored.

And full capture: the same plus the vectors of ``resid_mid`` and ``mlp_post`` at every layer
(``--capture resid_mid,mlp_post``, float16). And, to say where the difference goes, actwh's own
greedy loop with nothing hooked or stored: it makes one forward call per batch more than
``model.generate`` (the last generated token goes through the model too, so that its activations
are captured).

Budgets (docs/design.md): the default capture at most 5% over bare generation, full capture at most
10%, by CPU time per stored token. The variants are interleaved over ``--repeats`` repetitions
(a new random order each time) and each ratio is reported with its 95% paired bootstrap
interval, so the verdict says met, missed, or not resolvable with these repetitions. Run:
``python -m bench.ingest`` (``--repeats 8``: about 10 minutes on 2 cores).
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
from actwh.ingest.generate import Batch, greedy
from actwh.ingest.options import IngestOptions
from actwh.ingest.prompts import PromptSet, read_prompts, shipped_prompts
from actwh.ingest.registry import ensure_registered
from actwh.ingest.sequences import encode_prompts, plan_batches
from actwh.ingest.worker import ingest
from actwh.models.loading import load_model
from actwh.warehouse.directions import add_direction
from actwh.warehouse.store import Store
from bench.report import record, table


def padded_batches(loaded, prompts: PromptSet, generate: int, batch_size: int):
    """The batches ingestion would run (same order, same left padding), padded."""
    budget = loaded.adapter.context_length - generate
    sequences, _ = encode_prompts(loaded, prompts.prompts, budget)
    pad = loaded.tokenizer.pad_token_id
    for batch in plan_batches(sequences, batch_size):
        yield Batch.left_padded([s.ids for s in batch], pad, loaded.device)


def generated_batches(loaded, prompts: PromptSet, generate: int, batch_size: int):
    """Greedy ``model.generate`` over the batches ingestion would run; yields each batch's
    padded prompt and the generated ids."""
    pad, eos = loaded.tokenizer.pad_token_id, sorted(eos_ids(loaded))
    for padded in padded_batches(loaded, prompts, generate, batch_size):
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


def bare_generation(loaded, prompts: PromptSet, generate: int, batch_size: int) -> None:
    for _ in generated_batches(loaded, prompts, generate, batch_size):
        pass


def greedy_loop(loaded, prompts: PromptSet, generate: int, batch_size: int) -> None:
    """actwh's own greedy loop (:func:`~actwh.ingest.generate.greedy`) over the same batches,
    nothing hooked or stored: it also feeds the last generated token through the model (its
    activations are captured too), one forward call more per batch than ``model.generate``."""
    pad, eos = loaded.tokenizer.pad_token_id, eos_ids(loaded)
    for padded in padded_batches(loaded, prompts, generate, batch_size):
        greedy(loaded.model, padded, generate, eos, pad)


def measured(run) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process: user + system, all threads) of ``run()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def paired_interval(ratios: list[float], draws: int = 10_000) -> tuple[float, float, float]:
    """Geometric mean of paired ratios and its 95% bootstrap interval (over the pairs)."""
    logs = np.log(ratios)
    rng = np.random.default_rng(0)
    means = logs[rng.integers(0, len(logs), (draws, len(logs)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(np.exp(logs.mean())), float(np.exp(lo)), float(np.exp(hi))


def verdict(interval: tuple[float, float, float], budget: float) -> str:
    """Met when the whole interval is within the budget, missed when all of it is beyond,
    otherwise not resolvable with these repetitions."""
    _, lo, hi = interval
    if hi <= budget:
        return "met"
    if lo > budget:
        return "missed"
    return "not resolvable (the interval straddles the budget)"


VARIANTS = ("bare", "loop", "default", "full")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--prompts", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    loaded = load_model(args.model, device=args.device)
    shipped = read_prompts(shipped_prompts())
    prompts = PromptSet("bench", shipped.source, shipped.prompts[: args.prompts])
    times: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    tokens = 0
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.create(Path(tmp) / "wh")
        ensure_registered(store, loaded)
        rng = np.random.default_rng(0)
        for i, name in enumerate(["toxic_probe", "r1", "r2", "r3", "r4"]):
            vector = rng.standard_normal(loaded.adapter.d_model).astype(np.float32)
            add_direction(store, loaded.name, name, vector, kind="random", meta={"seed": i})
        bare_generation(loaded, PromptSet("warm", "", prompts.prompts[:8]), 20, 8)  # warm up

        def run(variant: str, repeat: int) -> None:
            nonlocal tokens
            if variant in ("bare", "loop"):
                (bare_generation if variant == "bare" else greedy_loop)(loaded, prompts, 20, 8)
                return
            options = IngestOptions(
                name=f"{variant}{repeat}",
                generate=20,
                track_neurons="toxic_probe:64",
                capture="resid_mid,mlp_post" if variant == "full" else "",
                progress=False,
            )
            tokens = ingest(str(store.root), loaded, prompts, options).n_tokens

        order = np.random.default_rng(1)
        for repeat in range(args.repeats):  # the variants interleaved, in a new order each time
            for variant in order.permutation(VARIANTS):
                name = str(variant)
                times[name].append(measured(lambda v=name, r=repeat: run(v, r)))
    record_results(args, loaded, prompts, tokens, times)


def ratios(times: dict, variant: str, over: str, k: int) -> tuple[float, float, float]:
    """The paired interval of ``variant`` ÷ ``over`` (``k``: 0 wall, 1 CPU)."""
    return paired_interval([t[k] / b[k] for t, b in zip(times[variant], times[over], strict=True)])


def record_results(args, loaded, prompts, tokens: int, times: dict) -> None:
    intervals = {
        (variant, kind): ratios(times, variant, "bare", k)
        for variant in ("loop", "default", "full")
        for k, kind in enumerate(("wall", "cpu"))
    }
    over_loop = {
        v: "{:.3f} [{:.3f}, {:.3f}]".format(*ratios(times, v, "loop", 1))
        for v in ("default", "full")
    }

    def row(variant: str, method: str) -> dict:
        walls = [w for w, _ in times[variant]]
        cpus = [c for _, c in times[variant]]
        out = {
            "method": method,
            "wall s (median)": f"{statistics.median(walls):.1f}",
            "CPU s (median)": f"{statistics.median(cpus):.1f}",
            "CPU ms per token": f"{1000 * statistics.median(cpus) / tokens:.1f}",
        }
        for kind in ("cpu", "wall"):
            if variant == "bare":
                out[f"{kind} ratio [95%]"] = "1"
            else:
                mean, lo, hi = intervals[(variant, kind)]
                out[f"{kind} ratio [95%]"] = f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"
        return out

    rows = [
        row("bare", "bare greedy generation (HF generate, same batches)"),
        row(
            "loop", "actwh's greedy loop alone (one call more per batch; nothing hooked or stored)"
        ),
        row("default", "actwh ingest, default capture"),
        row("full", "actwh ingest, full capture (+ resid_mid, mlp_post vectors, float16)"),
    ]
    runs = "; ".join(f"{v} " + ", ".join(f"{w:.1f}/{c:.1f}" for w, c in times[v]) for v in VARIANTS)
    body = (
        f"{args.model} on {loaded.device}, {len(prompts.prompts)} shipped prompts × 20 greedy "
        f"tokens, batch 8, {tokens:,} tokens stored per run; 5 directions × 2 sites × "
        f"{loaded.adapter.n_layers} layers of projections, 64 tracked neurons. {args.repeats} "
        "repetitions, the four variants interleaved in a random order each time; a ratio is "
        "the geometric mean of each repetition's variant ÷ its bare run, with a 95% bootstrap "
        "interval over the repetitions. CPU time is user + system of the process, all threads "
        f"(wall/CPU s per run: {runs}).\n\n"
        + table(rows)
        + "\n\nBudgets (docs/design.md), by CPU time: default capture ≤ 1.05× bare generation: "
        f"{verdict(intervals[('default', 'cpu')], 1.05)}; full capture ≤ 1.10×: "
        f"{verdict(intervals[('full', 'cpu')], 1.10)}. By wall time: default "
        f"{verdict(intervals[('default', 'wall')], 1.05)}; full "
        f"{verdict(intervals[('full', 'wall')], 1.10)}.\n\nWhere it goes, by CPU time: actwh's "
        "greedy loop itself (the extra forward call that captures the last generated token, "
        f"log-probabilities) is {'{:.3f} [{:.3f}, {:.3f}]'.format(*intervals[('loop', 'cpu')])}× "
        "bare generation; the capture and storage on top of that loop (hooks, the kinds' rows, "
        f"tokens and generations, the commit) are {over_loop['default']}× the loop for the "
        f"default capture and {over_loop['full']}× for the full one."
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
