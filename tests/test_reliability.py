"""Crash-safe resume, concurrent workers, Ray, a PostgreSQL catalog, readers during writes,
integrity checks, and hostile input — against real ingestion processes."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from cli_helpers import cli, cli_error
from click.testing import CliRunner
from servers import free_port
from tiny_models import build_gpt2

import actwh
from actwh.cli import main
from actwh.ingest.options import IngestOptions
from actwh.warehouse.schema import fact_tables

ACTWH = str(Path(sys.executable).with_name("actwh"))
RUN_TABLES = [
    t for t, spec in fact_tables().items() if spec.partition[0] == "run" and t != "scores"
]
KEYS = ("layer", "prompt", "pos", "site", "direction", "neuron", "generated", "rank", "token_id")


# neuron_stats holds sums per commit: compare a run's totals (commits differ after a resume).
STATS_TOTALS = """select layer, neuron, generated, sum(n) as n, sum(n_pos) as n_pos, sum(sum) as sum,
       sum(sum_pos) as sum_pos, sum(sum_sq) as sum_sq
from neuron_stats where run = $r group by all"""


def tables_of(wh_path: Path, run: str) -> dict[str, pl.DataFrame]:
    """Every run table of ``run``, without the run column, in a canonical order."""
    out = {}
    with actwh.open(wh_path) as wh:
        for table in RUN_TABLES:
            query = (
                STATS_TOTALS
                if table == "neuron_stats"
                else f"select * exclude (run) from {table} where run = $r"
            )
            frame = wh.sql(query, {"r": run})
            order = [k for k in KEYS if k in frame.columns]
            out[table] = frame.sort(order) if order else frame
    return out


def assert_same_tables(a: dict, b: dict, exact: bool = True) -> None:
    """Identical rows; ``exact=False`` allows float rounding (another torch thread count sums
    in another order; a float16 vector may round to the neighbouring value), never a different
    token, position or row."""
    from polars.testing import assert_frame_equal

    for table in RUN_TABLES:
        assert a[table].height == b[table].height, table
        if exact and table == "neuron_stats":  # float64 sums of the same batches, regrouped
            assert_frame_equal(a[table], b[table], check_exact=False, rel_tol=1e-12, abs_tol=0)
        elif exact:
            assert a[table].equals(b[table]), table
        else:
            assert_frame_equal(a[table], b[table], check_exact=False, rel_tol=2e-3, abs_tol=1e-5)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, gpt2_dir):
    """A prompt file, a warehouse with directions and no runs, and an uninterrupted reference."""
    root = tmp_path_factory.mktemp("reliability")
    prompts = root / "prompts.jsonl"
    words = ["history", "river", "piece", "idiot", "weather", "library", "garden", "bridge"]
    prompts.write_text(
        "".join(
            json.dumps({"prompt": f"The {w} of the {v} is"}) + "\n"
            for w in words
            for v in words[:3]
        )
    )
    empty = root / "empty-wh"
    cli("index-vectors", empty, "--model", gpt2_dir, "--no-progress")
    cli("directions", "add", empty, "rnd", "--model", gpt2_dir.name, "--random")
    cli("directions", "add", empty, "v", "--model", gpt2_dir.name, "--value-vector", "1:3")
    args = [
        "--model",
        gpt2_dir,
        "--prompts",
        prompts,
        "--name",
        "r",
        "--generate",
        4,
        "--batch-size",
        2,
        "--capture",
        "resid_mid,mlp_post",
        "--track-neurons",
        "rnd:6",
        "--logit-lens",
        3,
        "--target-tokens",
        "#5",
        "--commit-mb",
        0,
        "--no-progress",
    ]
    reference = root / "reference"
    shutil.copytree(empty, reference)
    cli("ingest", reference, *args)
    return {
        "root": root,
        "empty": empty,
        "args": [str(a) for a in args],
        "reference": tables_of(reference, "r"),
        "prompts": prompts,
    }


def fresh(setup, name: str) -> Path:
    path = setup["root"] / name
    shutil.copytree(setup["empty"], path)
    return path


def run_shards(wh: Path, args: list[str], count: int = 2) -> None:
    """``count`` ingestion processes with ``--shard i/count``, all at once; all must succeed."""
    workers = [
        subprocess.Popen(
            [ACTWH, "ingest", str(wh), *args, "--shard", f"{i}/{count}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(count)
    ]
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
        # a second shard joins the run: it did not resume anything of its own
        assert out.startswith("ingested run "), out


def run_status(wh_path: Path, run: str = "r") -> dict | None:
    with actwh.open(wh_path) as wh:
        rows = wh.sql("select * from runs where name = $r", {"r": run})
    return rows.row(0, named=True) if rows.height else None


@pytest.mark.parametrize(
    "crash",
    [
        "commit.before_files:2",
        "commit.after_files:3",
        "commit.after_record:2",
        "batch.done:5",
        "commit.after_files:1",
        "random",
        "random",
    ],
)
def test_killed_ingestion_resumes_to_exactly_the_same_rows(setup, crash, request):
    wh = fresh(setup, f"crash-{request.node.callspec.id}")
    command = [ACTWH, "ingest", str(wh), *setup["args"]]
    env = dict(os.environ)
    if crash == "random":
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(random.uniform(2.5, 5.0))  # somewhere in start-up, a batch, or a commit
        process.send_signal(signal.SIGKILL)
        code = process.wait()
    else:
        env["ACTWH_CRASH_AT"] = crash
        code = subprocess.run(command, env=env, capture_output=True).returncode
        assert code == -signal.SIGKILL, f"the process was not killed at {crash}"
    if code == 0:
        pytest.skip("the run finished before the kill landed")
    status = run_status(wh)
    if status is None or status["status"] != "complete":  # else killed after the last commit
        resumed = subprocess.run(command, capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stderr
    assert run_status(wh)["status"] == "complete"
    assert_same_tables(tables_of(wh, "r"), setup["reference"])
    with actwh.open(wh) as w:
        assert w.sql("select count(*) from commit_prompts where run = 'r'").item() == 24
        assert run_status(wh)["n_tokens"] == w.sql("select count(*) from tokens").item()
    checked = CliRunner().invoke(main, ["check", str(wh)])
    assert checked.exit_code == 0, checked.output


def test_a_resume_proves_it_continues_the_same_prompts(setup, tmp_path):
    """Killed after two commits, the run is resumed only by its own prompt set (it used to take
    any file under the same --name and mix both into one run)."""
    wh = fresh(setup, "other-prompts")
    command = [ACTWH, "ingest", str(wh), *setup["args"]]
    env = {**os.environ, "ACTWH_CRASH_AT": "commit.after_record:2"}
    assert subprocess.run(command, env=env, capture_output=True).returncode == -signal.SIGKILL
    with_prompts = lambda path: [  # noqa: E731
        str(path) if a == str(setup["prompts"]) else a for a in setup["args"]
    ]
    other = tmp_path / "other.jsonl"
    other.write_text(
        "".join(json.dumps({"prompt": f"Another prompt {i}"}) + "\n" for i in range(24))
    )
    same_name = tmp_path / "elsewhere" / setup["prompts"].name
    same_name.parent.mkdir()
    same_name.write_text(other.read_text())
    with actwh.open(wh) as w:
        before = w.sql("select * from prompt_sets order by name")
    assert "over prompt set 'prompts', not 'other'" in cli_error("ingest", wh, *with_prompts(other))
    assert "a different prompt set is already registered as 'prompts'" in cli_error(
        "ingest", wh, *with_prompts(same_name)
    )
    with actwh.open(wh) as w:  # nothing half-registered
        assert w.sql("select * from prompt_sets order by name").equals(before)
        assert w.sql("select count(distinct prompt_set) from prompts").item() == 1
    resumed = subprocess.run(command, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_tables(tables_of(wh, "r"), setup["reference"])


def test_a_resume_skips_whole_batches_only():
    from actwh.errors import ActwhError
    from actwh.ingest.worker import Sequence, check_committed_batches

    batches = [[Sequence(0, [1], "a"), Sequence(1, [1], "b")], [Sequence(2, [1], "c")]]
    check_committed_batches("r", batches, {0, 1})
    with pytest.raises(ActwhError, match=r"prompts \[0, 1\] form one batch here, but only \[1\]"):
        check_committed_batches("r", batches, {1})
    with pytest.raises(ActwhError, match=r"committed prompts \[7\] that this command"):
        check_committed_batches("r", batches, {0, 1, 7})


def test_two_shards_at_once_equal_one_worker(setup):
    wh = setup["root"] / "shards"  # neither worker finds a warehouse: both create it
    shutil.rmtree(wh, ignore_errors=True)
    shutil.copytree(setup["empty"], wh)
    run_shards(wh, setup["args"])
    assert run_status(wh)["status"] == "complete"
    assert_same_tables(tables_of(wh, "r"), setup["reference"])
    with actwh.open(wh) as w:
        shards = w.sql(
            "select shard, count(*) as n from commits where run = 'r' group by 1 order by 1"
        )
    assert shards["shard"].to_list() == ["0/2", "1/2"]


def test_ray_launcher_with_two_cpu_workers(setup):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'actwh[ray]')")
    from actwh.ingest.ray_launcher import ingest_with_ray

    wh = fresh(setup, "ray")
    args = dict(zip(setup["args"][::2], setup["args"][1::2], strict=False))
    options = IngestOptions(
        name="r",
        generate=4,
        batch_size=2,
        capture="resid_mid,mlp_post",
        track_neurons="rnd:6",
        logit_lens=3,
        target_tokens="#5",
        commit_mb=0,
        progress=False,
    )
    summary = ingest_with_ray(str(wh), args["--model"], str(setup["prompts"]), options, workers=2)
    assert summary.n_prompts == 24
    # Ray gives each worker one CPU thread; the reference used two.
    assert_same_tables(tables_of(wh, "r"), setup["reference"], exact=False)


def test_readers_during_writes_see_only_whole_commits(setup):
    wh = fresh(setup, "readers")
    process = subprocess.Popen(
        [ACTWH, "ingest", str(wh), *setup["args"], "--batch-size", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = set()
    while process.poll() is None:
        if not (wh / "warehouse.json").exists():
            time.sleep(0.05)
            continue
        with actwh.open(wh) as w:  # never fails on a lock: waits it out
            rows = w.sql("select count(*) from tokens").item()
            committed = w.sql(
                "select coalesce(sum(n_rows), 0) from commit_files where table_name = 'tokens'"
            ).item()
            prompts = w.sql("select count(distinct prompt) from tokens").item()
            listed = w.sql("select count(*) from commit_prompts").item()
        assert rows == committed and prompts == listed
        seen.add(listed)
    assert process.returncode == 0, process.stderr.read()
    assert len(seen - {0, 24}) >= 2, f"no snapshot caught the run half-way: {sorted(seen)}"


def test_check_finds_and_repairs(setup, tmp_path):
    wh = fresh(setup, "check")
    cli("ingest", wh, *setup["args"])
    assert CliRunner().invoke(main, ["check", str(wh)]).exit_code == 0
    # a teacher-forced run that replayed r: it depends on r's tokens
    replay = [a for a in setup["args"] if a != str(setup["prompts"]) and a != "--prompts"]
    replay[replay.index("r")] = "tf"
    cli("ingest", wh, *replay, "--teacher-force", "r")
    files = sorted((wh / "data" / "residuals" / "run=r").rglob("*.parquet"))
    orphan = files[0].with_name("part-s0of1-00000000000000aa.parquet")
    shutil.copy(files[0], orphan)
    unfinished = files[0].with_name("_part-s0of1-00000000000000bb.parquet.tmp")
    unfinished.write_bytes(b"PAR1")
    foreign = files[0].with_name("someone-elses.parquet")  # never actwh's to delete
    shutil.copy(files[0], foreign)
    damaged = files[1]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    truncated = sorted((wh / "data" / "tokens" / "run=r").rglob("*.parquet"))[5]  # another commit
    truncated.write_bytes(truncated.read_bytes()[:-30])

    found = CliRunner().invoke(main, ["check", str(wh)])
    assert found.exit_code == 1
    assert f"damaged: {damaged.relative_to(wh)}: checksum differs" in found.stdout
    assert f"orphan (no commit lists it): {orphan.relative_to(wh)}" in found.stdout
    assert f"unfinished write: {unfinished.relative_to(wh)}" in found.stdout
    assert f"not written by actwh (left alone): {foreign.relative_to(wh)}" in found.stdout

    before = {str(p.relative_to(wh)) for p in (wh / "data").rglob("*.parquet")} - {
        str(orphan.relative_to(wh))
    }

    repaired = CliRunner().invoke(main, ["check", str(wh), "--repair", "--grace", "0"])
    assert repaired.exit_code == 0, repaired.stdout
    assert "run r lost damaged files" in repaired.stdout and "run tf is stale" in repaired.stdout
    assert not orphan.exists() and not unfinished.exists() and not damaged.exists()
    # only the damaged files went: the rest of their commits stays (they used to go whole)
    after = {str(p.relative_to(wh)) for p in (wh / "data").rglob("*.parquet")}
    assert after == before - {str(damaged.relative_to(wh)), str(truncated.relative_to(wh))}
    assert run_status(wh)["status"] == "running" and run_status(wh, "tf")["status"] == "stale"
    # the same command redoes exactly the dropped files, and says so (it used to say "0 prompts")
    redone = cli("ingest", wh, *setup["args"]).stdout
    assert "resumed run r: 0 prompts (4 redone after a repair)" in redone, redone
    assert_same_tables(tables_of(wh, "r"), setup["reference"])
    assert run_status(wh)["status"] == "complete"
    assert "is stale" in cli_error("ingest", wh, *replay, "--teacher-force", "r")
    with actwh.open(wh) as w:
        assert w.sql("select count(*) from commit_gaps").item() == 0
        assert (
            run_status(wh)["n_tokens"]
            == w.sql("select count(*) from tokens where run = 'r'").item()
        )
    assert CliRunner().invoke(main, ["check", str(wh)]).exit_code == 0


def test_a_corrupted_parquet_file_is_a_clear_error(setup):
    wh = fresh(setup, "corrupt")
    cli("ingest", wh, *setup["args"])
    victim = sorted((wh / "data" / "tokens").rglob("*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    message = cli_error("sql", wh, "select count(*) from tokens")
    assert (
        message.startswith("error: cannot read table tokens")
        and len(message.strip().splitlines()) == 1
    )
    assert victim.name in message and "actwh check" in message
    assert (
        cli("sql", wh, "select count(*) from generations", "--csv").stdout.splitlines()[1] == "24"
    )
    # the file list and an export of the damaged table are errors, never an empty answer
    for command in (["files", wh, "tokens"], ["export", wh, "tokens", wh.parent / "out"]):
        message = cli_error(*command)
        assert "cannot read table tokens" in message and "actwh check" in message, command
    assert not (wh.parent / "out").exists()
    assert len(cli("files", wh, "generations").stdout.splitlines()) > 0


def test_prompts_longer_than_the_context(setup, gpt2_dir, tmp_path):
    long = tmp_path / "long.jsonl"
    long.write_text(
        json.dumps({"prompt": "the river " * 200}) + "\n" + json.dumps({"prompt": "short"}) + "\n"
    )
    wh = tmp_path / "wh"
    assert "prompt 0 is" in cli_error(
        "ingest", wh, "--model", gpt2_dir, "--prompts", long, "--on-long", "refuse", "--no-progress"
    )
    assert not wh.exists()
    result = CliRunner().invoke(
        main,
        [
            "ingest",
            str(wh),
            "--model",
            str(gpt2_dir),
            "--prompts",
            str(long),
            "--generate",
            8,
            "--no-progress",
        ],
    )
    assert (
        result.exit_code == 0
        and "warning: 1 prompt(s) truncated to their first 120 tokens" in result.stderr
    )
    with actwh.open(wh) as w:
        assert json.loads(w.sql("select warnings from runs").item()) == [
            "1 prompt(s) truncated to their first 120 tokens"
        ]
        rows = w.sql("select truncated, n_prompt_tokens from generations order by prompt").rows()
    assert rows[0] == (True, 120) and rows[1][0] is False and rows[1][1] < 120


def test_a_tuned_model_of_another_shape_is_refused(setup, tmp_path, gpt2_dir):
    wh = tmp_path / "wh"
    cli(
        "ingest",
        wh,
        "--model",
        gpt2_dir,
        "--prompts",
        setup["prompts"],
        "--name",
        "base",
        "--generate",
        2,
        "--no-progress",
    )
    deeper = build_gpt2(tmp_path / "deeper-gpt2", n_layer=4)
    message = cli_error("ingest", wh, "--model", deeper, "--teacher-force", "base", "--no-progress")
    assert "does not match tiny-gpt2" in message and "n_layers 4" in message


@pytest.fixture(scope="module")
def loud_model(tmp_path_factory):
    """A tiny GPT-2 whose residual stream exceeds float16's range (±65504)."""
    import torch
    from transformers import AutoModelForCausalLM

    path = build_gpt2(tmp_path_factory.mktemp("loud") / "loud-gpt2")
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        model.transformer.wpe.weight.mul_(1e6)
    model.save_pretrained(path)
    return path


