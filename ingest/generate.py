"""Running a batch: greedy generation with a KV cache, or one teacher-forced forward pass.

Both take left-padded token ids with an attention mask and explicit position ids (so padding never
shifts positions) and return the batch in its padded layout: token ids, which positions are real,
which were generated, and the log-probability of every token given the tokens before it.

Greedy generation feeds every generated token through the model once more, including the last
one, so that its activations are captured too: ``1 + n_generated`` forward calls in all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Batch:
    """Token ids of a batch, left-padded: ``ids`` and ``mask`` are ``[batch, pos]``."""

    ids: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def left_padded(cls, sequences: list[list[int]], pad_id: int, device) -> Batch:
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            if seq:
                ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
                mask[row, width - len(seq) :] = 1
        return cls(ids.to(device), mask.to(device))


@dataclass
class Ran:
    """A batch after the model ran, in the padded layout ``[batch, pos]``."""

    ids: torch.Tensor
    valid: torch.Tensor  # bool: a real token (not padding, not after the end)
    generated: torch.Tensor  # bool: produced by greedy decoding
    logprobs: torch.Tensor  # float32; NaN where there is no previous token
    n_generated: list[int]
    stopped_at_eos: list[bool]

    @property
    def pos(self) -> torch.Tensor:
        """Index of each position in the unpadded sequence (``-1`` at padding)."""
        return torch.where(self.valid, self.valid.long().cumsum(-1) - 1, -1)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _token_logprobs(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log P(ids[:, t] | ids[:, :t]) from logits[:, t-1], ``[batch, pos]``.

    NaN at padding and at each row's first real token, which has nothing before it.
    """
    out = torch.full(ids.shape, float("nan"), device=ids.device)
    if ids.shape[1] > 1:
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        out[:, 1:] = logp.gather(-1, ids[:, 1:, None])[..., 0]
    valid = mask.bool()
    previous_valid = torch.cat([torch.zeros_like(valid[:, :1]), valid[:, :-1]], dim=1)
    return out.masked_fill(~(valid & previous_valid), float("nan"))


@torch.inference_mode()
def teacher_forced(model, batch: Batch) -> Ran:
    """One forward pass over the given tokens (no generation)."""
    out = model(input_ids=batch.ids, attention_mask=batch.mask, position_ids=_positions(batch.mask))
    valid = batch.mask.bool()
    size = batch.ids.shape[0]
    logprobs = _token_logprobs(out.logits, batch.ids, batch.mask)
    return Ran(batch.ids, valid, torch.zeros_like(valid), logprobs, [0] * size, [False] * size)


@torch.inference_mode()
def greedy(
    model,
    batch: Batch,
    max_new_tokens: int,
    eos_ids: set[int],
    pad_id: int,
    *,
    prompt_logprobs: bool = False,
) -> Ran:
    """Greedy decoding of up to ``max_new_tokens`` tokens per row, stopping a row at EOS.

    Generated tokens always get their log-probability. Prompt tokens get theirs only with
    ``prompt_logprobs``: it needs the unembedding at every prompt position, not just the last
    (about 7% of the time of a batch on SmolLM2), so it is opt-in.
    """
    if max_new_tokens == 0:
        return teacher_forced(model, batch)
    ids, mask = batch.ids, batch.mask
    size = ids.shape[0]
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=_positions(mask),
        use_cache=True,
        logits_to_keep=0 if prompt_logprobs else 1,
    )
    if prompt_logprobs:
        logprob_rows = [_token_logprobs(out.logits, ids, mask)]
    else:
        logprob_rows = [torch.full(ids.shape, float("nan"), device=ids.device)]
    valid_rows = [mask.bool()]
    next_logits = out.logits[:, -1].float()
    last_pos = _positions(mask)[:, -1:]
    eos = torch.tensor(sorted(eos_ids), device=ids.device, dtype=torch.long)
    finished = torch.zeros(size, dtype=torch.bool, device=ids.device)
    tokens = []
    n_generated = torch.zeros(size, dtype=torch.long, device=ids.device)
    for step in range(max_new_tokens):
        logp = torch.log_softmax(next_logits, dim=-1)
        token = logp.argmax(-1)
        live = ~finished
        token = torch.where(live, token, torch.full_like(token, pad_id))
        tokens.append(token)
        chosen = logp.gather(-1, token[:, None])[:, 0]
        logprob_rows.append(torch.where(live, chosen, float("nan"))[:, None])
        valid_rows.append(live[:, None])
        n_generated += live.long()
        finished |= live & torch.isin(token, eos)
        # Feed the token through the model: its activations are captured by this call. The last
        # call only captures (no next token is needed), so it skips the unembedding.
        mask = torch.cat([mask, live.long()[:, None]], dim=1)
        last_pos = last_pos + 1
        last_call = bool(finished.all()) or step == max_new_tokens - 1
        out = (model.base_model if last_call else model)(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=last_pos,
            use_cache=True,
            **_kv_cache(out),
        )
        if last_call:
            break
        next_logits = out.logits[:, -1].float()
    generated_ids = torch.stack(tokens, dim=1)
    all_ids = torch.cat([ids, generated_ids], dim=1)
    valid = torch.cat(valid_rows, dim=1)
    prompt_part = torch.zeros_like(batch.mask, dtype=torch.bool)
    generated = torch.cat([prompt_part, valid[:, ids.shape[1] :]], dim=1)
    stopped = [bool(torch.isin(generated_ids[r], eos).any()) for r in range(size)]
    return Ran(
        all_ids,
        valid,
        generated,
        torch.cat(logprob_rows, dim=1),
        n_generated.tolist(),
        stopped,
    )


def _kv_cache(out: Any) -> dict[str, Any]:
    """The KV cache of a forward call's output, as the keyword the next call takes: ``cache`` in
    recent transformers (5.25), ``past_key_values`` in earlier 5.x (5.17 had it)."""
    if hasattr(out, "cache"):
        return {"cache": out.cache}
    return {"past_key_values": out.past_key_values}
