"""What the MLP neurons do, read off their coefficients m_i (``mlp_post``, the input of the
output projection): ``neuron_acts``, the coefficient of tracked neurons at every token, and
``neuron_stats``, every neuron's sums (count, positive count, sum, positive sum, sum of squares)
over prompt and generated tokens of each arm of prompts (plain, an encoding, chat) — one set of
rows per commit; queries sum across rows."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import torch

from actwh.ingest.generate import Ran
from actwh.ingest.kinds.base import CaptureKind, Capturing, RanBatch, Rows
from actwh.ingest.rows import long_table
from actwh.ingest.scratch import Scratch
from actwh.models.sites import NEURON_SITE

TABLES = ("neuron_acts", "neuron_stats")

# neuron_stats columns, in the order coefficient_sums stacks them.
STAT_COLUMNS = ("n", "n_pos", "sum", "sum_pos", "sum_sq")


class TrackedNeurons(CaptureKind):
    def __init__(self, tracked: dict[int, list[int]], device):
        super().__init__([(NEURON_SITE, layer) for layer in sorted(tracked)])
        self.ids = {
            layer: torch.tensor(sorted(ids), dtype=torch.long, device=device)
            for layer, ids in tracked.items()
        }

    def rows(self, batch: RanBatch) -> Iterator[Rows]:
        flat = batch.flat
        for key in self.kept_keys():
            layer = key[1]
            acts = self.joined(key)[..., self.ids[layer]].float()
            neurons = self.ids[layer].cpu().numpy().astype(np.int32)
            columns = {
                "neuron": np.tile(neurons, len(flat)),
                "act": flat.take(acts).reshape(-1).cpu().numpy(),
            }
            yield Rows("neuron_acts", layer, long_table(flat, len(neurons), columns))


def coefficient_sums(
    ran: Ran, m: torch.Tensor, rows: torch.Tensor | None = None, scratch: Scratch | None = None
) -> np.ndarray:
    """Every neuron's sums over one batch's coefficients ``m`` (``[..., batch, pos, d_mlp]``: one
    layer, or several stacked), of the batch rows ``rows`` (``[batch]`` bool; default all):
    ``[..., 2, 5, d_mlp]`` float64, for prompt tokens (0) and generated tokens (1), in the order of
    :data:`STAT_COLUMNS`."""
    valid = ran.valid if rows is None else ran.valid & rows[:, None]
    kinds = torch.stack([valid & ~ran.generated, valid & ran.generated]).reshape(2, -1)
    lead = m.shape[:-3]
    m = m.reshape(*lead, -1, m.shape[-1]).float()  # [..., batch · pos, d_mlp]
    w = kinds.to(m)  # [2, batch · pos]: which tokens each sum counts
    # One scratch tensor for the terms, reused in place (and from one call to the next, when
    # given): on a CPU, allocating a fresh one cost more than the sums themselves.
    part = (scratch or Scratch()).get(m.shape, m.dtype, m.device)
    torch.clamp_min(m, 0, out=part)
    sum_pos = w @ part
    n_pos = w @ part.sign_()
    sum_sq = w @ torch.square(m, out=part)
    sums = torch.stack([n_pos, w @ m, sum_pos, sum_sq], dim=-2)  # [..., 2, 4, d_mlp]
    n = w.sum(1)[:, None, None].expand(*lead, 2, 1, m.shape[-1])
    return torch.cat([n, sums], dim=-2).double().cpu().numpy()


def neuron_stats_table(sums: np.ndarray, arm: str) -> pa.Table | None:
    """``neuron_stats`` rows of one layer and arm from accumulated :func:`coefficient_sums`; a
    kind of token (prompt, generated) that never occurred has no rows."""
    parts = []
    for generated in (False, True):
        block = sums[int(generated)]
        if block[0, 0] == 0:
            continue
        d = block.shape[1]
        columns = {name: block[i] for i, name in enumerate(STAT_COLUMNS)}
        columns["n"] = columns["n"].round().astype(np.int64)
        columns["n_pos"] = columns["n_pos"].round().astype(np.int64)
        parts.append(
            pa.table(
                {
                    "neuron": np.arange(d, dtype=np.int32),
                    "generated": np.full(d, generated),
                    **columns,
                    "arm": pa.array([arm] * d, pa.string()),
                }
            )
        )
    return pa.concat_tables(parts) if parts else None


# Layers whose coefficients are summed in one call, up to this many bytes of float32 per device
# type (default 256 MiB): on an accelerator that is one launch per term for many layers instead of
# one per layer; on a CPU, where a launch is cheap and copying the layers into a stack is not,
# one layer at a time (bench/writer.py's pipeline).
STACK_BYTES = {"cpu": 0}


class NeuronStats(CaptureKind):
    def __init__(self, layers: list[int], arms: dict[int, str]):
        super().__init__([(NEURON_SITE, layer) for layer in layers])
        self.arms = arms
        self.sums: dict[tuple[int, str], np.ndarray] = {}  # (layer, arm), since the last commit
        self.scratch = Scratch()

    def rows(self, batch: RanBatch) -> Iterator[Rows]:
        arms = [self.arms.get(p, "plain") for p in batch.prompts]
        device = batch.ran.valid.device
        for group in self._stacks(STACK_BYTES.get(device.type, 256 << 20)):
            # [layers, batch, pos, d_mlp]
            m = (
                torch.stack([self.joined(k) for k in group])
                if len(group) > 1
                else self.joined(group[0])[None]
            )
            for arm in dict.fromkeys(arms):
                rows = torch.tensor([a == arm for a in arms], device=device)
                sums = coefficient_sums(batch.ran, m, rows, self.scratch)
                for key, layer_sums in zip(group, sums, strict=True):
                    part = (key[1], arm)
                    self.sums[part] = (
                        self.sums[part] + layer_sums if part in self.sums else layer_sums
                    )
        return iter(())

    def _stacks(self, limit: int) -> list[list]:
        """The kept layers, in groups of at most ``limit`` bytes of float32 coefficients (a
        layer larger than that on its own)."""
        groups: list[list] = []
        size = limit
        for key in self.kept_keys():
            one = sum(x.numel() for x in self.parts["kept"][key]) * 4
            if size + one > limit:
                groups.append([])
                size = 0
            groups[-1].append(key)
            size += one
        return groups

    def before_commit(self) -> Iterator[Rows]:
        by_layer: dict[int, list[pa.Table]] = {}
        for (layer, arm), sums in self.sums.items():
            rows = neuron_stats_table(sums, arm)
            if rows is not None:
                by_layer.setdefault(layer, []).append(rows)
        for layer, tables in by_layer.items():
            yield Rows("neuron_stats", layer, pa.concat_tables(tables))
        self.sums = {}


def make_tracked(run: Capturing) -> TrackedNeurons | None:
    tracked = run.config.track_neurons
    return TrackedNeurons(tracked, run.device) if tracked else None


def make_stats(run: Capturing) -> NeuronStats:
    return NeuronStats(run.layers, run.arms)
