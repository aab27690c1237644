"""The library alone: docs/python.md's Python study, run as written on a tiny model; the Warehouse's
rules (a write shows at once, errors name arguments, natural order, notebook manners)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tiny_models import build_family

import actwh
from actwh.cli import main
from actwh.errors import ActwhError

PYTHON_DOC = Path(__file__).resolve().parents[1] / "docs" / "python.md"


def readme_script() -> str:
    """The Python block of docs/python.md's "The study in Python" section."""
    section = PYTHON_DOC.read_text().split("## The study in Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def with_knobs(script: str, **knobs: str) -> str:
    """The script with its top-level settings (``MODEL = ...``) replaced."""
    for name, value in knobs.items():
        script, n = re.subn(rf"^{name} = .*$", f"{name} = {value}", script, flags=re.M)
        assert n == 1, name
    return script


@pytest.fixture(scope="module", params=["llama", "gpt_neox", "gemma2"])
def study(request, tmp_path_factory, llama_dir):
    """The docs' script, as written but for its settings, on a tiny model: gated (Llama),
    GELU with attention and MLP in parallel (GPT-NeoX), and norms after the MLP (Gemma 2)."""
    out = tmp_path_factory.mktemp("library")
    model = llama_dir if request.param == "llama" else build_family(out / "model", request.param)
    dpo = "DPOOptions(learning_rate=1e-3, max_steps=4, eval_every=2, batch_size=4)"
    script = with_knobs(
        readme_script(),
        MODEL=repr(str(model)),
        OUT=f"Path({str(out)!r})",
        TARGETS="[5, 9]",
        DPO=dpo,
        SITE=repr("resid_pre" if request.param == "gpt_neox" else "resid_mid"),
    )
    assert "subprocess" not in script and "actwh.cli" not in script
    namespace: dict = {}
    exec(compile(script, "docs/python.md (The study in Python)", "exec"), namespace)  # noqa: S102
    yield out, namespace["wh"]
    namespace["wh"].close()


def test_the_readme_script_runs_the_whole_study(study):
    out, wh = study
    models = set(wh.query("toxicity_table")["model"])
    base = wh.sql("select name from models where role = 'base'").item()
    assert models == {base, "dpo", "unaligned", "unaligned-control"}
    roles = dict(wh.sql("select name, role from models").iter_rows())
    assert roles["dpo"] == "dpo" and roles["unaligned"] == "intervened"
    assert roles["unaligned-control"] == "control"
    runs = wh.sql("select name, status, mode from runs where name in ('base', 'dpo')")
    assert set(runs["status"]) == {"complete"} and "teacher_forced" in set(runs["mode"])
    deltas = wh.directions().filter(wh.directions()["kind"] == "delta")["name"].to_list()
    assert deltas == [f"dx.{layer}" for layer in range(3)]
    assert wh.query("activation_drop", base_run="base", tuned_run="dpo").height > 0
    report = (out / "report.html").read_text()
    missing = re.findall(r"Not available: [^<]*", report)
    # δx of layer 0 (where a tiny model's top neuron may be) has no earlier layers to compare
    assert [m for m in missing if "layers before 0 " not in m] == []


def test_a_write_shows_at_once(tmp_path, gpt2_dir, prompts_file):
    wh = actwh.open(tmp_path / "wh", create=True)
    assert not (tmp_path / "wh").exists() or not any((tmp_path / "wh").iterdir())
    wh.ingest(gpt2_dir, prompts_file, name="a", generate=2, progress=False)
    assert wh.sql("select count(*) from runs").item() == 1
    before = wh.sql("select count(*) from tokens").item()
    wh.ingest(gpt2_dir, prompts_file, name="b", generate=2, progress=False)
    assert wh.sql("select count(*) from tokens").item() == 2 * before
    other = actwh.open(tmp_path / "wh")  # another reader keeps its snapshot until refresh
    n = other.sql("select count(*) from runs").item()
    wh.ingest(gpt2_dir, prompts_file, name="c", generate=2, layers=range(2), progress=False)
    assert other.sql("select count(*) from runs").item() == n
    assert other.refresh().sql("select count(*) from runs").item() == n + 1
    assert wh.sql("select config from runs where name = 'c'").item().count('"layers": [0, 1]') == 1


def test_errors_name_arguments_in_the_library_and_flags_in_the_cli(tmp_path, gpt2_dir):
    wh = actwh.open(tmp_path / "wh", create=True)
    with pytest.raises(ActwhError) as raised:
        wh.ingest(gpt2_dir, teacher_force="nope", progress=False)
    assert str(raised.value).startswith("teacher_force nope:")
    with pytest.raises(ActwhError, match=r"^capture: unknown site 'resid'"):
        wh.ingest(gpt2_dir, capture=["resid"], progress=False)
    with pytest.raises(ActwhError, match=r"^layers: layer 7 is out of range"):
        wh.ingest(gpt2_dir, layers=[7], progress=False)
    result = CliRunner().invoke(
        main, ["ingest", str(tmp_path / "wh"), "--model", str(gpt2_dir), "--capture", "resid"]
    )
    assert result.exit_code == 2
    assert result.output.startswith("error: --capture: unknown site 'resid'")
    assert not (tmp_path / "wh").exists()  # refused before anything was written


def test_names_sort_naturally_and_the_warehouse_summarises_itself(tmp_path, gpt2_dir):
    wh = actwh.open(tmp_path / "wh", create=True)
    wh.index_vectors(gpt2_dir, progress=False)
    for name in ("r.10", "r.2", "r.1"):
        wh.add_direction(name, model="tiny-gpt2", random=True)
    assert wh.directions()["name"].to_list() == ["r.1", "r.2", "r.10"]
    printed = CliRunner().invoke(main, ["directions", "list", str(tmp_path / "wh")]).output
    assert printed.index("r.2") < printed.index("r.10")
    assert np.allclose(wh.direction("r.2"), actwh.open(tmp_path / "wh").direction("r.2"))
    words, unembed = wh.direction_tokens("r.2", k=3)
    assert len(words) == 3 and unembed == "raw"  # GPT-2's value vectors are read raw
    shown = CliRunner().invoke(main, ["directions", "show", str(tmp_path / "wh"), "r.2", "-k", "3"])
    assert (
        shown.exit_code == 0 and f"top tokens (raw): {', '.join(map(repr, words))}" in shown.output
    )
    text = repr(wh)
    assert "models: tiny-gpt2" in text and "value_vectors 384" in text
    # the data size is the catalog's: the committed files' bytes, no file walked
    committed = wh.sql("select sum(n_bytes) from commit_files").item()
    assert wh.summary()["bytes"] == committed > 0 and "data: " in text
    page = wh._repr_html_()
    assert page.startswith("<b>actwh warehouse</b>") and "<td" in page and "tiny-gpt2" in page


def test_options_take_python_values_or_cli_strings(tmp_path, gpt2_dir, prompts_file):
    wh = actwh.open(tmp_path / "wh", create=True)
    wh.index_vectors(gpt2_dir, progress=False)
    wh.add_direction("rnd", model="tiny-gpt2", random=True)
    common = dict(generate=2, logit_lens=3, progress=False)
    wh.ingest(
        gpt2_dir,
        prompts_file,
        name="py",
        capture=["resid_mid"],
        layers=range(1, 3),
        track_neurons=[(1, 3), (2, 5)],
        target_tokens=[5, 9],
        **common,
    )
    wh.ingest(
        gpt2_dir,
        prompts_file,
        name="cli",
        capture="resid_mid",
        layers="1-2",
        track_neurons="1:3,2:5",
        target_tokens="#5,#9",
        **common,
    )
    configs = [json.loads(c) for c in wh.sql("select config from runs order by name")["config"]]
    for key in ("capture", "layers", "track_neurons", "target_tokens", "directions"):
        assert configs[0][key] == configs[1][key], key
    assert configs[0]["layers"] == [1, 2] and configs[0]["track_neurons"] == {"1": [3], "2": [5]}


def test_a_wrong_type_is_an_error_naming_the_argument(tmp_path, gpt2_dir, prompts_file):
    """They used to be raw AttributeError/TypeError without the argument, or worse, quietly
    taken (layers=True was layer 1, layers=[1.5] layer 1)."""
    wh = actwh.open(tmp_path / "wh", create=True)
    cases = {
        "prompts: expected str or Path or PromptSet or None, got int 123": lambda: wh.ingest(
            gpt2_dir, 123
        ),
        "prompts: expected str or Path or PromptSet or None, got list": lambda: wh.ingest(
            gpt2_dir, ["a", "b"]
        ),
        "generate: expected int, got str '5'": lambda: wh.ingest(
            gpt2_dir, prompts_file, generate="5"
        ),
        "name: expected str or None, got int 5": lambda: wh.ingest(gpt2_dir, prompts_file, name=5),
        "layers: expected str or int or a list of int or None, got list [1.5]": lambda: wh.ingest(
            gpt2_dir, prompts_file, layers=[1.5]
        ),
        "layers: expected str or int or a list of int or None, got bool True": lambda: wh.ingest(
            gpt2_dir, prompts_file, layers=True
        ),
        "layers: layer 999999999999 is out of range": lambda: wh.ingest(
            gpt2_dir, prompts_file, layers=range(10**12)
        ),
        "out: expected str or Path, got NoneType None": lambda: wh.export("tokens", None),
        "runs: expected str or a list of str or None, got int 5": lambda: wh.files(
            "tokens", runs=5
        ),
        "path: expected str or Path, got int 5": lambda: actwh.open(5),
    }
    for message, call in cases.items():
        with pytest.raises(ActwhError) as error:
            call()
        assert str(error.value).startswith(message), (message, str(error.value))
    assert not (tmp_path / "wh").exists()  # nothing was made
