"""A warehouse on an object store (a real S3-compatible server, moto's) with a PostgreSQL catalog:
the same commands as on a directory give the same rows; a killed run resumes; nothing half
committed is ever read; and what goes wrong with the store is one line naming the URI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
from cli_helpers import cli, cli_error
from click.testing import CliRunner
from servers import S3, Proxy, free_port
from test_reliability import assert_same_tables, tables_of

import actwh
from actwh.cli import main
from actwh.errors import ActwhError

ACTWH = str(Path(sys.executable).with_name("actwh"))
LIMIT = 600  # seconds any one command of these tests may take (a hang fails, never stalls CI)


def ingest_args(model: Path, prompts: Path, name: str) -> list[str]:
    return [
        *("--model", str(model), "--prompts", str(prompts), "--name", name),
        *("--generate", "4", "--batch-size", "2", "--capture", "resid_mid,mlp_post"),
        *("--track-neurons", "rnd:6", "--logit-lens", "3", "--commit-mb", "0", "--no-progress"),
    ]


@pytest.fixture(scope="module")
def pair(s3, postgres_server, tmp_path_factory, gpt2_dir):
    """The same study in a bucket (PostgreSQL catalog) and in a directory."""
    root = tmp_path_factory.mktemp("object-store")
    prompts = root / "prompts.jsonl"
    words = ["history", "river", "piece", "idiot", "weather", "library"]
    prompts.write_text(
        "".join(f'{{"prompt": "The {w} of the {v} is"}}\n' for w in words for v in words[:2])
    )
    remote = s3.bucket("warehouses") + "/study"
    cli("init", remote, "--catalog", postgres_server.database("study"))
    local = root / "wh"
    for wh in (remote, local):
        cli("index-vectors", wh, "--model", gpt2_dir, "--no-progress")
        cli("directions", "add", wh, "rnd", "--model", gpt2_dir.name, "--random")
        cli("ingest", wh, *ingest_args(gpt2_dir, prompts, "r"))
        # the same weights under another name replaying r: a pair for the report
        replay = ["--teacher-force", "r", "--model-name", "tiny-b", "--name", "t"]
        cli(
            "ingest",
            wh,
            "--model",
            gpt2_dir,
            "--capture",
            "resid_mid",
            "--logit-lens",
            "3",
            *replay,
        )
    return {"remote": remote, "local": local, "prompts": prompts, "root": root}


def test_the_same_commands_give_the_same_rows(pair):
    assert_same_tables(tables_of(pair["remote"], "r"), tables_of(pair["local"], "r"))
    with actwh.open(pair["remote"]) as remote, actwh.open(pair["local"]) as local:
        assert remote.sql("select count(*) from commit_files").item() > 10
        for table in ("residuals", "tokens", "value_vectors"):  # polars reads the bucket itself
            a, b = remote.scan(table).collect(), local.scan(table).collect()
            assert a.sort(a.columns[:4]).equals(b.sort(b.columns[:4])), table
        X, keys = remote.vectors("residuals", run="r", layer=1, site="resid_mid")
        Y, same = local.vectors("residuals", run="r", layer=1, site="resid_mid")
        assert keys.equals(same) and np.array_equal(X, Y)
        found = remote.search("rnd", k=5)  # the FAISS index: fetched once, cached by its hash
        assert found.equals(local.search("rnd", k=5))
        assert found["top_tokens"].list.len().min() > 0  # the readout, fetched the same way
        listed = remote.files("residuals", runs="r", layers=[1])
        assert listed and all(
            p.startswith(pair["remote"] + "/data/residuals/run=r/layer=1/") for p in listed
        )


def test_the_report_reads_the_bucket_as_the_directory(pair):
    """Every section of the report computed from the bucket equals the one from the directory
    (the study's findings section is the study's, passed in by the demo and actwh report)."""
    from actwh.report.build import build_sections, make_plan

    shown = {}
    for name in ("remote", "local"):
        with actwh.open(pair[name]) as wh:
            plan = make_plan(wh, direction="rnd")
            assert (plan.base_run, plan.tuned_run) == ("r", "t")
            plan.neurons, plan.prompts = plan.neurons[:1], plan.prompts[:1]
            shown[name] = [(s.key, s.note, s.table, s.html) for s in build_sections(wh, plan)]
    assert len(shown["remote"]) == len(shown["local"]) == 11
    for (key, note, frame, html), (_, note2, frame2, html2) in zip(
        shown["remote"], shown["local"], strict=True
    ):
        assert note == note2 and html == html2, key
        assert (frame is None and frame2 is None) or frame.equals(frame2), key
    assert sum(not note.startswith("Not available") for _, note, *_ in shown["remote"]) >= 4


def test_an_export_from_the_bucket_equals_one_from_the_directory(pair, tmp_path):
    for name in ("remote", "local"):
        cli("export", pair[name], "residuals", tmp_path / name, "--runs", "r", "--no-progress")
    read = {
        name: ds.dataset(tmp_path / name, format="parquet", partitioning="hive").to_table()
        for name in ("remote", "local")
    }
    order = [
        ("run", "ascending"),
        ("layer", "ascending"),
        ("prompt", "ascending"),
        ("pos", "ascending"),
        ("site", "ascending"),
    ]
    assert read["remote"].sort_by(order).equals(read["local"].sort_by(order))


def test_sql_reads_only_committed_objects(pair, s3):
    """An object no commit lists (an orphan) is never read, not even when named."""
    with actwh.open(pair["remote"]) as wh:
        first = wh.files("tokens")[0]
        orphan = first.rsplit("/", 1)[0] + "/part-s0of1-00000000000000ff.parquet"
        wh.store.remote.put(
            orphan.removeprefix(pair["remote"] + "/"),
            wh.store.remote.read_bytes(first.removeprefix(pair["remote"] + "/")),
        )
        try:
            fresh = actwh.open(pair["remote"])
            assert (
                fresh.sql("select count(*) from tokens").item()
                == wh.sql("select count(*) from tokens").item()
            )
            message = str(
                pytest.raises(
                    ActwhError, fresh.sql, f"select * from read_parquet('{orphan}')"
                ).value
            )
            assert message.startswith("refused: ")
        finally:
            wh.store.remote.delete(orphan.removeprefix(pair["remote"] + "/"))


def test_a_repair_deletes_orphans_past_its_grace_period(pair):
    with actwh.open(pair["remote"]) as wh:
        store = wh.store.remote
        orphan = "data/tokens/run=r/part-s3of4-0000000000000abc.parquet"
        store.put(orphan, b"PAR1 not a commit's")
        young = CliRunner().invoke(main, ["check", pair["remote"], "--repair"])
        assert young.exit_code != 0 and store.exists(orphan)  # within the grace period: left
        repaired = cli("check", pair["remote"], "--repair", "--grace", "0").stdout
        assert orphan in repaired and not store.exists(orphan)


def test_an_object_store_needs_a_server_catalog(s3, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = s3.bucket("no-catalog") + "/wh"
    message = cli_error("init", uri)
    assert uri in message and "needs a server catalog" in message
    assert "sqlite:" not in message and not list(tmp_path.iterdir())  # no local folder "s3:"
    assert cli_error("init", uri, "--catalog", f"duckdb:///{tmp_path}/c.duckdb").count("\n") == 1


def test_store_faults_are_one_line_naming_the_uri(s3, postgres_server, monkeypatch):
    catalog = postgres_server.database("faults")
    missing = "s3://no-such-bucket/wh"
    message = cli_error("init", missing, "--catalog", catalog)
    assert message.count("\n") == 1 and missing in message and "does not exist" in message
    uri = s3.bucket("faults") + "/wh"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    message = cli_error("sql", uri, "select 1")
    assert message.count("\n") == 1 and uri in message


class RayCluster:
    """A Ray cluster of two nodes on this machine (``ray start --head``, then ``ray start
    --address``), each with one CPU, started in an environment of its own (the AWS variables
    its workers use, and for the second node anything else given)."""

    def __init__(self, second_node_env: dict[str, str] | None = None):
        self.ray = str(Path(sys.executable).with_name("ray"))
        self.address = f"127.0.0.1:{free_port()}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled"}  # a local test cluster
        common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
        port = self.address.rsplit(":", 1)[1]
        for command, env in (
            ([self.ray, "start", "--head", f"--port={port}", "--include-dashboard=false"], {}),
            ([self.ray, "start", f"--address={self.address}"], second_node_env or {}),
        ):
            started = subprocess.run(
                [*command, *common],
                env={**self.env, **env},
                capture_output=True,
                text=True,
                timeout=LIMIT,
            )
            if started.returncode:
                self.stop()
                pytest.skip(f"could not start a Ray node: {started.stderr.strip()[-300:]}")

    def stop(self) -> None:
        subprocess.run(
            [self.ray, "stop", "--force"], env=self.env, capture_output=True, timeout=LIMIT
        )

    def run_once(self, command: list[str]) -> subprocess.CompletedProcess:
        """``command --ray-address`` this cluster, in its environment; then the cluster stops."""
        try:
            return subprocess.run(
                [*command, "--ray-address", self.address],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=LIMIT,
            )
        finally:
            self.stop()


def test_wrong_credentials_are_one_line_naming_the_uri(monkeypatch):
    """A server that checks credentials (moto after its first request, the bucket's creation)
    refuses the key: one line naming the URI, the key never printed."""
    server = S3(unchecked_requests=1)
    try:
        uri = server.bucket("guarded") + "/wh"
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGKEY")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
        message = cli_error("sql", uri, "select 1")
    finally:
        server.stop()
    assert message.count("\n") == 1 and message.startswith(f"error: {uri}: ")
    assert "ACCESS_DENIED" in message
    assert "AKIAWRONGKEY" not in message and "wrong-secret" not in message


def test_ray_workers_on_two_nodes_write_to_the_bucket(pair, gpt2_dir):
    """Two workers, one per node of a two-node Ray cluster, each writing straight to the bucket
    and committing to the PostgreSQL catalog: the rows of a one-worker local run. One node's
    worker killed mid-run (SIGKILL at its second commit) fails the command; run again on a
    healthy cluster, it resumes to the same rows."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'actwh[ray]')")
    command = [ACTWH, "ingest", pair["remote"], *ingest_args(gpt2_dir, pair["prompts"], "ray")]
    command += ["--ray", "--workers", "2"]
    failed = RayCluster({"ACTWH_CRASH_AT": "commit.after_files:2"}).run_once(command)
    assert failed.returncode == 2, failed.stderr
    assert "a Ray worker of the run failed" in failed.stderr and failed.stderr.count("\n") == 1
    # killed after its files were uploaded, before they were recorded: orphans no reader sees
    checked = CliRunner().invoke(main, ["check", pair["remote"]])
    assert checked.exit_code != 0 and "orphan (no commit lists it): data/" in checked.output
    assert_same_tables(tables_of(pair["remote"], "r"), tables_of(pair["local"], "r"))
    done = RayCluster().run_once(command)
    assert done.returncode == 0, done.stderr
    assert "2 workers on 2 node(s)" in done.stdout
    assert "orphan" not in cli("check", pair["remote"]).stdout  # each worker cleared its own
    # one CPU thread per Ray worker, two in the reference: floats may round differently
    assert_same_tables(tables_of(pair["remote"], "ray"), tables_of(pair["local"], "r"), exact=False)
    with actwh.open(pair["remote"]) as wh:
        shards = wh.sql(
            "select distinct shard from commits c join runs r on c.run = r.name where r.name = 'ray'"
        )
        assert set(shards["shard"]) == {"0/2", "1/2"}


