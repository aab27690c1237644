"""(i) The capture's cost per forward call: how many Python hooks, and microseconds each.

A batch makes one forward call for its prompt and one per generated token; every call runs every
hook the capture registered (:class:`~actwh.ingest.capture.Capture`). On a CPU a forward call
takes tens of milliseconds and this cost hides; on a GPU it takes a few, and a fixed Python cost
per hook per call does not shrink with it. This measures, on the model and device given, a
decode-shaped forward (batch 8, one new token, no cache: the call's fixed costs dominate):

* the bare forward;
* the same with hooks that do nothing on the same points (the price of a Python hook);
* the same with the default capture's hooks (projections of resid_mid and resid_post on 5
  directions at every layer, 64 tracked neurons, the neuron statistics) and the full capture's
  (also resid_mid and mlp_post vectors);

interleaved over ``--repeats`` rounds of ``--calls`` calls each; per call: microseconds over
bare, and per hook. Its ratio to the bare forward is what the capture adds to a decode step on
this device. Run: ``python -m bench.hooks`` (``--model DIR --device cuda`` in bench/gpu.sh).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from bench.report import record, table


def captures(loaded, directions: dict[str, np.ndarray]):
    """The default and full captures' :class:`Capture` objects for ``loaded`` (every layer)."""
    from actwh.ingest.capture import Capture
    from actwh.ingest.kinds.base import Request
    from actwh.ingest.kinds.registry import kinds_for

    adapter = loaded.adapter
    layers = list(range(adapter.n_layers))
    rng = np.random.default_rng(0)
    tracked: dict[int, list[int]] = {}
    for layer, neuron in zip(
        rng.integers(0, adapter.n_layers, 64), rng.integers(0, adapter.d_mlp, 64), strict=True
    ):
        tracked.setdefault(int(layer), []).append(int(neuron))
    project = [adapter.mlp_reads, "resid_post"]  # the default of --project
    common = {"project": project, "directions": directions, "tracked": tracked}
    made = {}
    for name, capture in (("default", []), ("full", ["resid_mid", "mlp_post"])):
        request = Request(adapter, layers, capture=capture, **common)
        made[name] = Capture(adapter, kinds_for(request))
    return made


def no_op(capture):
    """A capture that hooks the same points as ``capture`` and does nothing there."""
    from actwh.ingest.capture import Capture

    class NoOp(Capture):
        def _hook(self, key):
            return lambda x: None

    return NoOp(capture.adapter, capture.kinds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    from actwh.models.loading import load_model

    loaded = load_model(args.model, device=args.device)
    device = loaded.device
    rng = np.random.default_rng(1)
    directions = {
        f"d{i}": rng.standard_normal(loaded.adapter.d_model).astype(np.float32) for i in range(5)
    }
    made = captures(loaded, directions)
    ids = torch.randint(0, loaded.tokenizer.vocab_size, (8, 1), device=device)
    last = torch.zeros(8, dtype=torch.long, device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def forward_calls() -> float:
        """Seconds per forward call, over ``--calls`` calls."""
        sync()
        started = time.perf_counter()
        with torch.inference_mode():
            for _ in range(args.calls):
                loaded.model(input_ids=ids, use_cache=False)
        sync()
        return (time.perf_counter() - started) / args.calls

    def hook_calls(capture, calls: int = 200) -> float:
        """Seconds per forward call of running every hook of ``capture`` alone: the functions it
        registers, handed tensors of the call's shape (what torch hands them), no model."""
        shapes = {"mlp_post": loaded.adapter.d_mlp}
        inputs = {
            key: torch.randn(8, 1, shapes.get(key[0], loaded.adapter.d_model), device=device)
            for key in capture.readers
        }
        hooks = [(capture._hook(key), inputs[key]) for key in capture.readers]
        capture.start_batch(last)
        sync()
        started = time.perf_counter()
        for _ in range(calls):
            for hook, x in hooks:
                hook(x)
        sync()
        seconds = (time.perf_counter() - started) / calls
        capture.start_batch(last)
        return seconds

    forward_calls()  # warm up
    bare = statistics.median(forward_calls() for _ in range(args.repeats))
    noop = statistics.median(
        _with(no_op(made["default"]), forward_calls) for _ in range(args.repeats)
    )
    rows = [
        {
            "what": "a bare forward call",
            "hooks": 0,
            "µs per call": f"{bare * 1e6:,.0f}",
            "µs per hook": "",
        },
        {
            "what": "the same with no-op hooks on the default capture's points (in the model)",
            "hooks": len(made["default"].readers),
            "µs per call": f"{noop * 1e6:,.0f}",
            "µs per hook": f"{(noop - bare) * 1e6 / len(made['default'].readers):.1f}",
        },
    ]
    for name in ("default", "full"):
        capture = made[name]
        hook_calls(capture, 20)  # warm up
        alone = statistics.median(hook_calls(capture) for _ in range(args.repeats))
        rows.append(
            {
                "what": f"the {name} capture's hooks alone, run as a forward call runs them",
                "hooks": len(capture.readers),
                "µs per call": f"{alone * 1e6:,.0f}",
                "µs per hook": f"{alone * 1e6 / len(capture.readers):.1f}",
            }
        )
        rows[-1]["share of the bare call"] = f"{alone / bare:.3f}"
    for row in rows:
        row.setdefault(
            "share of the bare call", "" if row["hooks"] == 0 else f"{(noop - bare) / bare:.3f}"
        )
    body = (
        f"{loaded.name} on {device} ({loaded.adapter.n_layers} layers), a decode-shaped forward "
        f"call (batch 8, 1 token, no cache), median of {args.repeats} rounds of {args.calls} "
        "calls; the hooks alone: the functions the capture registers, each handed a tensor of "
        "that call's shape, 200 calls a round. Divide a row's µs per call by another device's "
        "forward time (bench/gpu.sh measures it) for what the hooks add there.\n\n" + table(rows)
    )
    where = device.type if args.model == "embedded" else f"{device.type}, {loaded.name}"
    title = f"(i) The capture's cost per forward call ({where})"
    record("hooks-" + where.replace(", ", "-"), title, body)


def _with(context, run):
    with context:
        return run()


if __name__ == "__main__":
    main()