def test_float16_overflow_is_scaled_or_widened_or_stops(setup, tmp_path, loud_model):
    wh = tmp_path / "wh"
    args = [
        "--model",
        loud_model,
        "--prompts",
        setup["prompts"],
        "--generate",
        2,
        "--capture",
        "resid_pre",
        "--layers",
        "0",
        "--no-progress",
    ]
    message = cli_error("ingest", wh, *args, "--on-overflow", "error")
    assert "does not fit float16 (max 65504)" in message and not wh.exists()
    import pyarrow.parquet as pq

    stored = {}
    for overflow in ("scale", "float32"):
        where = wh.with_name(f"{wh.name}-{overflow}")
        command = ["ingest", str(where), *map(str, args), "--on-overflow", overflow]
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 0, result.output
        with actwh.open(where) as w:
            stored[overflow], _ = w.vectors("residuals", layer=0)
            frame = w.scan("residuals").sort("prompt", "pos").collect()
            scan = np.stack(frame["vec"].to_numpy())
            np.testing.assert_array_equal(scan, stored[overflow])
        file = next((where / "data" / "residuals").rglob("*.parquet"))
        dtype = str(pq.read_schema(file).field("vec").type.value_type)
        assert dtype == ("halffloat" if overflow == "scale" else "float")
    assert "values beyond float16 range stored as float32" in result.stderr
    exact = stored["float32"]
    assert np.isfinite(stored["scale"]).all() and np.abs(exact).max() > 65504
    error = np.abs(stored["scale"] - exact) / np.abs(exact).max(axis=1, keepdims=True)
    assert error.max() <= 2**-11


