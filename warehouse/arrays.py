"""Vectors between numpy and their stored forms: catalog blobs and Arrow list columns."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def to_blob(vector: np.ndarray) -> bytes:
    """A vector as it is stored in the catalog: float32, little-endian."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4").copy()


def column_to_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A fixed-size-list (or list) column of floats → ``[n, d]`` float32 array."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(array) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    values = array.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.reshape(len(array), -1)


def vectors_to_column(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """``[n, d]`` → a fixed-size-list Arrow array (the dtype is kept)."""
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
