"""Turning a batch (padded tensors) into fact-table rows (Arrow tables, padding dropped).

Every table is built from the same flat index of real positions, so ``prompt`` and ``pos`` mean
the same thing everywhere and padding can never leak into a row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from actwh.errors import ActwhError
from actwh.ingest.capture import Captured, site_table
from actwh.ingest.generate import Ran
from actwh.warehouse.arrays import vectors_to_column

FLOAT16_MAX = 65504.0


class TokenText:
    """Each token decoded on its own, cached (decoding is the slow part of building rows)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, ids: list[int]) -> list[str]:
        missing = sorted({i for i in ids if i not in self._cache})
        if missing:
            decoded = self.tokenizer.batch_decode([[i] for i in missing])
            self._cache.update(zip(missing, decoded, strict=True))
        return [self._cache[i] for i in ids]


@dataclass
class Flat:
    """The real positions of a batch: row ``k`` is ``(batch_row[k], column[k])``."""

    batch_row: torch.Tensor
    column: torch.Tensor
    prompt: np.ndarray  # int32 prompt id per row
    pos: np.ndarray  # int32

    @classmethod
    def of(cls, ran: Ran, prompt_ids: list[int]) -> Flat:
        """Every real position of the batch."""
        rows, cols = ran.valid.nonzero(as_tuple=True)
        return cls.at(ran, prompt_ids, rows, cols)

    @classmethod
    def at(cls, ran: Ran, prompt_ids: list[int], rows: torch.Tensor, cols: torch.Tensor) -> Flat:
        """The given ``(row, column)`` positions of the batch."""
        rows, cols = rows.to(ran.ids.device), cols.to(ran.ids.device)
        prompts = np.asarray(prompt_ids, dtype=np.int32)[rows.cpu().numpy()]
        pos = ran.pos[rows, cols].cpu().numpy().astype(np.int32)
        return cls(rows, cols, prompts, pos)

    def __len__(self) -> int:
        return len(self.pos)

    def take(self, x: torch.Tensor) -> torch.Tensor:
        """``x[batch, pos, ...]`` → ``[n_rows, ...]``."""
        return x[self.batch_row, self.column]


def tokens_table(flat: Flat, ran: Ran, text: TokenText, turns: torch.Tensor | None) -> pa.Table:
    ids = flat.take(ran.ids).cpu().numpy().astype(np.int32)
    logprobs = flat.take(ran.logprobs).cpu().numpy().astype(np.float32)
    return pa.table(
        {
            "prompt": flat.prompt,
            "pos": flat.pos,
            "token_id": ids,
            "token": text(ids.tolist()),
            "is_generated": flat.take(ran.generated).cpu().numpy(),
            "logprob": pa.array(logprobs, mask=np.isnan(logprobs)),
            "turn": pa.nulls(len(flat), pa.int16())
            if turns is None
            else _nullable(flat.take(turns)),
        }
    )


def _nullable(turns: torch.Tensor) -> pa.Array:
    values = turns.cpu().numpy().astype(np.int16)
    return pa.array(values, mask=values < 0)


def vector_array(x: torch.Tensor, dtype: str, where: str, overflow: str) -> tuple[pa.Array, str]:
    """``[n, d]`` → fixed-size-list array in ``dtype``.

    float16 cannot hold values beyond ±65504: with ``overflow="fallback"`` such a block is stored
    as float32 instead (returned dtype says which), with ``"error"`` it is refused. Never inf.
    """
    if dtype == "float16":
        peak = float(x.abs().max()) if x.numel() else 0.0
        if peak > FLOAT16_MAX or not np.isfinite(peak):
            if overflow == "error":
                raise ActwhError(
                    f"{where}: activation {peak:.4g} does not fit float16 (max 65504); "
                    "use --store-dtype float32"
                )
            dtype = "float32"
    values = x.to(torch.float16 if dtype == "float16" else torch.float32).cpu().numpy()
    return vectors_to_column(values), dtype


def vector_tables(
    flat: Flat, captured: Captured, dtype: str, overflow: str
) -> list[tuple[str, int, pa.Table, int, str]]:
    """Full vectors: ``(table, layer, rows, vector size, stored dtype)`` per captured site."""
    out = []
    for (site, layer), x in captured.vectors.items():
        table = site_table(site)
        array, used = vector_array(flat.take(x), dtype, f"{site} layer {layer}", overflow)
        columns = {"prompt": flat.prompt, "pos": flat.pos}
        if table == "residuals":
            columns["site"] = pa.array([site] * len(flat), pa.string())
        columns["vec"] = array
        out.append((table, layer, pa.table(columns), x.shape[-1], used))
    return out