def test_postgres_catalog(setup, postgres, tmp_path, gpt2_dir):
    wh = tmp_path / "wh"
    base = list(setup["args"])
    cli("init", wh, "--catalog", postgres)
    assert json.loads((wh / "warehouse.json").read_text())["catalog"] == postgres
    assert not (wh / "catalog.duckdb").exists()
    cli("index-vectors", wh, "--model", gpt2_dir, "--no-progress")
    cli("directions", "add", wh, "rnd", "--model", gpt2_dir.name, "--random")
    cli("directions", "add", wh, "v", "--model", gpt2_dir.name, "--value-vector", "1:3")
    cli("ingest", wh, *base)
    assert_same_tables(tables_of(wh, "r"), setup["reference"])
    # two workers against the PostgreSQL catalog at once
    run_shards(wh, [*base, "--name", "r2"])
    assert_same_tables(tables_of(wh, "r2"), setup["reference"])
    out = cli("sql", wh, "select name, status, n_tokens from runs order by name", "--csv").stdout
    assert out.splitlines()[1:] == [
        f"r,complete,{setup['reference']['tokens'].height}",
        f"r2,complete,{setup['reference']['tokens'].height}",
    ]
    assert CliRunner().invoke(main, ["check", str(wh)]).exit_code == 0
    # one catalog serves one warehouse directory: a second is refused, and nothing is made
    other = tmp_path / "other-wh"
    assert "already serves the warehouse" in cli_error("init", other, "--catalog", postgres)
    assert not other.exists()
    # a directory whose marker names another warehouse's catalog is refused, not served
    moved = tmp_path / "copy"
    shutil.copytree(wh, moved)
    marker = json.loads((moved / "warehouse.json").read_text())
    (moved / "warehouse.json").write_text(json.dumps({**marker, "id": "0" * 32}))
    assert "belongs to another warehouse" in cli_error("check", moved, "--repair")
    # a plain copy (the same marker) is detected: it used to write into the original's catalog,
    # which then listed files the original does not have
    copy = tmp_path / "plain-copy"
    shutil.copytree(wh, copy)
    for command in (["sql", copy, "select 1"], ["ingest", copy, *base, "--name", "r3"]):
        assert "is a copy of it or was moved" in cli_error(*command)
    assert "still holds this warehouse" in cli_error("rehome", copy)
    assert_same_tables(tables_of(wh, "r"), setup["reference"])
    # a warehouse that was moved is re-homed explicitly, and reads as before
    shutil.rmtree(copy)
    home = tmp_path / "new-home"
    wh.rename(home)
    assert "was moved" in cli_error("sql", home, "select 1")
    assert str(wh) in cli("rehome", home).stdout
    assert_same_tables(tables_of(home, "r"), setup["reference"])
    assert CliRunner().invoke(main, ["check", str(home)]).exit_code == 0


