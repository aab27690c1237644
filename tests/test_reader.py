"""A torch-free reader: with only the core installed (no torch, transformers, trl, datasets,
altair ...), every read command and the read API work on a warehouse the full install made, and a
command that needs an extra says which to install."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import actwh
from actwh.cli import main

# Makes importing any module of an extra fail, as in a fresh `pip install actwh`.
NO_EXTRAS = """
import importlib.abc, sys
EXTRAS = {"torch", "transformers", "accelerate", "gguf", "trl", "sklearn", "datasets",
          "altair", "vl_convert", "profanity_check", "better_profanity"}
class NoExtras(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in EXTRAS:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoExtras())
"""


def core_only(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", NO_EXTRAS + code], capture_output=True, text=True, timeout=120
    )


def actwh_core(*args) -> subprocess.CompletedProcess:
    """``actwh ARGS`` where no extra can be imported."""
    code = f"from actwh.cli import main\nmain({[str(a) for a in args]!r})\n"
    return core_only(code)


@pytest.fixture(scope="module")
def made(tmp_path_factory, gpt2_dir):
    """A warehouse the full install made: a run, the value vectors, a direction."""
    root = tmp_path_factory.mktemp("reader")
    wh = root / "wh"
    prompts = root / "prompts.txt"
    prompts.write_text("Hello there\nThe weather is\nYou are a\n")
    for args in (
        ["ingest", wh, "--model", gpt2_dir, "--prompts", prompts, "--generate", 2,
         "--capture", "resid_mid", "--name", "base", "--layers", "1-2", "--logit-lens", 3,
         "--target-tokens", "#5", "--track-neurons", "1:3", "--no-progress"],
        ["index-vectors", wh, "--model", gpt2_dir, "--no-progress"],
        ["directions", "add", wh, "rnd", "--model", "tiny-gpt2", "--random"],
    ):  # fmt: skip
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, result.output
    return root, wh


@pytest.mark.parametrize(
    "args, expect",
    [
        (["sql", "{wh}", "select count(*) as n from tokens", "--csv"], "n\n"),
        (["queries", "{wh}"], "toxicity_table"),
        (
            [
                "query",
                "{wh}",
                "top_toxic_vectors",
                "-p",
                "model=tiny-gpt2",
                "-p",
                "direction=rnd",
                "-p",
                "k=3",
            ],
            "cos",
        ),
        (["tables", "{wh}"], "residuals"),
        (["files", "{wh}", "residuals"], ".parquet"),
        (["search", "{wh}", "--direction", "rnd", "-k", "3"], "neuron"),
        (["directions", "list", "{wh}"], "rnd"),
        (["directions", "show", "{wh}", "rnd"], "rnd"),
        (["export", "{wh}", "residuals", "{root}/residuals-export", "--no-progress"], "rows"),
    ],
)
def test_read_commands_work_without_any_extra(made, args, expect):
    root, wh = made
    args = [a.format(wh=wh, root=root) for a in args]
    result = actwh_core(*args)
    assert result.returncode == 0, result.stderr
    assert expect in result.stdout + result.stderr


@pytest.mark.parametrize(
    "args, extra",
    [
        (["ingest", "{wh}", "--model", "embedded", "--name", "x"], "models"),
        (["report", "{wh}", "--out", "{root}/r.html"], "report"),
        (["export-dataset", "{wh}", "{root}/ds", "--run", "base", "--sites", "resid_mid", "--layers", "1"],
         "datasets"),
    ],
)  # fmt: skip
def test_a_command_without_its_extra_says_which_to_install(made, args, extra):
    root, wh = made
    result = actwh_core(*[a.format(wh=wh, root=root) for a in args])
    assert result.returncode == 2, result.stderr
    # what works from a clone (actwh is on no index), CPU torch first where torch is needed
    clone = Path(actwh.__file__).resolve().parent
    assert f"pip install -e '{clone}[{extra}]'" in result.stderr
    assert ("download.pytorch.org/whl/cpu" in result.stderr) == (extra == "models")
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_read_api_works_without_any_extra(made):
    root, wh = made
    code = f"""
