"""(i) The capture's cost per forward call, before and after issue 30, measured in one run.

A batch makes one forward call for its prompt and one per generated token; every call runs every
hook the capture registered. On a CPU a forward call takes tens of milliseconds and this cost
hides; on a GPU it takes a few, and a fixed Python cost per hook per call does not shrink with it.

Two ways of capturing, each for the default capture (projections of resid_mid and resid_post on 5
directions at every layer, 64 tracked neurons, the neuron statistics) and the full one (also the
vectors of resid_mid and mlp_post):

* **before** (:class:`~actwh.ingest.capture.PerSiteCapture`): one hook per site and layer, each
  kind's work on the tensor (the projections' matmul and norm) done in the hook at every call;
* **after** (:class:`~actwh.ingest.capture.Capture`): one hook per module, the hooks only keep,
  the work runs once per batch over every layer and call.

A batch here is the shape ingestion runs: 8 prompts of 16 tokens, then 20 one-token calls (no KV
cache: a call's fixed costs dominate), then the kinds' rows. Measured two ways, interleaved over
``--repeats`` rounds (medians):

* **alone**: the capture's hooks registered on stand-in modules that return a tensor of the
  right shape and compute nothing, called as the model would call them, plus the kinds' rows at
  the batch's end — the capture's own cost per forward call, precise on any device;
* **in the model**: the same batch through the real model, against the bare model — on a CPU
  within the noise of a forward call; on a GPU the ratio that matters (bench/gpu.sh).

Run: ``python -m bench.hooks`` (``--model DIR --device cuda`` in bench/gpu.sh).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch import nn

from bench.report import record, table

PROMPT, STEPS, BATCH = 16, 20, 8  # a batch: 8 prompts of 16 tokens, 20 generated tokens


def capturing(adapter, directions: dict[str, np.ndarray], capture: list[str]):
    """What the default capture reads (``capture``: sites whose vectors are stored besides)."""
    from actwh.ingest.kinds.base import Capturing
    from actwh.ingest.options import IngestOptions, RunConfig

    rng = np.random.default_rng(0)
    tracked: dict[int, list[int]] = {}
    for layer, neuron in zip(
        rng.integers(0, adapter.n_layers, 64), rng.integers(0, adapter.d_mlp, 64), strict=True
    ):
        tracked.setdefault(int(layer), []).append(int(neuron))
    layers = list(range(adapter.n_layers))
    project = [adapter.mlp_reads, "resid_post"]  # the default of --project
    config = RunConfig(
        IngestOptions(), layers, capture, project, sorted(directions), track_neurons=tracked
    )
    return Capturing(adapter, config, directions)


class StandIn(nn.Module):
    """A module that returns a fixed tensor: what a hook on it costs, without the model."""

    def __init__(self, output: torch.Tensor):
        super().__init__()
        self.output = output

    def forward(self, x):
        return self.output


class Cycle:
    """One batch of calls (a prompt call, then ``STEPS`` one-token calls) and the kinds' rows,
    through the real model or the capture's stand-ins."""

    def __init__(self, loaded, capture_class, capturing):
        from actwh.ingest.generate import Ran
        from actwh.ingest.kinds.base import RanBatch
        from actwh.ingest.kinds.registry import kinds_for
        from actwh.ingest.rows import Flat, TokenText

        self.loaded, self.device = loaded, loaded.device
        self.capture = (
            None if capturing is None else capture_class(loaded.adapter, kinds_for(capturing))
        )
        width = PROMPT + STEPS
        ids = torch.zeros(BATCH, width, dtype=torch.long, device=self.device)
        valid = torch.ones(BATCH, width, dtype=torch.bool, device=self.device)
        generated = valid.clone()
        generated[:, :PROMPT] = False
        ran = Ran(ids, valid, generated, None, [STEPS] * BATCH, [False] * BATCH)
        prompts = list(range(BATCH))
        self.last = torch.full((BATCH,), PROMPT - 1, device=self.device)
        text = TokenText(loaded.tokenizer)
        self.batch = RanBatch(ran, Flat.of(ran, prompts), prompts, self.last, text)
        vocab = loaded.tokenizer.vocab_size
        self.inputs = [torch.randint(0, vocab, (BATCH, PROMPT), device=self.device)] + [
            torch.randint(0, vocab, (BATCH, 1), device=self.device) for _ in range(STEPS)
        ]
        self.unhooked: list[tuple[StandIn, int]] = []  # the same calls without the hooks
        self.stand_ins = [] if self.capture is None else self._stand_ins()

    def _stand_ins(self) -> list[tuple[StandIn, int]]:
        """A stand-in per hooked module (its hook registered on it), with its input's width."""
        adapter = self.loaded.adapter
        width = {"mlp_post": adapter.d_mlp}
        dims: dict[int, dict[str, int]] = {}
        for site, layer in self.capture.readers:
            module, where = adapter.hook_point(site, layer)
            dims.setdefault(id(module), {})[where] = width.get(site, adapter.d_model)
        made = []
        for module, kind, hook in self.capture.hooks():
            d = dims[id(module)]
            d_in, d_out = d.get("input", d.get("output")), d.get("output", d.get("input"))
            tensors = {t: torch.randn(BATCH, t, d_out, device=self.device) for t in (PROMPT, 1)}
            stand = StandIn(tensors[PROMPT])
            stand.tensors = tensors
            unhooked = StandIn(tensors[PROMPT])
            unhooked.tensors = tensors
            if kind == "pre":
                stand.register_forward_pre_hook(hook, with_kwargs=True)
            else:
                stand.register_forward_hook(hook, with_kwargs=True)
            made.append((stand, d_in))
            self.unhooked.append((unhooked, d_in))
        return made

    def _rows(self) -> None:
        for kind in self.capture.kinds:
            for _ in kind.rows(self.batch):
                pass

    def alone(self) -> tuple[float, float]:
        """Seconds of the capture's hooks on stand-ins for a batch's calls (less the same calls
        without hooks), and of its rows."""
        inputs = {
            (d, t): torch.randn(BATCH, t, d, device=self.device)
            for _, d in self.stand_ins
            for t in (PROMPT, 1)
        }

        def calls(stand_ins) -> float:
            _sync(self.device)
            started = time.perf_counter()
            for call in range(1 + STEPS):
                t = PROMPT if call == 0 else 1
                for stand, d in stand_ins:
                    stand.output = stand.tensors[t]
                    stand(inputs[(d, t)])
            _sync(self.device)
            return time.perf_counter() - started

        with torch.inference_mode():  # as ingestion runs them
            frame = calls(self.unhooked)
            self.capture.start_batch(self.last)
            hooked = calls(self.stand_ins)
            started = time.perf_counter()
            self._rows()
            _sync(self.device)
        return hooked - frame, time.perf_counter() - started

    def in_model(self) -> float:
        """Seconds of a batch's calls through the model (with the capture's hooks, if any)."""
        model = self.loaded.model
        _sync(self.device)
        started = time.perf_counter()
        with torch.inference_mode():
            if self.capture is None:
                for ids in self.inputs:
                    model(input_ids=ids, use_cache=False)
            else:
                with self.capture:
                    self.capture.start_batch(self.last)
                    for ids in self.inputs:
                        model(input_ids=ids, use_cache=False)
                    self._rows()
        _sync(self.device)
        return time.perf_counter() - started


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    from actwh.ingest.capture import Capture, PerSiteCapture
    from actwh.models.loading import load_model

    loaded = load_model(args.model, device=args.device)
    adapter = loaded.adapter
    rng = np.random.default_rng(1)
    directions = {
        f"d{i}": rng.standard_normal(adapter.d_model).astype(np.float32) for i in range(5)
    }
    variants = {"bare": Cycle(loaded, None, None)}
    for name, sites in (("default", []), ("full", [adapter.mlp_reads, "mlp_post"])):
        for when, capture_class in (("before", PerSiteCapture), ("after", Capture)):
            variants[f"{name}, {when}"] = Cycle(
                loaded, capture_class, capturing(adapter, directions, sites)
            )
    times: dict[str, dict[str, list]] = {v: {"alone": [], "model": []} for v in variants}
    for cycle in variants.values():  # warm up
        cycle.in_model()
        if cycle.capture is not None:
            cycle.alone()
    order = np.random.default_rng(2)
    for _ in range(args.repeats):
        for name in order.permutation(list(variants)):
            cycle = variants[str(name)]
            times[name]["model"].append(cycle.in_model())
            if cycle.capture is not None:
                times[name]["alone"].append(cycle.alone())
    calls = 1 + STEPS
    bare = statistics.median(times["bare"]["model"])
    rows, per_call = [], {}
    for name, cycle in variants.items():
        model = statistics.median(times[name]["model"])
        row = {"capture": name, "hooks": 0 if cycle.capture is None else len(cycle.stand_ins)}
        if cycle.capture is None:
            row |= {"hooks: µs per call": "", "rows: ms per batch": "", "alone ÷ bare": ""}
        else:
            hooks = statistics.median(h for h, _ in times[name]["alone"])
            rows_s = statistics.median(r for _, r in times[name]["alone"])
            per_call[name] = hooks / calls * 1e6
            row["hooks: µs per call"] = f"{per_call[name]:,.0f}"
            row["rows: ms per batch"] = f"{rows_s * 1e3:,.1f}"
            row["alone ÷ bare"] = f"{(hooks + rows_s) / bare:.4f}"
        row["in the model: ms per call"] = f"{model / calls * 1e3:,.2f}"
        row["in the model ÷ bare"] = "1" if cycle.capture is None else f"{model / bare:.3f}"
        rows.append(row)
    per_layer = {
        when: per_call[f"default, {when}"] / adapter.n_layers for when in ("before", "after")
    }
    scaled = "; ".join(
        f"{label} ({n} layers): {per_layer['before'] * n:,.0f} µs before, "
        f"{per_layer['after'] * n:,.0f} µs after"
        for label, n in (("GPT-2 medium", 24), ("an 8B Llama", 32))
    )
    body = (
        f"{loaded.name} on {loaded.device} ({adapter.n_layers} layers). A batch: {BATCH} prompts "
        f"of {PROMPT} tokens, then {STEPS} one-token calls (no KV cache), then the kinds' rows; "
        f"median of {args.repeats} interleaved rounds. *alone*: the capture's hooks on stand-in "
        "modules that compute nothing (per forward call, less the same calls without hooks), and "
        "the kinds' rows at the batch's end "
        "(per batch; the projections and statistics run there now); *in the model*: the same "
        "batch through the model, per call.\n\n"
        + table(rows)
        + "\n\nThe default capture's hooks per forward call, scaled by layers to other models "
        f"on this host: {scaled}. Divide by a forward call's time on a device for the share it "
        "adds there (bench/gpu.sh measures the in-model ratio on a GPU)."
    )
    where = (
        loaded.device.type if args.model == "embedded" else f"{loaded.device.type}, {loaded.name}"
    )
    title = f"(i) The capture's cost per forward call, before and after ({where})"
    record("hooks-" + where.replace(", ", "-"), title, body)


if __name__ == "__main__":
    main()
