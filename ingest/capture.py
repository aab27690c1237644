"""Forward hooks that feed the capture kinds during a batch, on the device, in one pass.

A :class:`Capture` registers one Python hook per *module* that any of its kinds reads (see
:mod:`actwh.ingest.kinds`): a site that is a module's input and another that is its output (a
decoder layer's ``resid_pre`` and ``resid_post``; the output projection's ``mlp_post`` and, without
a post-norm, ``mlp_out``) share one hook. Each forward call (the prompt, then every generated
token) hands the hooked tensors to the kinds, which only keep them: what they compute of them
(projections, statistics) runs once per batch, over every layer and call at once, so the Python
cost of a forward call is a few microseconds per hook (bench/hooks.py measures it).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from actwh.ingest.kinds.base import CaptureKind, Key
from actwh.models.adapters import Adapter

Feeds = list[tuple[Key, list[CaptureKind]]]  # the sites one hook hands over, and their readers


def _input(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _output(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _feed(feeds: Feeds, x: torch.Tensor) -> None:
    if x.requires_grad:  # outside inference mode: keep the value, not the graph
        x = x.detach()
    for key, kinds in feeds:
        for kind in kinds:
            kind.on(key, x)


class Capture:
    """Hooks for the kinds of one run; a context manager that installs and removes them."""

    def __init__(self, adapter: Adapter, kinds: list[CaptureKind]):
        self.adapter = adapter
        self.kinds = list(kinds)
        self.readers: dict[Key, list[CaptureKind]] = {}
        for kind in self.kinds:
            for key in kind.keys():
                self.readers.setdefault(key, []).append(kind)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def hooks(self) -> list[tuple[nn.Module, str, Callable]]:
        """``(module, "pre" | "forward", hook)`` for every module a site is read from: a forward
        pre-hook where only its input is read, else one forward hook for input and output."""
        points: dict[int, tuple[nn.Module, Feeds, Feeds]] = {}
        for key, kinds in self.readers.items():
            module, where = self.adapter.hook_point(*key)
            _, inputs, outputs = points.setdefault(id(module), (module, [], []))
            (inputs if where == "input" else outputs).append((key, kinds))
        made = []
        for module, inputs, outputs in points.values():
            if not outputs:
                made.append((module, "pre", _pre_hook(inputs)))
            else:
                made.append((module, "forward", _forward_hook(inputs, outputs)))
        return made

    def __enter__(self) -> Capture:
        for module, kind, hook in self.hooks():
            register = (
                module.register_forward_pre_hook if kind == "pre" else module.register_forward_hook
            )
            self._handles.append(register(hook, with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def start_batch(self, last: torch.Tensor | None = None) -> None:
        """Empty every kind's buffers; ``last`` ([batch]) is each row's last prompt column."""
        for kind in self.kinds:
            kind.start_batch(last)


def _pre_hook(inputs: Feeds):
    def hook(module, args, kwargs) -> None:
        _feed(inputs, _input(args, kwargs))

    return hook


def _forward_hook(inputs: Feeds, outputs: Feeds):
    def hook(module, args, kwargs, output) -> None:
        if inputs:
            _feed(inputs, _input(args, kwargs))
        _feed(outputs, _output(output))

    return hook


class PerSiteCapture(Capture):
    """The simple capture, the baseline that bench/hooks.py and the fingerprint test compare
    :class:`Capture` with: one hook per ``(site, layer)``, and each kind's work on a tensor done
    in the hook, at every forward call."""

    def hooks(self) -> list[tuple[nn.Module, str, Callable]]:
        made = []
        for key, kinds in self.readers.items():
            module, where = self.adapter.hook_point(*key)
            feeds = [(key, kinds)]
            if where == "input":
                made.append((module, "pre", _flushing(_pre_hook(feeds), kinds)))
            else:
                made.append((module, "forward", _flushing(_forward_hook([], feeds), kinds)))
        return made


def _flushing(hook, kinds: list[CaptureKind]):
    def flushed(*args) -> None:
        hook(*args)
        for kind in kinds:
            kind.flush()

    return flushed
