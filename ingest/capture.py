"""Forward hooks that feed the capture kinds during a batch, on the device, in one pass.

One :class:`Capture` registers one hook per ``(site, layer)`` that any of its kinds reads (see
:mod:`actwh.ingest.kinds`). Each forward call (the prompt, then every generated token) hands the
hooked tensor to those kinds, which keep what they need on the device until the batch ends.
"""

from __future__ import annotations

import torch

from actwh.ingest.kinds.base import CaptureKind, Key
from actwh.models.adapters import Adapter


class Capture:
    """Hooks for the kinds of one run; a context manager that installs and removes them."""

    def __init__(self, adapter: Adapter, kinds: list[CaptureKind]):
        self.adapter = adapter
        self.kinds = list(kinds)
        self.readers: dict[Key, list[CaptureKind]] = {}
        for kind in self.kinds:
            for key in kind.keys():
                self.readers.setdefault(key, []).append(kind)
        self._handles = []

    def __enter__(self) -> Capture:
        for key in self.readers:
            module, where = self.adapter.hook_point(*key)
            hook = self._hook(key)
            if where == "input":
                handle = module.register_forward_pre_hook(
                    lambda _, args, kwargs, hook=hook: hook(
                        args[0] if args else kwargs["hidden_states"]
                    ),
                    with_kwargs=True,
                )
            else:
                handle = module.register_forward_hook(
                    lambda _, args, output, hook=hook: hook(
                        output[0] if isinstance(output, tuple) else output
                    )
                )
            self._handles.append(handle)
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, key: Key):
        readers = self.readers[key]

        def hook(x: torch.Tensor) -> None:
            x = x.detach()
            for kind in readers:
                kind.on(key, x)

        return hook

    def start_batch(self, last: torch.Tensor | None = None) -> None:
        """Empty every kind's buffers; ``last`` ([batch]) is each row's last prompt column."""
        for kind in self.kinds:
            kind.start_batch(last)
