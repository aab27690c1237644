"""A warehouse made to attack its reader (tests/test_hostile.py: the report; tests/test_serve.py:
the server): names, prompts, chat messages and tokenizer tokens that carry markup."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import duckdb
from cli_helpers import cli
from tiny_models import build_gpt2

# Each, if it ran, would leave "pwned" in the page; as text it only holds 'p'+'wned'.
CLOSE_SCRIPT = "</script><script>document.body.dataset.x='p'+'wned'</script>"
IMG = "<img src=x onerror=\"document.body.dataset.y='p'+'wned'\">"
QUOTE = "\"' onmouseover=\"document.body.dataset.z='p'+'wned'\" x='"
HOSTILE = [CLOSE_SCRIPT, IMG, QUOTE]

TAGS = {  # every element the report writes
    *"html head meta title style script body h1 h2 p nav a section div table thead tbody tr th td".split(),
    *"b code span mark br".split(),
}


class Elements(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.attributes, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += attrs

    def handle_data(self, data):
        self.text.append(data)


def hostile_warehouse(root):
    """A warehouse whose names, prompts and tokens carry markup (a pair of runs, δx, a
    direction named with an element): the report's and the server's attacker."""
    model = build_gpt2(root / "model", extra_tokens=HOSTILE)
    tuned = build_gpt2(root / "tuned", seed=1, extra_tokens=HOSTILE)  # the same tokenizer
    prompts = root / "prompts.jsonl"
    lines = [
        {"prompt": f"The history of {IMG} is"},
        {"prompt": f"You are such a piece of {CLOSE_SCRIPT}"},
        {"prompt": f"Holy cow {QUOTE} that was"},
        {"prompt": f"rot13 {IMG}", "transform": IMG, "source_prompt": 0},
        {"messages": [{"role": "user", "content": f"Water {CLOSE_SCRIPT}"}]},
    ]
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    wh = root / "wh"
    cli("index-vectors", wh, "--model", model, "--no-progress")
    cli("directions", "add", wh, "rnd", "--model", "model", "--random")
    common = ["--capture", "resid_mid", "--track-neurons", "rnd:4", "--logit-lens", 3]
    common += ["--target-tokens", CLOSE_SCRIPT, "--no-progress"]
    cli(
        "ingest",
        wh,
        "--model",
        model,
        "--prompts",
        prompts,
        "--name",
        "base",
        "--generate",
        3,
        *common,
    )
    cli("ingest", wh, "--model", tuned, "--name", "tuned", "--teacher-force", "base", *common)
    cli("directions", "add", wh, "dx", "--delta", "base", "tuned")
    # a colleague's warehouse may name things as it likes: actwh refuses such names, so write
    # them into the catalog directly
    with duckdb.connect(str(wh / "catalog.duckdb")) as con:
        con.execute("update directions set name = ? where name = 'rnd'", [IMG])
    return wh