def test_an_endpoint_that_dies_mid_run_fails_in_one_line_and_resumes(pair, s3, gpt2_dir):
    """The endpoint dies halfway through a run's uploads (a proxy in front of the server cuts
    every connection): one line naming the URI, nothing half-committed visible, and the same
    command, once the endpoint is back, resumes to the rows of an uninterrupted run."""
    proxy = Proxy(s3.port)
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.endpoint}
    with actwh.open(pair["remote"]) as wh:  # the bytes a whole run uploads (as run r did)
        uploads = wh.sql("select sum(n_bytes) from commit_files where path like '%/run=r/%'")
    proxy.cut_at = uploads.item() // 2
    command = [ACTWH, "ingest", pair["remote"], *ingest_args(gpt2_dir, pair["prompts"], "cut")]
    failed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=LIMIT)
    assert failed.returncode == 2 and failed.stderr.count("\n") == 1, failed.stderr
    assert failed.stderr.startswith(f"error: {pair['remote']}/")
    with actwh.open(pair["remote"]) as wh:  # what was committed is whole
        assert wh.sql("select status from runs where name = 'cut'").item() == "failed"
        committed = wh.sql("select count(*) from commit_prompts where run = 'cut'").item()
        assert 0 < committed < 12
        assert (
            wh.sql("select count(distinct prompt) from tokens where run = 'cut'").item()
            == committed
        )
    proxy.restore()
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=LIMIT)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_tables(tables_of(pair["remote"], "cut"), tables_of(pair["local"], "r"))


