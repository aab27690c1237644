"""The CLI as a user runs it: ingest then query; bad input gets one line and changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from actwh.cli import main
from actwh.errors import ActwhError


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def listing(path):
    """Every file under ``path`` with its size and mtime: 'unchanged' means this is equal."""
    if not path.exists():
        return None
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*"))


def test_ingest_then_sql(tmp_path, gpt2_dir, prompts_file):
    wh = tmp_path / "wh"
    result = run(
        "ingest",
        wh,
        "--model",
        gpt2_dir,
        "--prompts",
        prompts_file,
        "--generate",
        5,
        "--capture",
        "resid_mid,mlp_post",
        "--layers",
        "1-2",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    assert "ingested run tiny-gpt2.prompts: 4 prompts" in result.output

    result = run(
        "sql",
        wh,
        "select layer, count(*) as n from residuals group by layer order by layer",
        "--csv",
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "layer,n" and [l.split(",")[0] for l in lines[1:]] == ["1", "2"]
    assert lines[1].split(",")[1] == lines[2].split(",")[1]

    result = run(
        "sql",
        wh,
        "select prompt, continuation from generations where prompt = $p",
        "-p",
        "p=2",
        "--json",
    )
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 1 and rows[0]["prompt"] == 2

    result = run("sql", wh, "-", "--table", input="select count(*) as n from mlp_acts")
    assert result.exit_code == 0 and "| n " in result.stdout
    # valid Markdown: one header row, one separator, then the rows (no row of dtypes)
    lines = run("sql", wh, "select 1 as a, 'x' as b").stdout.strip().splitlines()
    assert lines == ["| a | b |", "|---|---|", "| 1 | x |"]

    out = tmp_path / "out.parquet"
    assert run("sql", wh, "select * from tokens", "--parquet", out).exit_code == 0
    import polars as pl

    assert (
        pl.read_parquet(out).height == pl.read_parquet(out).select("prompt", "pos").unique().height
    )

    result = run("tables", wh, "--csv")
    assert "residuals," in result.stdout


def test_completed_run_is_not_redone(tmp_path, gpt2_dir, prompts_file):
    wh = tmp_path / "wh"
    args = (
        "ingest",
        wh,
        "--model",
        gpt2_dir,
        "--prompts",
        prompts_file,
        "--generate",
        2,
        "--no-progress",
    )
    assert run(*args).exit_code == 0
    again = run(*args)
    assert again.exit_code == 2 and "already exists and is complete" in again.stderr


@pytest.mark.parametrize(
    "make_args, message",
    [
        (
            lambda p, m: ["--model", m, "--prompts", p["malformed"]],
            r"malformed.jsonl:2: malformed JSON",
        ),
        (lambda p, m: ["--model", m, "--prompts", p["empty"]], r"empty.jsonl: empty file"),
        (
            lambda p, m: ["--model", "no-such/model-xyz", "--prompts", p["good"]],
            r"--model no-such/model-xyz: could not load",
        ),
        (
            lambda p, m: ["--model", "./missing/model", "--prompts", p["good"]],
            r"no such model file",
        ),
        (
            lambda p, m: ["--model", m, "--prompts", p["good"], "--layers", "7"],
            r"layer 7 is out of range; the model has 3 layers",
        ),
        (lambda p, m: ["--model", m, "--prompts", p["good"], "--layers", "x"], r"--layers 'x'"),
        (
            lambda p, m: ["--model", m, "--prompts", p["good"], "--capture", "resid_foo"],
            r"unknown site 'resid_foo'",
        ),
        (lambda p, m: ["--model", m, "--prompts", p["good"], "--name", "a/b"], r"invalid run name"),
        (
            lambda p, m: ["--model", m, "--prompts", p["good"], "--name", "r" * 300],
            r"invalid run name r{20}…: 300 characters, at most 128",
        ),
        (
            lambda p, m: ["--model", p["garbage.gguf"], "--prompts", p["good"]],
            r"garbage.gguf: not a GGUF model actwh can read \(.*magic bytes",
        ),
        (
            lambda p, m: ["--model", p["truncated"], "--prompts", p["good"]],
            r"--model .*truncated: cannot load the model in .*truncated \(Error while deserial",
        ),
        (
            lambda p, m: ["--model", p["no-tokenizer"], "--prompts", p["good"]],
            r"--model .*no-tokenizer: its tokenizer is empty",
        ),
        (
            lambda p, m: ["--model", p["wrong-config"], "--prompts", p["good"]],
            r"--model .*wrong-config: cannot load .*shapes are not those config.json describes",
        ),
        (
            lambda p, m: ["--model", m, "--prompts", p["good"], "--logit-lens", 100000],
            r"--logit-lens 100000: more than the model's vocabulary",
        ),
        (
            lambda p, m: ["--model", m, "--prompts", p["good"], "--layers", "0-999999999"],
            r"layer 999999999 is out of range",
        ),
        (  # it went to the hub, waited a minute and suggested nothing
            lambda p, m: ["--model", "embeded", "--prompts", p["good"]],
            r"--model 'embeded': no such shipped model \(did you mean 'embedded'\?\)",
        ),
        (lambda p, m: ["--model", m, "--prompts", p["good"], "--layers", ""], r"no layer given"),
        (lambda p, m: ["--model", m, "--prompts", p["good"], "--batch-size", 0], r"must be >= 1"),
    ],
)
@pytest.mark.parametrize("existing", [False, True])
def test_bad_input_changes_nothing(tmp_path, gpt2_dir, prompts_file, make_args, message, existing):
    files = {
        "good": prompts_file,
        "malformed": tmp_path / "malformed.jsonl",
        "empty": tmp_path / "empty.jsonl",
    }
    files["malformed"].write_text('{"prompt": "fine"}\n{"prompt": "broken\n')
    files["empty"].write_text("")
    files["garbage.gguf"] = tmp_path / "garbage.gguf"
    files["garbage.gguf"].write_bytes(bytes(range(256)) * 8)
    files["truncated"] = tmp_path / "truncated"  # a model directory with a cut safetensors file
    __import__("shutil").copytree(gpt2_dir, files["truncated"])
    weights = files["truncated"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    files["no-tokenizer"] = tmp_path / "no-tokenizer"  # a model folder without tokenizer files
    __import__("shutil").copytree(gpt2_dir, files["no-tokenizer"])
    for path in files["no-tokenizer"].glob("tokenizer*"):
        path.unlink()
    files["wrong-config"] = tmp_path / "wrong-config"  # config.json of another size
    __import__("shutil").copytree(gpt2_dir, files["wrong-config"])
    config = files["wrong-config"] / "config.json"
    config.write_text(config.read_text().replace('"n_embd": 32', '"n_embd": 64'))
    wh = tmp_path / "wh"
    if existing:
        assert (
            run(
                "ingest",
                wh,
                "--model",
                gpt2_dir,
                "--prompts",
                prompts_file,
                "--generate",
                1,
                "--no-progress",
            ).exit_code
            == 0
        )
    before = listing(wh)
    result = run("ingest", wh, *make_args(files, gpt2_dir), "--no-progress")
    assert result.exit_code == 2, result.output
    error_lines = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert len(error_lines) == 1, result.stderr
    assert __import__("re").search(message, error_lines[0]), error_lines[0]
    assert listing(wh) == before


def test_sql_errors(tmp_path, gpt2_dir, prompts_file):
    wh = tmp_path / "wh"
    assert run("sql", wh, "select 1").exit_code == 2
    run(
        "ingest",
        wh,
        "--model",
        gpt2_dir,
        "--prompts",
        prompts_file,
        "--generate",
        1,
        "--no-progress",
    )
    refused = run("sql", wh, "drop view tokens")
    assert refused.exit_code == 2 and "read-only" in refused.stderr
    bad = run("sql", wh, "select nope from tokens")
    assert bad.exit_code == 2 and bad.stderr.startswith("error: SQL error")
    assert run("sql", tmp_path, "select 1").exit_code == 2


def test_sql_is_read_only_for_real(tmp_path, gpt2_dir, prompts_file, monkeypatch):
    """Enforced by DuckDB's settings, through the CLI and the library alike: no writes (a
    data-modifying CTE is classed as SELECT), no file but the committed ones (not one beside
    them, not one relative to the working directory), no extension install, no change of
    configuration."""
    import actwh

    wh = tmp_path / "wh"
    run(
        "ingest",
        wh,
        "--model",
        gpt2_dir,
        "--prompts",
        prompts_file,
        "--generate",
        1,
        "--no-progress",
    )
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    # the working directory holds a data/ folder (a warehouse's layout) with a secret in it
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "secret.txt").write_text("not yours either")
    monkeypatch.chdir(tmp_path)
    orphan = next((wh / "data" / "tokens").rglob("*.parquet")).with_name("part-orphan.parquet")
    orphan.write_bytes(next((wh / "data" / "tokens").rglob("*.parquet")).read_bytes())
    hostile = {
        "with x as (delete from runs returning name) select count(*) from x": "writes",
        "with x as (insert into runs (name) values ('x') returning 1) select * from x": "writes",
        f"select * from read_text('{outside}')": "reads only its committed files",
        f"select * from read_csv('{outside}')": "reads only its committed files",
        f"select * from glob('{tmp_path}/*')": "reads only its committed files",
        "select * from read_text('data/secret.txt')": "reads only its committed files",
        "select * from read_text('./data/secret.txt')": "reads only its committed files",
        "select * from read_text('data/../../secret.txt')": "reads only its committed files",
        f"select * from read_parquet('{orphan}')": "reads only its committed files",
        "select * from read_parquet('https://example.com/x.parquet')": "reads only its committed files",
        "set enable_external_access = true": "read-only",
        "install httpfs": "read-only",
    }
    before = listing(wh)
    with actwh.open(wh) as w:
        for query, message in hostile.items():
            result = run("sql", wh, query)
            assert result.exit_code == 2 and message in result.stderr, (query, result.output)
            with pytest.raises(ActwhError, match=message):
                w.sql(query)
        # a parameter is a value, never a way around the rule
        with pytest.raises(ActwhError, match="reads only its committed files"):
            w.sql("select * from read_text($f)", {"f": "data/secret.txt"})
        result = run("sql", wh, "select * from read_text($f)", "-p", "f=data/secret.txt")
        assert result.exit_code == 2 and "reads only its committed files" in result.stderr
        # the same open warehouse still sees every run: nothing was deleted, not even in memory
        assert w.sql("select count(*) from runs").item() == 1
    assert listing(wh) == before
    # an output file never lands in the warehouse
    result = run("sql", wh, "select 1", "--parquet", wh / "catalog.duckdb")
    assert result.exit_code == 2 and "inside the warehouse" in result.stderr
    assert listing(wh) == before


def test_sql_starts_without_torch(tmp_path, gpt2_dir, prompts_file):
    wh = tmp_path / "wh"
    run(
        "ingest",
        wh,
        "--model",
        gpt2_dir,
        "--prompts",
        prompts_file,
        "--generate",
        1,
        "--no-progress",
    )
    code = (
        "import sys; from actwh.cli import main\n"
        f"args = ['sql', {str(wh)!r}, 'select count(*) from tokens', '--csv']\n"
        "main(args, standalone_mode=False)\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'transformers' not in sys.modules, 'transformers imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1].isdigit()


def peak_rss_kb(*command) -> int:
    """Peak resident memory of ``command`` (kB), its stdout thrown away."""
    code = (
        "import resource, subprocess, sys\n"
        "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, *map(str, command)], capture_output=True)
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


def test_sql_output_streams_in_flat_memory(tmp_path, gpt2_dir, prompts_file):
    """CSV, JSON and table output used to hold the whole result (1.9 GB for 1 M rows of 32
    floats); now they stream record batches, so 10× the rows cost about the same memory."""
    wh = tmp_path / "wh"
    run(
        "ingest",
        wh,
        "--model",
        gpt2_dir,
        "--prompts",
        prompts_file,
        "--generate",
        1,
        "--no-progress",
    )
    actwh_bin = Path(sys.executable).with_name("actwh")
    query = "select range as i, list_transform(range(32), lambda x: (x + range)::FLOAT) as v "
    for fmt in ("--csv", "--json", "--table"):
        small = peak_rss_kb(actwh_bin, "sql", wh, query + "from range(100000)", fmt)
        large = peak_rss_kb(actwh_bin, "sql", wh, query + "from range(1000000)", fmt)
        assert large < 1.5 * small, (fmt, small, large)


def test_a_short_result_is_one_table_however_duckdb_batches_it(capsys):
    """DuckDB hands back a GROUP BY's rows in batches of a few rows: still one table, one header."""
    import polars as pl

    from actwh.cli.output import emit

    emit(iter([pl.DataFrame({"run": ["a", "b"]}), pl.DataFrame({"run": ["c"]})]), ("table", None))
    out = capsys.readouterr().out
    assert out.count("| run") == 1 and all(f"| {r} " in out for r in "abc")


