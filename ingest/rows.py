"""Turning a batch (padded tensors) into fact-table rows (Arrow tables, padding dropped).

Every table is built from the same flat index of real positions, so ``prompt`` and ``pos`` mean
the same thing everywhere and padding can never leak into a row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from transformers.convert_slow_tokenizer import bytes_to_unicode

from actwh.errors import ActwhError, arg
from actwh.ingest.generate import Ran
from actwh.ingest.scratch import Scratch
from actwh.warehouse.arrays import vectors_to_column

FLOAT16_MAX = 65504.0


class TokenText:
    """Each token decoded on its own, readably, cached (decoding is the slow part of building
    rows). A token that holds part of a UTF-8 character decodes to "�" on its own: it is shown
    as its bytes instead, ``<0xE2>`` (a byte-level BPE piece such as ``âĢ`` → ``<0xE2><0x80>``;
    a SentencePiece byte token is already named so)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, ids: list[int]) -> list[str]:
        missing = sorted({i for i in ids if i not in self._cache})
        if missing:
            decoded = self.tokenizer.batch_decode([[i] for i in missing])
            for i, text in zip(missing, decoded, strict=True):
                self._cache[i] = self._bytes(i) if "\ufffd" in text else text
        return [self._cache[i] for i in ids]

    def _bytes(self, token_id: int) -> str:
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if _BYTE_TOKEN.fullmatch(piece):
            return piece
        if not all(c in _BYTE_DECODER for c in piece):
            return piece  # not byte-level: its vocabulary entry is the most readable
        raw = bytes(_BYTE_DECODER[c] for c in piece).decode("utf-8", errors="backslashreplace")
        raw = raw.replace("\ufffd", "<0xEF><0xBF><0xBD>")  # the replacement character itself
        return re.sub(r"\\x([0-9a-f]{2})", lambda m: f"<0x{m.group(1).upper()}>", raw)


_BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")
_BYTE_DECODER = {c: b for b, c in bytes_to_unicode().items()}  # GPT-2's byte ↔ character map


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
        """``x[batch, pos, ...]`` → ``[n_rows, ...]`` (one gather of whole rows)."""
        index = self.batch_row.to(x.device) * x.shape[1] + self.column.to(x.device)
        return x.flatten(0, 1).index_select(0, index)


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


NO_TURN = -32768  # a position of no chat (a plain prompt beside chats in a batch): NULL


def _nullable(turns: torch.Tensor) -> pa.Array:
    values = turns.cpu().numpy().astype(np.int16)
    return pa.array(values, mask=values == NO_TURN)


def vector_array(
    flat: Flat,
    x: torch.Tensor,
    dtype: str,
    where: str,
    overflow: str,
    scratch: Scratch | None = None,
) -> tuple[pa.Array, str, pa.Array]:
    """The rows of ``x`` (``[batch, pos, d]``) at ``flat``'s positions → a fixed-size-list array
    in ``dtype``, the dtype used, and each row's scale (``vec_scale``, schema.sql).

    float16 cannot hold values beyond ±65504. A row that has one is stored divided by a power of
    two that brings it within range, and that power is its scale (``overflow="scale"``: the size
    of float16, and its precision relative to the row's largest value); or the block is stored
    as float32 (``"float32"``); or it is refused (``"error"``). Never inf. Rows within range have
    no scale (NULL). ``scratch`` holds the narrowed copy (reused from one call to the next).
    """
    rows = len(flat)
    if dtype == "float16":
        # Narrowed before the gather, so that the gather moves half the bytes. A value beyond
        # float16's range became inf (one within it rounds to at most 65504); NaN stays NaN.
        narrowed = (scratch or Scratch()).get(x.shape, torch.float16, x.device)
        half = flat.take(narrowed.copy_(x))
        if _peak(half) <= FLOAT16_MAX:
            return vectors_to_column(half.cpu().numpy()), dtype, pa.nulls(rows, pa.float32())
        if overflow == "error":
            raise ActwhError(
                f"{where}: activation {_peak(flat.take(x)):.4g} does not fit float16 (max 65504); "
                f"use {arg('on_overflow')} scale, or {arg('store_dtype')} float32"
            )
        if overflow == "scale":
            return _scaled_half(flat.take(x).to(torch.float32))
        dtype = "float32"
    whole = flat.take(x).to(torch.float32).cpu().numpy()
    return vectors_to_column(whole), dtype, pa.nulls(rows, pa.float32())


def _scaled_half(rows: torch.Tensor) -> tuple[pa.Array, str, pa.Array]:
    """``rows`` (``[n, d]``, float32) as float16 divided by a power of two per row, and those
    powers (NULL for a row already within range)."""
    peak = torch.nan_to_num(rows.abs().amax(dim=1), nan=0.0, posinf=torch.finfo().max)
    exponent = torch.ceil(torch.log2(peak / FLOAT16_MAX)).clamp_min(0)
    scale = torch.exp2(exponent)  # a power of two: dividing by it is exact
    half = (rows / scale[:, None]).to(torch.float16).cpu().numpy()
    scales = scale.cpu().numpy()
    return vectors_to_column(half), "float16", pa.array(scales, mask=scales == 1.0)


def _peak(x: torch.Tensor) -> float:
    """The largest magnitude in ``x`` (one pass, no copy); NaN if there is a NaN."""
    if not x.numel():
        return 0.0
    low, high = torch.aminmax(x)
    return max(-float(low), float(high))


def long_table(flat: Flat, n: int, columns: dict) -> pa.Table:
    """Rows ``(prompt, pos)`` repeated ``n`` times each, then the given columns."""
    return pa.table({"prompt": np.repeat(flat.prompt, n), "pos": np.repeat(flat.pos, n), **columns})


def strings(value: str, n: int) -> pa.Array:
    return pa.array([value] * n, pa.string())
