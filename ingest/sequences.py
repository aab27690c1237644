"""What a run feeds the model: prompts tokenized (plain or chat), or the token sequences of an
earlier run replayed (teacher forcing), cut into fixed batches.

Batches are fixed before the first one runs: prompts are sorted by token length (less padding)
and cut into batches of ``batch_size``. Commits always hold whole batches, so a resumed run
re-runs exactly the batches it had not committed, with the same shapes and the same results, and
shard ``i`` of ``N`` takes every N-th batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from actwh.errors import ActwhError, BadInput, NotFound, arg
from actwh.ingest.prompts import Prompt
from actwh.models.loading import LoadedModel
from actwh.warehouse.reader import Snapshot
from actwh.warehouse.registry import check_compatible
from actwh.warehouse.store import Store


@dataclass
class Sequence:
    """One prompt, tokenized: what the model is given."""

    prompt: int
    ids: list[int]
    text: str  # the prompt as the model saw it
    truncated: bool = False
    n_prompt: int | None = None  # teacher forced: how many of ``ids`` are the prompt
    turns: list[int] | None = None  # chat prompts: message index of every token
    reply_turn: int | None = None  # chat prompts: turn index of what the model generates
    continuation: str | None = None  # teacher forced: the replayed continuation

    @property
    def prompt_length(self) -> int:
        """How many of ``ids`` are the prompt (all of them, unless teacher forced)."""
        return len(self.ids) if self.n_prompt is None else self.n_prompt


TEMPLATE_TURN = -1  # tokens.turn of the text a chat template inserts itself (schema.sql)
_MARK = "\u2063actwh-system\u2063"  # a system message no template would write on its own


def encode_chat(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Render a chat with the model's template; return token ids and each token's turn index.

    A token belongs to the message whose rendering contains it; the generation prompt (and what
    the model generates) is turn ``len(messages)``; what the template inserts before the first
    message on its own — a default system prompt, as Qwen's does — is turn ``-1``.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise NotFound("this model's tokenizer has no chat template; chat prompts need one")
    render = tokenizer.apply_chat_template
    full = render(messages, add_generation_prompt=True, tokenize=False)
    ends = [len(render(messages[: i + 1], tokenize=False)) for i in range(len(messages))]
    inserted = _inserted_system(render, messages)
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    turns = [
        TEMPLATE_TURN if start < inserted else sum(start >= end for end in ends)
        for start, _ in encoded["offset_mapping"]
    ]
    return list(encoded["input_ids"]), turns


def _inserted_system(render, messages: list[dict]) -> int:
    """How many leading characters of the chat's rendering the template inserted itself: a
    default system message, where the chat has none. Found by rendering the chat again with a
    system message of its own: if what stands before the first message differs only where that
    message's content stands, the template put its default there (0 when it differs otherwise,
    as where a template folds a system message into the first user turn, or when the template
    refuses a system message)."""
    if messages[0]["role"] == "system":
        return 0
    system = [{"role": "system", "content": _MARK}]
    try:
        alone = render(system, tokenize=False)
        explicit = render([*system, *messages], tokenize=False)
    except Exception:  # noqa: BLE001 - a template may refuse a system role in any way it likes
        return 0
    original = render(messages, tokenize=False)
    tail = explicit[len(alone) :]  # the chat's own messages, after a system message
    if not explicit.startswith(alone) or not original.endswith(tail):
        return 0
    head = original[: len(original) - len(tail)]
    before, mark, after = alone.partition(_MARK)
    if mark and len(head) >= len(alone) - len(_MARK):
        return len(head) if head.startswith(before) and head.endswith(after) else 0
    return 0


def encode_prompts(
    loaded: LoadedModel, prompts: list[Prompt], max_tokens: int, on_long: str = "truncate"
) -> tuple[list[Sequence], list[str]]:
    """Tokenize every prompt; one longer than ``max_tokens`` keeps its first ``max_tokens``
    tokens (``on_long="truncate"``, with a warning) or is refused (``"refuse"``)."""
    tokenizer = loaded.tokenizer
    plain = [i for i, p in enumerate(prompts) if p.messages is None]
    texts = [prompts[i].text for i in plain]
    encoded = dict(zip(plain, tokenizer(texts)["input_ids"] if texts else [], strict=True))
    sequences = []
    for index, prompt in enumerate(prompts):
        turns = reply = None
        if prompt.messages is None:
            ids = list(encoded[index])
        else:
            try:
                ids, turns = encode_chat(tokenizer, prompt.messages)
            except Exception as error:  # the template refuses the chat (jinja's own error)
                if isinstance(error, ActwhError):
                    raise
                reason = str(error).strip().splitlines()[0] if str(error).strip() else "refused"
                raise BadInput(
                    f"prompt {index}: this model's chat template refuses its messages ({reason})"
                ) from None
            reply = len(prompt.messages)
        truncated = len(ids) > max_tokens
        if truncated and on_long == "refuse":
            raise ActwhError(
                f"prompt {index} is {len(ids)} tokens, more than the {max_tokens} that fit "
                f"(context minus {arg('generate')}, or {arg('max_prompt_tokens')}); pass "
                f"{arg('on_long')} truncate to keep its first tokens"
            )
        if truncated:
            ids, turns = ids[:max_tokens], (turns[:max_tokens] if turns else None)
        text = str(tokenizer.decode(ids, skip_special_tokens=True)) if truncated else prompt.text
        sequences.append(Sequence(index, ids, text, truncated, turns=turns, reply_turn=reply))
    warnings = []
    n_truncated = sum(s.truncated for s in sequences)
    if n_truncated:
        warnings.append(f"{n_truncated} prompt(s) truncated to their first {max_tokens} tokens")
    return sequences, warnings


def replay_sequences(existing: Store, run: str, loaded: LoadedModel) -> tuple[dict, list[Sequence]]:
    """The token sequences of an earlier run, for teacher forcing: ``(its runs row,
    sequences)``."""
    source = existing.catalog.get("runs", name=run)
    if source is None:
        raise NotFound(f"{arg('teacher_force')} {run}: no such run")
    if source["status"] != "complete":
        raise ActwhError(f"{arg('teacher_force')} {run}: that run is not complete")
    source_model = existing.catalog.get("models", name=source["model"])
    check_compatible(source_model, loaded.catalog_row(), f"{arg('teacher_force')} {run}")
    snapshot = Snapshot(existing)
    try:
        rows = snapshot.execute(
            """select t.prompt, list(t.token_id order by t.pos) as ids,
                      list(t.turn order by t.pos) as turns,
                      count(*) filter (where not t.is_generated) as n_prompt,
                      any_value(g.prompt_text) as text, any_value(g.continuation) as continuation
               from tokens t join generations g using (run, prompt)
               where t.run = $run group by t.prompt order by t.prompt""",
            {"run": run},
        ).to_pylist()
    finally:
        snapshot.close()
    sequences = [
        Sequence(
            r["prompt"],
            r["ids"],
            r["text"],
            n_prompt=r["n_prompt"],
            turns=r["turns"] if r["turns"][0] is not None else None,
            continuation=r["continuation"],
        )
        for r in rows
    ]
    return source, sequences


def plan_batches(sequences: list[Sequence], batch_size: int) -> list[list[Sequence]]:
    ordered = sorted(sequences, key=lambda s: (len(s.ids), s.prompt))
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


def check_committed_batches(run: str, batches: list[list[Sequence]], done: set[int]) -> None:
    """A resume skips whole batches: every committed prompt must be one of this command's, and
    every batch committed entirely or not at all, or the run would mix two different plans."""
    planned = {s.prompt for batch in batches for s in batch}
    for batch in batches:
        committed = [s.prompt in done for s in batch]
        if any(committed) and not all(committed):
            raise ActwhError(
                f"run {run!r}: prompts {sorted(s.prompt for s in batch)} form one batch here, "
                f"but only {sorted(s.prompt for s in batch if s.prompt in done)} of them were "
                f"committed; resume with the same {arg('prompts')}, {arg('batch_size')} and "
                f"{arg('max_prompt_tokens')}, or choose another {arg('name')}"
            )
    if done - planned:
        raise ActwhError(
            f"run {run!r} has committed prompts {sorted(done - planned)[:5]} that this command "
            f"does not plan; resume with the same {arg('prompts')} or choose another {arg('name')}"
        )