@pytest.mark.parametrize("fail_at", [1, 3])
def test_a_failed_run_is_never_left_running(setup, fail_at, monkeypatch):
    """An error that is nobody's fault in particular (here a RuntimeError in the 1st or 3rd
    batch): a new run that committed nothing is forgotten, one that committed is marked failed
    with the reason; the same command then completes it. It used to stay 'running'."""
    from actwh.ingest.batches import BatchRunner

    wh = fresh(setup, f"fail-at-{fail_at}")
    run_batch, calls = BatchRunner.run_batch, []

    def failing(self, batch, summary):
        calls.append(1)
        if len(calls) == fail_at:
            raise RuntimeError("the device fell over")
        return run_batch(self, batch, summary)

    monkeypatch.setattr(BatchRunner, "run_batch", failing)
    result = CliRunner().invoke(main, ["ingest", str(wh), *setup["args"]])
    assert isinstance(result.exception, RuntimeError)
    status = run_status(wh)
    if fail_at == 1:
        assert status is None
    else:
        assert status["status"] == "failed"
        assert status["error"] == "RuntimeError: the device fell over"
    monkeypatch.setattr(BatchRunner, "run_batch", run_batch)
    cli("ingest", wh, *setup["args"])
    assert run_status(wh)["status"] == "complete" and run_status(wh)["error"] is None
    assert_same_tables(tables_of(wh, "r"), setup["reference"])


