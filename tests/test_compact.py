"""A warehouse at size: opening reads the catalog alone and a query only the files its filter
can match; `actwh compact` merges small files with every row unchanged, readers that started
before keep working, and a kill at any step recovers; a catalog written before commit_files kept
partition values reads as before and is brought up to date by the next write."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest
from cli_helpers import cli, cli_error
from click.testing import CliRunner
from synthetic import synthetic_commits

import actwh
from actwh.cli import main
from actwh.errors import ActwhError
from actwh.warehouse.schema import fact_tables

ACTWH = str(Path(sys.executable).with_name("actwh"))


def digests(path) -> dict[str, tuple]:
    """Each fact table's row count and an order-free digest of its rows (vectors included)."""
    with actwh.open(path) as wh:
        return {
            table: wh.sql(f"select count(*), sum(hash(t)::HUGEINT)::VARCHAR from {table} t").row(0)
            for table in fact_tables()
        }


def partitions(path) -> int:
    with actwh.open(path) as wh:
        return wh.sql(
            "select count(*) from (select distinct table_name, run, model, layer from commit_files)"
        ).item()


def n_files(path) -> int:
    with actwh.open(path) as wh:
        return wh.sql("select count(*) from commit_files").item()


@pytest.fixture(scope="module")
def small(tmp_path_factory, gpt2_dir):
    """A tiny GPT-2 run committed prompt by prompt (a file per table and partition each time),
    every kind captured, and its digests."""
    root = tmp_path_factory.mktemp("compact")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(f'{{"prompt": "The river number {i} is"}}\n' for i in range(8)))
    wh = root / "wh"
    cli("index-vectors", wh, "--model", gpt2_dir, "--no-progress")
    cli("directions", "add", wh, "rnd", "--model", gpt2_dir.name, "--random")
    cli(
        "ingest", wh, "--model", gpt2_dir, "--prompts", prompts, "--name", "r", "--generate", 3,
        "--batch-size", 1, "--commit-mb", 0, "--capture", "resid_mid,mlp_post",
        "--track-neurons", "rnd:4", "--logit-lens", 3, "--target-tokens", "#5", "--no-progress",
    )  # fmt: skip
    return {"root": root, "wh": wh, "digests": digests(wh), "files": n_files(wh)}


def copy_of(small, name: str) -> Path:
    target = small["root"] / name
    shutil.copytree(small["wh"], target)
    cli("check", target, "--repair")  # a copy's Spark logs name the original's files
    return target


def test_compaction_merges_small_files_and_keeps_every_row(small):
    wh = copy_of(small, "merged")
    expected_files = partitions(wh)
    assert small["files"] >= 6 * expected_files  # prompt by prompt: many files per partition
    before = actwh.open(wh)
    assert before.sql("select count(*) from residuals").item() > 0  # a reader that started before
    out = cli("compact", wh, "--no-progress").stdout
    merged, into = (
        int(n.replace(",", "")) for n in re.findall(r"([\d,]+) files? into ([\d,]+)", out)[0]
    )
    assert merged - into == small["files"] - expected_files, out
    assert n_files(wh) == expected_files  # one file per partition now
    assert digests(wh) == small["digests"]
    # the reader that started before still reads its files (retired, kept for a day)
    assert (
        before.sql("select count(*), sum(hash(t)::HUGEINT)::VARCHAR from residuals t").row(0)
        == small["digests"]["residuals"]
    )
    checked = CliRunner().invoke(main, ["check", str(wh)])
    assert checked.exit_code == 0 and "ok" in checked.output, checked.output
    # past the grace period the merged files go; a reader still on them gets one clear line
    assert "deleted" in cli("compact", wh, "--grace", 0, "--no-progress").stdout
    with pytest.raises(ActwhError, match="cannot read table residuals.*actwh check"):
        before.sql("select count(*) from residuals where vec[1] > 0")
    before.refresh()
    assert before.sql("select count(*) from residuals").item() == small["digests"]["residuals"][0]
    assert digests(wh) == small["digests"]
    assert cli("compact", wh, "--no-progress").stdout.startswith(
        "0 partitions"
    )  # nothing left to do


