"""A warehouse made to attack its reader: names, prompts, chat messages and tokenizer tokens that
carry markup. The report must show them as text: no element, attribute or script it did not
write, checked with an HTML parser and, where Chromium is installed, in a browser."""

from __future__ import annotations

import json

import pytest
from browser import CHROMIUM, NO_CHROMIUM, dump_dom
from cli_helpers import cli
from hostile import CLOSE_SCRIPT, IMG, QUOTE, TAGS, Elements, hostile_warehouse


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    wh = hostile_warehouse(root)
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
