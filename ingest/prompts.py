"""Prompt files: JSONL (RealToxicityPrompts style, or chat messages) and plain text.

Formats, chosen by extension (``.jsonl``, ``.json``, ``.ndjson`` are JSONL, anything else is
plain text unless its first line is a JSON object):

* JSONL, one object per line, with the prompt in one of
  ``"prompt": "text"``, ``"prompt": {"text": "...", ...}`` (RealToxicityPrompts),
  ``"text": "..."``, or ``"messages": [{"role": ..., "content": ...}, ...]`` (a chat, rendered
  later with the model's chat template). Every other field is kept as metadata.
* Plain text: one prompt a line; blank lines are skipped.

Any problem is reported with the file and line, before anything is written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from actwh.arguments import check_text, utf8
from actwh.errors import BadInput, NotFound

JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
CHAT_ROLES = {"system", "user", "assistant", "tool"}


@dataclass
class Prompt:
    text: str
    messages: list[dict] | None = None
    meta: dict = field(default_factory=dict)
    source_prompt: int | None = None
    transform: str | None = None

    @property
    def arm(self) -> str:
        return arm_of(self.transform, self.messages is not None)


def arm_of(transform: str | None, is_chat: bool) -> str:
    """A prompt's arm, as schema.sql's ``prompt_arms`` has it: its encoding (rot13, base64,
    leet, ...), ``chat`` for a multi-turn chat, else ``plain``."""
    return transform or ("chat" if is_chat else "plain")


@dataclass
class PromptSet:
    name: str
    source: str
    prompts: list[Prompt]

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for p in self.prompts:
            record = [p.text, p.messages, p.source_prompt, p.transform]
            digest.update(json.dumps(record, sort_keys=True).encode() + b"\n")
        return digest.hexdigest()

    def catalog_rows(self) -> tuple[dict, list[dict]]:
        """The ``prompt_sets`` row and the ``prompts`` rows that record this set."""
        prompts = [
            {
                "prompt_set": self.name,
                "prompt": i,
                "text": p.text,
                "messages": json.dumps(p.messages, sort_keys=True) if p.messages else None,
                "source_prompt": p.source_prompt,
                "transform": p.transform,
                "meta": json.dumps(p.meta, sort_keys=True) if p.meta else None,
            }
            for i, p in enumerate(self.prompts)
        ]
        return {"name": self.name, "sha256": self.sha256, "source": self.source}, prompts


def read_text_file(path: Path) -> str:
    """A text file's content, refusing missing, binary, non-UTF-8 and empty files."""
    if not path.exists():
        raise NotFound(f"{path}: no such file")
    if path.is_dir():
        raise BadInput(f"{path}: is a directory, not a prompt file")
    raw = path.read_bytes()
    if b"\x00" in raw[:8192]:
        raise BadInput(f"{path}: binary file (NUL bytes), not a prompt file")
    text = utf8(raw, str(path))
    if not text.strip():
        raise BadInput(f"{path}: empty file, no prompts")
    return text


