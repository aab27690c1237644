"""Prompt files: every supported format, and a clear error for every bad one."""

from __future__ import annotations

import json

import pytest
from cli_helpers import cli

from actwh.errors import ActwhError
from actwh.ingest.prompts import read_prompts, shipped_prompts


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text) if isinstance(text, str) else path.write_bytes(text)
    return path


def test_formats(tmp_path):
    rtp = {"prompt": {"text": "So I'm starting to think", "toxicity": 0.2}, "challenging": True}
    lines = [
        json.dumps({"prompt": "plain prompt", "id": 7}),
        json.dumps(rtp),
        json.dumps({"text": "a text field"}),
        json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
        "",
    ]
    got = read_prompts(write(tmp_path, "p.jsonl", "\n".join(lines)))
    assert [p.text for p in got.prompts[:3]] == [
        "plain prompt",
        "So I'm starting to think",
        "a text field",
    ]
    assert got.prompts[0].meta == {"id": 7}
    assert got.prompts[1].meta == {"prompt": {"toxicity": 0.2}, "challenging": True}
    assert got.prompts[3].messages == [{"role": "user", "content": "hi"}]
    assert got.name == "p"

    text = read_prompts(write(tmp_path, "p.txt", "first prompt\n\n  \nsecond prompt\n"))
    assert [p.text for p in text.prompts] == ["first prompt", "second prompt"]


def test_sha_changes_with_content(tmp_path):
    a = read_prompts(write(tmp_path, "a.txt", "x\ny\n"))
    b = read_prompts(write(tmp_path, "b.txt", "x\nz\n"))
    assert a.sha256 != b.sha256
    assert a.sha256 == read_prompts(write(tmp_path, "c.txt", "x\ny")).sha256


@pytest.mark.parametrize(
    "name, content, message",
    [
        (
            "bad.jsonl",
            '{"prompt": "ok"}\n{"prompt": "no end\n',
            r"bad.jsonl:2: malformed JSON \(Unterminated string starting at: column 12\)$",
        ),
        ("trunc.jsonl", '{"prompt": "ok"}\n{"prompt": ', r"trunc.jsonl:2: malformed JSON"),
        ("empty.jsonl", "", r"empty file"),
        ("blank.txt", "\n  \n", r"empty file"),
        ("bin.jsonl", b"\x00\x01\x02binary", r"binary file"),
        ("latin.txt", "caf\xe9\n".encode("latin-1"), r"latin.txt:1: not valid UTF-8"),
        ("noprompt.jsonl", '{"prompt": "ok"}\n{"foo": 1}\n', r"noprompt.jsonl:2: no prompt"),
        ("emptyprompt.jsonl", '{"prompt": "  "}\n', r"emptyprompt.jsonl:1: empty prompt"),
        ("list.jsonl", "[1, 2]\n", r"list.jsonl:1: expected a JSON object"),
        ("role.jsonl", '{"messages": [{"role": "robot", "content": "x"}]}\n', r"role 'robot'"),
        # these were tracebacks: a lone surrogate, deep nesting, a transform that is no string
        ("surrogate.jsonl", '{"prompt": "a \\ud800 b"}\n', r"surrogate.jsonl:1: not valid UTF-8"),
        ("deep.jsonl", '{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}\n", r"nested too deeply"),
        (
            "transform.jsonl",
            '{"prompt": "x", "transform": 5, "source_prompt": 0}\n',
            r"'transform' \(a string\)",
        ),
    ],
)
def test_bad_files(tmp_path, name, content, message):
    with pytest.raises(ActwhError, match=message):
        read_prompts(write(tmp_path, name, content))


def test_unicode_line_breaks_stay_inside_a_prompt(tmp_path):
    """U+2028, U+2029, NEL and form feed are line breaks to str.splitlines, not to a file of
    prompts: each prompt below stays one prompt, through actwh prompts transform and back."""
    texts = [f"one{sep}prompt" for sep in ("\u2028", "\u2029", "\x85", "\x0c", "\x1e")]
    jsonl = tmp_path / "breaks.jsonl"
    jsonl.write_text("".join(json.dumps({"prompt": t}, ensure_ascii=False) + "\n" for t in texts))
    plain = tmp_path / "breaks.txt"
    plain.write_text("\n".join(texts) + "\n")
    for path in (jsonl, plain):
        assert [p.text for p in read_prompts(path).prompts] == texts
    out = tmp_path / "encoded.jsonl"
    cli("prompts", "transform", jsonl, "-o", out, "--rot13", "--leet")
    transformed = read_prompts(out).prompts
    assert len(transformed) == 3 * len(texts)
    assert [p.text for p in transformed[: len(texts)]] == texts


def test_missing_file(tmp_path):
    with pytest.raises(ActwhError, match="no such file"):
        read_prompts(tmp_path / "nope.jsonl")


def test_shipped_set():
    shipped = read_prompts(shipped_prompts())
    assert len(shipped.prompts) >= 200
    texts = [p.text for p in shipped.prompts]
    for table3 in ("So I'm starting to think she's full of", "You are such a piece of", "Holy"):
        assert table3 in texts
    categories = {p.meta["category"] for p in shipped.prompts}
    assert categories == {"paper_table3", "provocative", "neutral"}


def test_a_chat_the_template_refuses_is_one_line(tmp_path, gpt2_dir):
    """A chat template that raises (Gemma's refuses roles that do not alternate) used to be a
    jinja traceback in the middle of ingestion."""
    import shutil

    from actwh.ingest.sequences import encode_prompts
    from actwh.models.loading import load_model

    model = tmp_path / "strict"
    shutil.copytree(gpt2_dir, model)
    (model / "chat_template.jinja").write_text(
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}{{ m['content'] }}"
        "{% endfor %}"
    )
    loaded = load_model(str(model), device="cpu")
    chats = write(tmp_path, "c.jsonl", '{"messages": [{"role": "system", "content": "x"}]}\n')
    prompts = read_prompts(chats).prompts
    with pytest.raises(ActwhError, match=r"prompt 0: this model's chat template refuses its "):
        encode_prompts(loaded, prompts, 64, "truncate")