@pytest.mark.parametrize(
    "url, message",
    [
        ("nosuch://x", "Can't load plugin: sqlalchemy.dialects:nosuch"),
        ("mysql://u@h/db", "No module named 'MySQLdb'"),
        ("::::", "Could not parse SQLAlchemy URL"),
    ],
)
def test_a_bad_catalog_url_is_one_line(tmp_path, url, message):
    error = cli_error("init", tmp_path / "wh", "--catalog", url)
    assert error.startswith(f"error: the catalog URL {url}: {message}"), error
    assert error.count("\n") == 1 and not (tmp_path / "wh").exists()


def test_a_catalog_that_cannot_be_written_is_one_line(setup):
    """Its write-ahead log on a full disk (here: a link to /dev/full)."""
    wh = fresh(setup, "full-wal")
    (wh / "catalog.duckdb.wal").symlink_to("/dev/full")
    error = cli_error("directions", "add", wh, "rnd2", "--model", "tiny-gpt2", "--random")
    assert error.startswith("error: the catalog duckdb:///") and error.count("\n") == 1
    assert "No space left on device" in error
    (wh / "catalog.duckdb.wal").unlink()
    assert "rnd2" not in cli("directions", "list", wh, "--csv").stdout


def test_a_catalog_server_that_is_down_is_one_line(setup, tmp_path):
    pytest.importorskip(
        "psycopg", reason="psycopg is not installed (pip install 'actwh[postgres]')"
    )
    wh = tmp_path / "wh"
    url = f"postgresql+psycopg://actwh:s3cret@127.0.0.1:{free_port()}/catalog"
    assert "Connection refused" in cli_error("init", wh, "--catalog", url)
    assert not wh.exists()
    wh.mkdir()  # a warehouse whose server has gone away since it was made
    (wh / "warehouse.json").write_text(json.dumps({"format": "1", "catalog": url, "id": "x"}))
    for command in (["sql", wh, "select 1"], ["ingest", wh, *setup["args"]], ["check", wh]):
        message = cli_error(*command)
        assert message.startswith("error: the catalog postgresql+psycopg://actwh:***@")
        assert "s3cret" not in message and len(message.strip().splitlines()) == 1