def lines(text: str) -> list[str]:
    """The lines of a file: split at newlines only. ``str.splitlines`` also splits at U+2028,
    U+2029, NEL and form feed, which JSON strings may hold raw (and prompts do)."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def jsonl_records(path: Path, text: str, fields: tuple[str, ...] = ()):
    """Yield ``(where, record)`` for each non-blank line of a JSONL file's ``text``.

    ``where`` is ``FILE:LINE``; a malformed line, or a record that is not an object or lacks one
    of ``fields``, is an error naming it.
    """
    for number, line in enumerate(lines(text), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            message = f"{where}: malformed JSON ({error.msg}: column {error.colno})"
            raise BadInput(message) from None
        except RecursionError:
            raise BadInput(f"{where}: JSON nested too deeply") from None
        check_text(where, json.dumps(record, ensure_ascii=False))  # a lone surrogate (\ud800)
        if not isinstance(record, dict):
            raise BadInput(f"{where}: expected a JSON object, got {type(record).__name__}")
        missing = [f for f in fields if f not in record]
        if missing:
            raise BadInput(f"{where}: missing {', '.join(missing)}")
        yield where, record


def _chat(messages, where: str) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise BadInput(f"{where}: 'messages' must be a non-empty list of {{role, content}}")
    for i, m in enumerate(messages):
        if not (isinstance(m, dict) and isinstance(m.get("content"), str)):
            raise BadInput(f"{where}: message {i} needs a string 'content'")
        if m.get("role") not in CHAT_ROLES:
            raise BadInput(
                f"{where}: message {i} has role {m.get('role')!r}; "
                f"expected one of {', '.join(sorted(CHAT_ROLES))}"
            )
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _from_json(record: dict, where: str) -> Prompt:
    meta = dict(record)
    prompt = meta.pop("prompt", None)
    messages = meta.pop("messages", None)
    link = {
        "transform": meta.pop("transform", None),
        "source_prompt": meta.pop("source_prompt", None),
    }
    if (link["transform"] is None) != (link["source_prompt"] is None) or not (
        link["source_prompt"] is None
        or (isinstance(link["source_prompt"], int) and isinstance(link["transform"], str))
    ):
        raise BadInput(
            f"{where}: a variant needs both 'transform' (a string) and an integer 'source_prompt'"
        )
    if messages is None and isinstance(prompt, list):
        messages, prompt = prompt, None
    if messages is not None:
        chat = _chat(messages, where)
        text = json.dumps(chat, ensure_ascii=False)
        return Prompt(text=text, messages=chat, meta=meta, **link)
    if isinstance(prompt, dict):
        inner = dict(prompt)
        prompt = inner.pop("text", None)
        if inner:
            meta["prompt"] = inner  # RealToxicityPrompts scores of the prompt
    elif prompt is None:
        prompt = meta.pop("text", None)
    if not isinstance(prompt, str):
        raise BadInput(
            f'{where}: no prompt: expected "prompt": "...", "prompt": {{"text": ...}}, '
            '"text": "..." or "messages": [...]'
        )
    if not prompt.strip():
        raise BadInput(f"{where}: empty prompt")
    return Prompt(text=prompt, meta=meta, **link)


def _is_jsonl(path: Path, text: str) -> bool:
    if path.suffix.lower() in JSONL_SUFFIXES:
        return True
    first = next(line for line in lines(text) if line.strip())
    return first.lstrip().startswith("{")


def read_prompts(path: str | Path, name: str | None = None) -> PromptSet:
    """Read and validate a prompt file; the set is named after the file unless ``name`` is given."""
    path = Path(path)
    text = read_text_file(path)
    prompts = []
    if _is_jsonl(path, text):
        prompts = [_from_json(record, where) for where, record in jsonl_records(path, text)]
    else:
        prompts = [Prompt(text=line) for line in lines(text) if line.strip()]
    if not prompts:
        raise BadInput(f"{path}: no prompts")
    for i, p in enumerate(prompts):
        if p.source_prompt is not None and not 0 <= p.source_prompt < len(prompts):
            raise BadInput(
                f"{path}: prompt {i} links to source_prompt {p.source_prompt}, not in the file"
            )
        if p.source_prompt == i:
            raise BadInput(f"{path}: prompt {i} is a variant of itself (source_prompt {i})")
    set_name = name or path.stem
    return PromptSet(name=set_name, source=str(path.resolve()), prompts=prompts)


def to_record(prompt: Prompt) -> dict:
    """A prompt as a JSONL record that :func:`read_prompts` reads back the same."""
    record = dict(prompt.meta)
    if prompt.messages is not None:
        record["messages"] = prompt.messages
    else:
        record["prompt"] = prompt.text
    if prompt.transform is not None:
        record["transform"] = prompt.transform
        record["source_prompt"] = prompt.source_prompt
    return record


def write_prompts(prompts: list[Prompt], path: str | Path) -> None:
    from actwh.warehouse.layout import replace_file

    replace_file(
        path, "".join(json.dumps(to_record(p), ensure_ascii=False) + "\n" for p in prompts)
    )


def shipped_prompts() -> Path:
    """The prompt set that ships with actwh (see data/PROVENANCE.md)."""
    from importlib.resources import files

    return Path(str(files("actwh.data") / "prompts.jsonl"))


def shipped_chats() -> Path:
    """Six multi-turn chats that ship with actwh (see data/PROVENANCE.md)."""
    from importlib.resources import files

    return Path(str(files("actwh.data") / "chats.jsonl"))