import actwh, polars as pl
wh = actwh.open({str(wh)!r})
print(repr(wh).splitlines()[0])
assert wh.sql("select count(*) from tokens").item() > 0
assert wh.scan("tokens").filter(pl.col("is_generated")).collect().height > 0
vectors, keys = wh.vectors("residuals", run="base", layer=1)
assert vectors.shape[0] == keys.height > 0
assert wh.search("rnd", k=3).height == 3
wh.export("residuals", {str(root / "api-export")!r}, runs=["base"], progress=False)
assert wh.tables().height > 0 and wh.directions().height == 1
import sys
assert not {{"torch", "transformers", "altair"}} & set(sys.modules)
print("ok")
"""
    result = core_only(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("ok")


def test_a_read_piped_into_head_ends_quietly(made):
    _, wh = made
    command = (
        f"{sys.executable} -c 'from actwh.cli import main; main()' "
        f"sql {wh} 'select * from range(200000)' --csv | head -2"
    )
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True)
    assert result.stdout.splitlines() == ["range", "0"]
    assert result.stderr == ""


@pytest.mark.parametrize(
    "params, named",
    [
        (["activation_drop", "-p", "base_run=bsae", "-p", "tuned_run=base"], "'bsae': no such run"),
        (["prompt_shift", "-p", "base_run=base", "-p", "tuned_run=base", "-p", "layer=0",
          "-p", "direction=rnd"],
         "-p layer 0: run base stored layers 1-2"),
        (["prompt_shift", "-p", "base_run=base", "-p", "tuned_run=base", "-p", "layer=1",
          "-p", "direction=rnd", "-p", "site=resid_pre"], "'resid_pre': no such site"),
        (["activation_drop", "-p", "base_run=base", "-p", "tuned_run=base", "-p", "direction=rdn"],
         "did you mean 'rnd'?"),
        (["logit_lens_target", "-p", "token=garbage"], "no such target token; known: "),
        (["neuron_contexts", "-p", "base_run=base", "-p", "layer=1", "-p", "neuron=7"],
         "neither tracked it nor captured mlp_post (tracked at layer 1: [3])"),
        (["value_vector_shift", "-p", "model=tiny-gtp2", "-p", "layer=1"],
         "did you mean 'tiny-gpt2'?"),
    ],
)  # fmt: skip
def test_a_mistyped_name_is_an_error_naming_it(made, params, named):
    """A typo never looks like "no effect": one line naming the value and the known ones."""
    _, wh = made
    result = CliRunner().invoke(main, ["query", str(wh), *params])
    assert result.exit_code == 2, result.output
    assert named in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_vectors_of_a_value_the_table_does_not_hold_is_an_error(made):
    import actwh
    from actwh.errors import NotFound

    _, wh = made
    with actwh.open(wh) as w:
        assert w.vectors("residuals", run="base", layer=1)[0].shape[0] > 0
        for filters, named in (
            ({"run": "base", "site": "resid_post"}, "'resid_post': no such site in residuals"),
            ({"run": "bsae", "layer": 1}, "did you mean 'base'?"),
            ({"run": "base", "layer": 0}, "0: no such layer in residuals; known: 1, 2"),
        ):
            with pytest.raises(NotFound, match=re.escape(named)):
                w.vectors("residuals", **filters)


def test_info_queries_name_and_sql_file(made, tmp_path):
    """The CLI's front door: an overview, one analysis explained, SQL from a file."""
    _, wh = made
    info = CliRunner().invoke(main, ["info", str(wh)])
    assert info.exit_code == 0, info.output
    for part in ("models:", "runs:", "tiny-gpt2", "resid_mid", "1-2", "directions:", "rnd"):
        assert part in info.output
    one = CliRunner().invoke(main, ["queries", str(wh), "activation_drop"])
    assert one.exit_code == 0 and "base_run (required)" in one.output
    assert f"example: actwh query {wh} activation_drop -p base_run=..." in one.output
    script = tmp_path / "count.sql"
    script.write_text("select count(*) as n from runs\n")
    out = CliRunner().invoke(main, ["sql", str(wh), str(script), "--csv"])
    assert out.exit_code == 0 and out.stdout == "n\n1\n"
    missing = CliRunner().invoke(main, ["sql", str(wh), str(tmp_path / "nope.sql")])
    assert missing.exit_code == 2 and "nope.sql: No such file" in missing.stderr


WIDE = (
    "select 'smollm2-135m-instruct' as model, "
    + ", ".join(f"{i}.25::FLOAT as column_number_{i}" for i in range(12))
    + ", [' a,b', 'c\"d'] as top_tokens"
)


def test_a_wide_result_reads_at_the_terminal_width(made):
    """Wider than the terminal: one record per row, every value whole, the same digits as CSV."""
    _, wh = made
    shown = CliRunner().invoke(main, ["sql", str(wh), WIDE], env={"COLUMNS": "100"}).stdout
    assert shown.startswith("-[ RECORD 1 ]")
    assert "model            | smollm2-135m-instruct" in shown
    assert "column_number_11 | 11.25" in shown and max(map(len, shown.splitlines())) <= 100
    narrow = CliRunner().invoke(main, ["sql", str(wh), "select 1 as a"], env={"COLUMNS": "100"})
    assert narrow.stdout.splitlines()[:3] == ["| a |", "|---|", "| 1 |"]


def test_markdown_is_a_table_and_csv_keeps_lists_whole(made):
    import csv
    import io
    import json

    from markdown_it import MarkdownIt

    _, wh = made
    markdown = CliRunner().invoke(main, ["sql", str(wh), WIDE, "--markdown"]).stdout
    tokens = MarkdownIt().enable("table").parse(markdown)
    assert [t.type for t in tokens].count("th_open") == 14
    cells = [t.content for t in tokens if t.type == "inline"]
    assert "smollm2-135m-instruct" in cells and '[" a,b","c\\"d"]' in cells
    out = CliRunner().invoke(main, ["sql", str(wh), WIDE, "--csv"]).stdout
    row = next(csv.DictReader(io.StringIO(out)))
    assert json.loads(row["top_tokens"]) == [" a,b", 'c"d'] and row["column_number_3"] == "3.25"


def test_listing_files_reads_the_catalog_alone(made):
    """`actwh files` answers from the catalog: it builds no view over every committed file (the
    cost that kept it from starting in under a second), and still names a damaged file."""
    import actwh

    _, wh = made
    with actwh.open(wh) as w:
        listed = w.files("residuals", runs="base", layers=[1])
        assert listed and all(p.suffix == ".parquet" for p in listed)
        assert not w.snapshot.datasets  # no fact table's files were looked at
        assert w.files("residuals", runs="base", layers=[1]) == listed