def test_the_shipped_models_are_declared_once_and_listed_without_torch():
    """`actwh demo --model` offers exactly the shipped models, read from their torch-free
    declaration: importing the CLI imports no torch."""
    import subprocess
    import sys

    code = (
        "import sys, actwh.cli as c, actwh.models.shipped as s; "
        "demo = c.main.commands['demo']; "
        "model = next(p for p in demo.params if p.name == 'model'); "
        "assert list(model.type.choices) == list(s.SHIPPED), model.type.choices; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--capture", "resid_mod"], "unknown site 'resid_mod'"),
        (["--layers", "40"], "layer 40 is out of range; the model has 3 layers"),
        (["--layers", "1-x"], "expected 'all', a layer like 19"),
        (["--track-neurons", "toxic_probe:abc"], "expected LAYER:NEURON pairs"),
        (["--generate", "-5"], "--generate -5: must be >= 0"),
        (["--prompts", "nope.jsonl"], "nope.jsonl: no such file"),
        (["--model", "embeded"], "no such shipped model (did you mean 'embedded'?)"),
    ],
)
def test_input_errors_come_before_the_model_loads(
    tmp_path, gpt2_dir, prompts_file, monkeypatch, flags, message
):
    """Each of these was said only after the model had loaded (up to a minute on a busy
    machine): a site, a layer list, a neuron spec, a number and a prompt file are checked first."""
    import actwh.ingest.registry as registry

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(registry, "load_model", no_loading)  # what open_model calls
    args = ["--model", str(gpt2_dir), "--prompts", str(prompts_file), *flags]
    result = run("ingest", str(tmp_path / "wh"), *args)
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert not (tmp_path / "wh").exists()