def _long(flat: Flat, n: int, columns: dict) -> pa.Table:
    """Rows ``(prompt, pos)`` repeated ``n`` times each, then the given columns."""
    return pa.table({"prompt": np.repeat(flat.prompt, n), "pos": np.repeat(flat.pos, n), **columns})


def _strings(value: str, n: int) -> pa.Array:
    return pa.array([value] * n, pa.string())


def projection_tables(
    flat: Flat, captured: Captured, names: list[str]
) -> list[tuple[int, pa.Table]]:
    """Projections: one row per (prompt, pos, site, direction) for each hooked layer."""
    n = len(names)
    out = []
    for (site, layer), dots in captured.dots.items():
        cos = captured.cosines[(site, layer)]
        columns = {
            "site": _strings(site, len(flat) * n),
            "direction": pa.array(names * len(flat), pa.string()),
            "dot": flat.take(dots).reshape(-1).cpu().numpy(),
            "cos": flat.take(cos).reshape(-1).cpu().numpy(),
        }
        out.append((layer, _long(flat, n, columns)))
    return out


def neuron_tables(flat: Flat, captured: Captured, tracked: dict[int, list[int]]):
    """Tracked neurons: one row per (prompt, pos, neuron) for each layer."""
    out = []
    for layer, acts in captured.neurons.items():
        neurons = np.asarray(sorted(tracked[layer]), dtype=np.int32)
        columns = {
            "neuron": np.tile(neurons, len(flat)),
            "act": flat.take(acts).reshape(-1).cpu().numpy(),
        }
        out.append((layer, _long(flat, len(neurons), columns)))
    return out


# neuron_stats columns, in the order coefficient_sums stacks them.
STAT_COLUMNS = ("n", "n_pos", "sum", "sum_pos", "sum_sq")


def coefficient_sums(ran: Ran, captured: Captured) -> dict[int, np.ndarray]:
    """Per layer, every neuron's sums over this batch: ``[2, 5, d_mlp]`` float64, for prompt
    tokens (0) and generated tokens (1), in the order of :data:`STAT_COLUMNS`."""
    kinds = torch.stack([ran.valid & ~ran.generated, ran.valid & ran.generated]).reshape(2, -1)
    out = {}
    for layer, x in captured.coefficients.items():
        m = x.reshape(-1, x.shape[-1]).float()  # [batch · pos, d_mlp]
        w = kinds.to(m)  # [2, batch · pos]: which tokens each sum counts
        sums = torch.stack([w @ (m > 0).to(m), w @ m, w @ m.clamp_min(0), w @ (m * m)], dim=1)
        n = w.sum(1)[:, None, None].expand(2, 1, m.shape[1])
        out[layer] = torch.cat([n, sums], dim=1).double().cpu().numpy()
    return out


def neuron_stats_table(sums: np.ndarray) -> pa.Table:
    """``neuron_stats`` rows of one layer from accumulated :func:`coefficient_sums`; a kind of
    token (prompt, generated) that never occurred has no rows."""
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
                }
            )
        )
    return pa.concat_tables(parts) if parts else None


def lens_tables(flat: Flat, captured: Captured, take, text: TokenText, targets: list[int]):
    """Logit lens: ``(layer, logit_lens rows, token_probs rows)`` per lensed site and layer.

    ``take`` maps a captured lens tensor to ``[len(flat), k]`` (it differs between reading the
    lens at one position per row and at every position).
    """
    out = []
    target_text = text(targets)
    for (site, layer), ids in captured.lens_ids.items():
        ids = take(ids).cpu().numpy().astype(np.int32)
        k = ids.shape[1]
        lens = _long(
            flat,
            k,
            {
                "site": _strings(site, ids.size),
                "rank": np.tile(np.arange(1, k + 1, dtype=np.int16), len(flat)),
                "token_id": ids.reshape(-1),
                "token": text(ids.reshape(-1).tolist()),
                "prob": take(captured.lens_probs[(site, layer)]).reshape(-1).cpu().numpy(),
            },
        )
        probs = None
        if targets:
            n = len(targets)
            probs = _long(
                flat,
                n,
                {
                    "site": _strings(site, len(flat) * n),
                    "token_id": np.tile(np.asarray(targets, dtype=np.int32), len(flat)),
                    "token": target_text * len(flat),
                    "prob": take(captured.target_probs[(site, layer)]).reshape(-1).cpu().numpy(),
                },
            )
        out.append((layer, lens, probs))
    return out