def test_repair_refuses_to_drop_what_it_cannot_see(setup):
    """Repair used to drop every commit when data/ was missing (an unmounted share)."""
    wh = fresh(setup, "repair-missing")
    cli("ingest", wh, *setup["args"])
    data = wh / "data"
    aside = wh.parent / "repair-missing-data"
    data.rename(aside)
    message = cli_error("check", wh, "--repair")
    assert "data holds none of the committed files" in message and "nothing was changed" in message
    aside.rename(data)
    missing = sorted((data / "tokens").rglob("*.parquet"))[0]
    kept = missing.read_bytes()
    missing.unlink()
    message = cli_error("check", wh, "--repair")
    assert "missing rather than damaged" in message and "from 1 commit(s)" in message
    missing.write_bytes(kept)
    for path in sorted((data / "projections").rglob("*.parquet"))[:4]:  # 4 commits damaged
        path.write_bytes(path.read_bytes()[:-20])
    message = cli_error("check", wh, "--repair")
    assert "repair would drop 4 file(s) from 4 commit(s)" in message and "Pass --force" in message
    assert run_status(wh)["status"] == "complete"  # nothing was dropped
    forced = CliRunner().invoke(main, ["check", str(wh), "--repair", "--force", "--grace", "0"])
    assert forced.exit_code == 0, forced.stdout
    cli("ingest", wh, *setup["args"])
    assert_same_tables(tables_of(wh, "r"), setup["reference"])


