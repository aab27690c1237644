"""The logit lens (``logit_lens``, ``token_probs``): residual sites (``project``) read through
the model's final norm and unembedding — the top-k tokens and their probabilities, and the
probability of chosen target tokens — at the last prompt token of each row (``at="last"``: what
predicts the first generated token) or at every position (``"all"``)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from actwh.ingest.kinds.base import CaptureKind, Capturing, RanBatch, Rows
from actwh.ingest.rows import Flat, long_table, strings
from actwh.models.sites import LENS_SITES

TABLES = ("logit_lens", "token_probs")


class LogitLens(CaptureKind):
    buffers = ("ids", "probs", "targets")  # top-k ids, their probabilities, the targets'

    def __init__(self, adapter, sites, layers, k: int, targets: list[int], at: str = "last"):
        super().__init__([(s, l) for s in sites for l in layers])
        self.adapter, self.k, self.targets, self.at = adapter, k, targets, at
        self.columns = torch.zeros(0, dtype=torch.long)  # each row's last prompt column

    def start_batch(self, last: torch.Tensor | None = None) -> None:
        super().start_batch(last)
        if last is not None:
            self.columns = last

    @torch.no_grad()
    def on(self, key, x: torch.Tensor) -> None:
        if self.at == "last":
            if self.parts["ids"][key]:  # only the first forward call of a batch holds the prompt
                return
            rows = torch.arange(x.shape[0], device=x.device)
            x = x[rows, self.columns.to(x.device)]  # [batch, d]
        logits = self.adapter.logits(x)
        probs = torch.softmax(logits.float(), dim=-1)
        top = probs.topk(self.k, dim=-1)
        self.keep(key, top.indices, "ids")
        self.keep(key, top.values, "probs")
        if self.targets:
            self.keep(key, probs[..., self.targets], "targets")

    def rows(self, batch: RanBatch) -> Iterator[Rows]:
        # At the last prompt token one call kept one row per prompt: nothing to gather.
        if self.at == "last":
            rows = torch.arange(len(batch.prompts))
            flat = Flat.at(batch.ran, batch.prompts, rows, batch.last.cpu())
            take = lambda t: t  # noqa: E731 - already one row per prompt
        else:
            flat, take = batch.flat, batch.flat.take
        text = batch.text
        for key in self.kept_keys():
            site, layer = key
            ids = take(self.joined(key, "ids")).cpu().numpy().astype(np.int32)
            k = ids.shape[1]
            columns = {
                "site": strings(site, ids.size),
                "rank": np.tile(np.arange(1, k + 1, dtype=np.int16), len(flat)),
                "token_id": ids.reshape(-1),
                "token": text(ids.reshape(-1).tolist()),
                "prob": take(self.joined(key, "probs")).reshape(-1).cpu().numpy(),
            }
            yield Rows("logit_lens", layer, long_table(flat, k, columns))
            if self.targets:
                n = len(self.targets)
                columns = {
                    "site": strings(site, len(flat) * n),
                    "token_id": np.tile(np.asarray(self.targets, dtype=np.int32), len(flat)),
                    "token": text(self.targets) * len(flat),
                    "prob": take(self.joined(key, "targets")).reshape(-1).cpu().numpy(),
                }
                yield Rows("token_probs", layer, long_table(flat, n, columns))


def make(run: Capturing) -> LogitLens | None:
    config = run.config
    sites = [s for s in config.project if s in LENS_SITES]
    k = config.options.logit_lens
    if not k or not sites:
        return None
    return LogitLens(
        run.adapter, sites, run.layers, k, config.target_tokens, config.options.lens_at
    )
