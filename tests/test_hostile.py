"""A warehouse made to attack its reader: names, prompts, chat messages and tokenizer tokens that
carry markup. The report must show them as text: no element, attribute or script it did not
write, checked with an HTML parser and, where Chromium is installed, in a browser."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import duckdb
import pytest
from browser import CHROMIUM, NO_CHROMIUM, dump_dom
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


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
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
    out = root / "report.html"
    cli("report", wh, "-o", out, "--direction", IMG, "--token", CLOSE_SCRIPT, "--prompts", 1)
    return out


def test_the_report_writes_no_markup_it_did_not_mean(hostile_report):
    page = hostile_report.read_text()
    parsed = Elements()
    parsed.feed(page)
    assert set(parsed.tags) <= TAGS, set(parsed.tags) - TAGS
    assert parsed.tags.count("script") == 2 and page.count("</script>") == 2
    assert not [name for name, _ in parsed.attributes if name.startswith("on")]
    assert all(v.startswith("#") for name, v in parsed.attributes if name == "href")
    # the hostile strings are there, as text: in the summary, notes and token views
    text = "".join(parsed.text)
    assert IMG in text and CLOSE_SCRIPT in text and QUOTE.strip() in text
    # and in the charts' data, as JSON that cannot close its script block
    specs = json.loads(page.split("const specs = ", 1)[1].split(";\n", 1)[0])
    assert CLOSE_SCRIPT in json.dumps(specs, ensure_ascii=False)


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_nothing_hostile_runs_in_a_browser(hostile_report, tmp_path):
    dom = dump_dom(hostile_report, tmp_path / "profile")
    assert "rendered" in dom and "errors: 0" in dom  # the page's own script ran to the end
    assert "pwned" not in dom
