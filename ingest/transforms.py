"""Prompt variants: the same prompts ROT13-, Base64- or leetspeak-encoded, linked to the original.

The paper's open question: do encoding tricks move the residual stream outside the region the DPO
offset covers, so toxic value vectors fire again? ``actwh prompts transform`` writes a prompt file
holding every original prompt followed by each variant; a variant carries ``transform`` and
``source_prompt`` (the index of its original in the same file), so one run covers both and one
query compares them (plain vs transformed, base vs tuned).
"""

from __future__ import annotations

import base64
import codecs
import json
from pathlib import Path

from actwh.ingest.prompts import Prompt, read_prompts, write_prompts

_LEET = str.maketrans(
    {
        "a": "4",
        "e": "3",
        "i": "1",
        "o": "0",
        "s": "5",
        "t": "7",
        "A": "4",
        "E": "3",
        "I": "1",
        "O": "0",
        "S": "5",
        "T": "7",
    }
)

TRANSFORMS = {
    "rot13": lambda text: codecs.encode(text, "rot13"),
    "base64": lambda text: base64.b64encode(text.encode()).decode("ascii"),
    "leet": lambda text: text.translate(_LEET),
}


def transformed(prompt: Prompt, name: str, source: int) -> Prompt:
    """``prompt`` encoded with transform ``name`` (chat prompts: every user message)."""
    encode = TRANSFORMS[name]
    if prompt.messages is None:
        return Prompt(encode(prompt.text), meta=prompt.meta, source_prompt=source, transform=name)
    messages = [
        {**m, "content": encode(m["content"])} if m["role"] == "user" else m
        for m in prompt.messages
    ]
    return Prompt(
        json.dumps(messages, ensure_ascii=False),
        messages=messages,
        meta=prompt.meta,
        source_prompt=source,
        transform=name,
    )


def transform_file(
    source: str | Path, out: str | Path, names: list[str], force: bool = False
) -> int:
    """Write the originals of ``source`` then each variant to ``out`` (not inside a warehouse;
    an existing file only with ``force``); returns the line count."""
    from actwh.warehouse.layout import output_file

    output_file(out, "out", force=force)
    originals = [p for p in read_prompts(source).prompts if p.transform is None]
    prompts = list(originals)
    for name in names:
        prompts += [transformed(p, name, i) for i, p in enumerate(originals)]
    write_prompts(prompts, out)
    return len(prompts)
