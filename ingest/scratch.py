"""Memory for a batch's temporaries, kept from one batch to the next."""

from __future__ import annotations

import math

import torch


class Scratch:
    """Memory for a batch's temporaries, kept from one batch to the next: on a CPU a fresh tensor
    of tens of MB costs more in page faults than the arithmetic done in it (bench/writer.py's
    pipeline). ``get`` hands out a view of it; the view is valid until the next ``get``."""

    def __init__(self):
        self._buffer: torch.Tensor | None = None

    def get(self, shape: tuple[int, ...], dtype: torch.dtype, device) -> torch.Tensor:
        size = math.prod(shape)
        buffer = self._buffer
        if (
            buffer is None
            or buffer.numel() < size
            or (buffer.dtype, buffer.device) != (dtype, torch.device(device))
            or buffer.is_inference() != torch.is_inference_mode_enabled()
        ):
            # Batches come shortest first (plan_batches), so it grows by half at least each
            # time instead of once per batch.
            capacity = size
            if buffer is not None and buffer.numel() < size:
                capacity = max(size, buffer.numel() * 3 // 2)
            buffer = self._buffer = torch.empty(capacity, dtype=dtype, device=device)
        return buffer[:size].view(shape)