def test_an_unreachable_hub_is_one_line_at_once(tmp_path, monkeypatch):
    """A hub id with the hub out of reach retried for ~30 s and printed ten lines of retries. Now
    one HEAD request, bounded; a model in the local cache loads from it, any other is one line."""
    import time

    import huggingface_hub
    from huggingface_hub import constants

    import actwh.models.loading as loading

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # (the suite runs offline)
    started = time.monotonic()
    result = run("ingest", str(tmp_path / "wh"), "--model", "nobody/no-model")
    assert time.monotonic() - started < 20
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "the hub (http://127.0.0.1:9) cannot be reached" in (
        result.stderr
    )
    assert "not in the local cache" in result.stderr and not (tmp_path / "wh").exists()
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a: "/cache/config.json")
    assert loading._hub_or_cache("nobody/no-model") == {"local_files_only": True}


def test_help_imports_no_data_library():
    """`actwh --help` (and any command's) loads click and the options, not polars, pyarrow,
    DuckDB or torch: 0.35 s before polars was deferred, 0.16 s after (a quiet 2-core machine)."""
    code = (
        "import sys; from actwh.cli import main\n"
        "try:\n    main(['ingest', '--help'])\nexcept SystemExit:\n    pass\n"
        "loaded = [m for m in ('polars', 'pyarrow', 'duckdb', 'torch') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
