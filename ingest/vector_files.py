"""Reading one vector from a file: .npy, .npz, .pt/.pth (torch), .txt/.csv."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from actwh.errors import ActwhError, BadInput, NotFound


def read_vector(path: str | Path) -> np.ndarray:
    """The single vector stored in ``path``, as float32 ``[d]``."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            value = np.load(path)
        elif suffix == ".npz":
            archive = np.load(path)
            if len(archive.files) != 1:
                raise BadInput(f"{path}: holds {len(archive.files)} arrays; keep exactly one")
            value = archive[archive.files[0]]
        elif suffix in (".pt", ".pth"):
            import torch

            value = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(value, dict):
                tensors = [v for v in value.values() if isinstance(v, torch.Tensor)]
                if len(tensors) != 1:
                    raise BadInput(f"{path}: a dict with {len(tensors)} tensors; keep exactly one")
                value = tensors[0]
            value = value.detach().float().numpy()
        elif suffix in (".txt", ".csv"):
            value = np.loadtxt(path, delimiter="," if suffix == ".csv" else None)
        else:
            raise BadInput(f"{path}: unknown vector format; use .npy, .npz, .pt or .txt")
    except ActwhError:
        raise
    except Exception as error:  # a damaged file: say which and why, in one line
        raise BadInput(f"{path}: could not read a vector ({error})") from error
    value = np.asarray(value, dtype=np.float32).squeeze()
    if value.ndim != 1:
        raise BadInput(
            f"{path}: holds an array of shape {list(value.shape)}, not one vector "
            "(for a [d, 2] probe matrix, save its toxic column)"
        )
    return value