def test_a_full_disk_is_one_line_and_leaves_no_half_run(setup, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(small)]
    if subprocess.run(mount, capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (it needs root)")
    try:
        args = [*setup["args"], "--store-dtype", "float32"]
        at = args.index("--track-neurons")  # a new warehouse has no directions
        del args[at : at + 2]
        result = subprocess.run(
            [ACTWH, "ingest", str(small / "wh"), *args], capture_output=True, text=True
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "No space left on device" in result.stderr
        assert "Traceback" not in result.stderr
        # whatever is left is a warehouse whose committed files are whole, or nothing at all
        if (small / "wh").exists():
            checked = CliRunner().invoke(main, ["check", str(small / "wh")])
            assert checked.exit_code == 0 or "unfinished write" in checked.stdout, checked.stdout
            status = run_status(small / "wh")
            assert status is None or run_status(small / "wh")["n_tokens"] > 0
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)


@pytest.mark.parametrize("damage", ["garbage", "zeroed block", "truncated"])
def test_a_damaged_catalog_is_one_line(setup, damage):
    wh = fresh(setup, f"damaged-catalog-{damage.replace(' ', '-')}")
    catalog = wh / "catalog.duckdb"
    data = bytearray(catalog.read_bytes())
    if damage == "garbage":
        data = bytearray(b"not a database" * 10)
    elif damage == "truncated":
        data = data[:5000]
    else:
        data[5000:9000] = bytes(4000)
        data = data[: len(data) // 2]
    catalog.write_bytes(bytes(data))
    for command in (
        ["check", str(wh)],
        ["sql", str(wh), "select 1"],
        ["search", str(wh), "--direction", "rnd"],
    ):
        result = subprocess.run([ACTWH, *command], capture_output=True, text=True)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("error: the catalog ") and result.stderr.count("\n") == 1
        assert "is damaged" in result.stderr and "restore it from a backup" in result.stderr


def test_a_resume_with_another_layout_reports_the_orphans_of_a_killed_shard(setup):
    wh = fresh(setup, "orphans-of-a-shard")
    env = {**os.environ, "ACTWH_CRASH_AT": "commit.after_files:2"}
    command = [ACTWH, "ingest", str(wh), *setup["args"]]
    killed = subprocess.run([*command, "--shard", "0/2"], env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    resumed = subprocess.run(command, capture_output=True, text=True)  # one worker now
    assert resumed.returncode == 0, resumed.stderr
    assert "belong to no commit and were written by workers of another --shard layout" in (
        resumed.stderr
    )
    repaired = CliRunner().invoke(main, ["check", str(wh), "--repair", "--grace", "0"])
    assert repaired.exit_code == 0 and "removed: data/" in repaired.stdout
    assert_same_tables(tables_of(wh, "r"), setup["reference"])


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_a_terminated_ingest_is_marked_failed_and_resumes(setup, signame):
    """SIGTERM (kill, timeout, Slurm, Docker) and SIGHUP (a closed terminal) in the middle of a
    run: the command says so in one line and exits 128 + the signal; the run is failed with the
    reason (not left running), no file is left outside a commit, and the same command completes
    it to the same rows."""
    wh = fresh(setup, f"terminated-{signame}")
    command = [ACTWH, "ingest", str(wh), *setup["args"]]
    env = dict(os.environ, ACTWH_CRASH_AT="commit.after_files:3", ACTWH_CRASH_SIGNAL=signame)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    signum = signal.Signals[signame].value
    assert done.returncode == 128 + signum, done.stderr
    assert done.stderr == f"error: terminated by {signame}\n"
    status = run_status(wh)
    assert (
        status["status"] == "failed" and status["error"] == f"Terminated: terminated by {signame}"
    )
    checked = CliRunner().invoke(main, ["check", str(wh)])
    assert checked.exit_code == 0 and "orphan" not in checked.output, checked.output
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert run_status(wh)["status"] == "complete"
    assert_same_tables(tables_of(wh, "r"), setup["reference"])


def test_two_writers_of_one_run_the_second_is_refused(setup):
    """The same ingest twice at once (one --name, one shard): the second is refused in one line
    naming the first, before it touches anything — it used to delete the first's files not yet
    recorded, and the first then dropped its run. The first finishes to the reference rows."""
    wh = fresh(setup, "two-writers")
    command = [ACTWH, "ingest", str(wh), *setup["args"]]
    paused = setup["root"] / "two-writers.paused"
    paused.touch()
    env = dict(os.environ, ACTWH_CRASH_AT="commit.after_files:2", ACTWH_PAUSE_WHILE=str(paused))
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline, seen, last = time.monotonic() + 120, (0, 0), None
        while not (seen[0] > seen[1] > 0 and seen == last):  # paused in its second commit
            assert first.poll() is None and time.monotonic() < deadline, "never paused"
            time.sleep(0.5)
            last, seen = seen, (len(list((wh / "data").rglob("part-*"))), _committed_files(wh))
        files = sorted((wh / "data").rglob("*.parquet"))
        second = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr
        assert second.stderr.startswith("error: run 'r' (shard s0of1) is being written by")
        assert second.stderr.count("\n") == 1 and f"process {first.pid}" in second.stderr
        assert sorted((wh / "data").rglob("*.parquet")) == files  # untouched
        assert run_status(wh)["status"] == "running"
    finally:
        paused.unlink()
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert run_status(wh)["status"] == "complete"
    assert_same_tables(tables_of(wh, "r"), setup["reference"])
    assert CliRunner().invoke(main, ["check", str(wh)]).exit_code == 0


def _committed_files(wh: Path) -> int:
    with actwh.open(wh) as w:
        return w.sql("select count(*) from commit_files").item()


def test_a_catalog_file_outside_the_warehouse_serves_one_warehouse(tmp_path, gpt2_dir):
    """A DuckDB catalog file given with --catalog records which warehouse it serves: a second
    folder on it, a copy whose warehouse.json lost its id, and a hand-written warehouse.json
    naming it are refused in one line (they used to commit into it, and the first warehouse then
    reported missing files)."""
    url = f"duckdb:///{tmp_path / 'shared.duckdb'}"
    first = tmp_path / "a"
    cli("init", first, "--catalog", url)
    cli("index-vectors", first, "--model", gpt2_dir, "--no-progress")
    assert "one catalog serves one warehouse" in cli_error("init", tmp_path / "b", "--catalog", url)
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    marker = json.loads((copy / "warehouse.json").read_text())
    (copy / "warehouse.json").write_text(json.dumps({k: marker[k] for k in ("format", "catalog")}))
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / "warehouse.json").write_text(json.dumps({**marker, "id": "f" * 32}))
    for other in (copy, forged):
        error = cli_error("directions", "add", other, "rnd2", "--model", gpt2_dir.name, "--random")
        assert error.count("\n") == 1 and "catalog" in error, error
    with actwh.open(first) as wh:  # nothing of theirs in it
        assert wh.sql("select count(*) from directions").item() == 0


def test_init_adopts_only_a_catalog_it_made_and_reads_columns_it_does_not_know(tmp_path, gpt2_dir):
    """actwh init in a folder holding a user's own catalog.duckdb refuses it, unaltered (it used
    to add its tables to it); a catalog with a column this version does not know (a newer
    actwh's, a user's) reads as before (SQLite here; it used to be a BinderException)."""
    import duckdb

    folder = tmp_path / "mine"
    folder.mkdir()
    with duckdb.connect(str(folder / "catalog.duckdb")) as con:
        con.execute("CREATE TABLE runs (x INTEGER)")
    error = cli_error("init", folder)
    assert "a DuckDB database actwh did not make" in error and error.count("\n") == 1
    with duckdb.connect(str(folder / "catalog.duckdb"), read_only=True) as con:
        assert con.execute("SELECT table_name FROM duckdb_tables()").fetchall() == [("runs",)]
    wh, url = tmp_path / "wh", f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    cli("init", wh, "--catalog", url)
    cli("index-vectors", wh, "--model", gpt2_dir, "--no-progress")
    import sqlite3

    with sqlite3.connect(tmp_path / "catalog.sqlite") as con:
        con.execute("ALTER TABLE models ADD COLUMN from_a_newer_actwh TEXT")
    tables = cli("tables", wh, "--csv").stdout
    assert "value_vectors" in tables
    assert cli("sql", wh, "select count(*) as n from models", "--csv").stdout == "n\n1\n"


def test_the_faiss_index_is_committed_with_its_vectors_and_checked(tmp_path, gpt2_dir):
    """The index and its readout are recorded in the commit of the value vectors, under names of
    their own build: a rebuild killed before its commit leaves the old index searchable and its
    files as orphans (it used to leave every search failing "checksum differs" while check said
    ok); check verifies both files and names a damaged one; a truncated index is one line in
    search, not a traceback."""
    wh = tmp_path / "wh"
    cli("index-vectors", wh, "--model", gpt2_dir, "--no-progress")
    cli("directions", "add", wh, "rnd", "--model", gpt2_dir.name, "--random")
    search = ["search", wh, "--direction", "rnd", "-k", "3", "--csv"]
    before = cli(*search).stdout
    env = dict(os.environ, ACTWH_CRASH_AT="commit.before_files")
    rebuild = [ACTWH, "index-vectors", str(wh), "--model", str(gpt2_dir), "--replace"]
    assert subprocess.run(rebuild, env=env, capture_output=True).returncode == -signal.SIGKILL
    assert cli(*search).stdout == before
    found = CliRunner().invoke(main, ["check", str(wh)])
    assert found.exit_code == 1 and found.output.count("orphan (no commit lists it): index/") == 2
    assert CliRunner().invoke(main, ["check", str(wh), "--repair", "--grace", "0"]).exit_code == 0
    with actwh.open(wh) as w:
        index = w.sql("select path from vector_indexes").item()
    (wh / index).write_bytes((wh / index).read_bytes()[:100])
    found = CliRunner().invoke(main, ["check", str(wh)])
    assert found.exit_code == 1 and f"damaged: {index}: checksum differs" in found.output
    assert f"actwh index-vectors WH --model {gpt2_dir.name} --replace" in found.output
    error = cli_error(*search[:-1])
    assert error.startswith(f"error: {index}: the FAISS index of model") and error.count("\n") == 1
    cli("index-vectors", wh, "--model", gpt2_dir, "--replace", "--no-progress")
    assert cli(*search).stdout == before
    assert CliRunner().invoke(main, ["check", str(wh)]).exit_code == 0