def test_on_a_bucket_an_open_is_two_requests_and_a_query_fetches_its_partition(
    s3, postgres_server, monkeypatch
):
    """Opening reads the marker (2 requests) however many files; a one-run one-layer query
    fetches that partition's files and about nothing more; a compaction there keeps every row."""
    from synthetic import synthetic_commits
    from test_compact import digests

    from actwh.warehouse.store import Store

    proxy = Proxy(s3.port)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    uri = s3.bucket("scale") + "/wh"
    store = Store.create(uri, catalog_url=postgres_server.database("scale"))
    requests = []
    for more in (1, 3):  # then 4× the files
        synthetic_commits(store, runs=2, layers=3, commits=more, rows=2000)
        proxy.reset()
        with actwh.open(uri) as wh:
            wh.sql("select count(*) from runs")
        requests.append(sum(proxy.requests.values()))
    assert requests == [2, 2], requests
    with actwh.open(uri) as wh:
        partition = wh.sql(
            "select sum(n_bytes)::BIGINT from commit_files where run = 'r1' and layer = 2"
        ).item()
        proxy.reset()
        assert wh.sql("select count(*) from residuals where run = 'r1' and layer = 2").item() == (
            4 * 2000
        )
    assert partition <= proxy.fetched <= 1.1 * partition, (proxy.fetched, partition)
    before = digests(uri)
    cli("compact", uri, "--no-progress")
    assert digests(uri) == before
    with actwh.open(uri) as wh:
        assert wh.sql("select count(*) from commit_files").item() == 6
    proxy.cut()