@pytest.mark.parametrize(
    "crash", ["compact.after_file:2", "compact.after_files:3", "compact.after_record:2"]
)
def test_a_compaction_killed_at_any_step_loses_nothing(small, crash):
    wh = copy_of(small, f"killed-{crash.replace(':', '-')}")
    env = {**os.environ, "ACTWH_CRASH_AT": crash}
    killed = subprocess.run(
        [ACTWH, "compact", str(wh), "--no-progress"], env=env, capture_output=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert digests(wh) == small["digests"]  # nothing is half-visible
    cli("compact", wh, "--no-progress")  # the rerun finishes
    cli("check", wh, "--repair", "--grace", 0)  # a killed attempt's files are orphans
    assert digests(wh) == small["digests"]
    assert n_files(wh) == partitions(wh)
    checked = CliRunner().invoke(main, ["check", str(wh)])
    assert checked.exit_code == 0, checked.output


def test_a_repair_of_a_merged_file_redoes_the_commits_it_merged(small, gpt2_dir):
    wh = copy_of(small, "repaired")
    cli("compact", wh, "--tables", "tokens", "--no-progress")
    with actwh.open(wh) as w:
        merged = w.files("tokens", runs="r")
    assert len(merged) == 1
    merged[0].write_bytes(merged[0].read_bytes()[:50])
    report = cli("check", wh, "--repair").stdout
    assert "run r lost damaged files" in report
    prompts = small["root"] / "prompts.jsonl"
    cli(
        "ingest", wh, "--model", gpt2_dir, "--prompts", prompts, "--name", "r", "--generate", 3,
        "--batch-size", 1, "--commit-mb", 0, "--capture", "resid_mid,mlp_post",
        "--track-neurons", "rnd:4", "--logit-lens", 3, "--target-tokens", "#5", "--no-progress",
    )  # fmt: skip
    assert digests(wh) == small["digests"]


def test_a_query_reads_only_the_files_its_filter_can_match(small):
    """Every committed file but one partition's is damaged: opening, the catalog, and queries
    and scans of that partition work (no other footer is read); a query that needs a damaged
    file names it."""
    wh = copy_of(small, "pruned")
    with actwh.open(wh) as w:
        keep = {str(p) for p in w.files("residuals", runs="r", layers=[1])}
        expected = w.sql("select count(*) from residuals where run = 'r' and layer = 1").item()
    for path in (wh / "data").rglob("*.parquet"):
        if str(path) not in keep:
            path.write_bytes(b"not parquet")
    with actwh.open(wh) as w:
        assert w.sql("select count(*) from runs").item() == 1
        assert w.sql("select count(*) from residuals where run = 'r' and layer = 1").item() == (
            expected
        )
        scanned = w.scan("residuals").filter((pl.col("run") == "r") & (pl.col("layer") == 1))
        assert scanned.collect().height == expected
        # wh.vectors' filters are parameters: they still reach the scan (cast to the column)
        assert len(w.vectors("residuals", run="r", layer=1)[0]) == expected
        assert len(w.vectors("residuals", run=["r"], layer=[1])[0]) == expected
    assert "cannot read table residuals" in cli_error(
        "sql", wh, "select count(*) from residuals where layer = 0"
    )


def test_opening_costs_the_same_whatever_the_files(tmp_path):
    """A warehouse's open reads its catalog only: with no file on disk at all, every catalog
    table still reads (the old reader built a view over every file, reading each footer)."""
    from actwh.warehouse.store import Store

    store = Store.create(tmp_path / "wh")
    synthetic_commits(store)
    shutil.rmtree(tmp_path / "wh" / "data")
    with actwh.open(tmp_path / "wh") as w:
        assert w.sql("select count(*) from commit_files").item() == 2 * 3 * 4
        assert w.sql("select sum(n_rows) from commit_files").item() == 2 * 3 * 4 * 8
        assert w.tables().filter(pl.col("name") == "residuals")["n_rows"].item() == 192


def test_a_catalog_from_before_partition_values_reads_the_same(small):
    """A warehouse whose catalog has no partition columns, no retired files and no Spark logs
    (as made by 344b4d1) reads the same, and the next write brings its catalog up to date."""
    wh = copy_of(small, "older")
    con = duckdb.connect(str(wh / "catalog.duckdb"))
    for column in ("run", "model", "layer", "vector_dtype"):
        con.execute(f"ALTER TABLE commit_files DROP COLUMN {column}")
    for table in ("retired_files", "commit_sources", "spark_logs"):
        con.execute(f"DROP TABLE {table}")
    con.close()
    assert digests(wh) == small["digests"]
    cli("compact", wh, "--no-progress")
    assert digests(wh) == small["digests"]
    with actwh.open(wh) as w:
        unfilled = w.sql("select count(*) from commit_files where run is null and model is null")
        assert unfilled.item() == 0