def test_two_writers_of_one_run_on_a_bucket_the_second_is_refused(pair, gpt2_dir):
    """As on a directory (test_reliability): the same run started twice at once on a bucket —
    the second is refused in one line before it deletes anything; it used to delete the first's
    unrecorded objects, which the first then recorded, and the run's tables became unreadable."""
    remote, paused = pair["remote"], pair["root"] / "twice.paused"
    paused.touch()
    command = [ACTWH, "ingest", remote, *ingest_args(gpt2_dir, pair["prompts"], "twice")]
    env = {**os.environ, "ACTWH_CRASH_AT": "commit.after_files:2", "ACTWH_PAUSE_WHILE": str(paused)}
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def objects() -> tuple[int, int]:  # the run's objects, and those recorded
        with actwh.open(remote) as wh:
            recorded = "select count(*) from commit_files where run = 'twice'"
            there = [p for p, _ in wh.store.data_files() if "/run=twice/" in p]
            return len(there), wh.sql(recorded).item()

    try:
        deadline, seen, last = time.monotonic() + LIMIT, (0, 0), None
        while not (seen[0] > seen[1] > 0 and seen == last):  # paused in its second commit
            assert first.poll() is None and time.monotonic() < deadline, "never paused"
            time.sleep(1.0)
            last, seen = seen, objects()
        second = subprocess.run(command, capture_output=True, text=True, timeout=LIMIT)
        assert second.returncode == 2, second.stderr
        assert "is being written by process" in second.stderr
        assert second.stderr.count("\n") == 1
        assert objects() == seen  # nothing deleted
    finally:
        paused.unlink()
    assert first.wait(timeout=LIMIT) == 0, first.stderr.read()
    assert_same_tables(tables_of(remote, "twice"), tables_of(pair["local"], "r"))
