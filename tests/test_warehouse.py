"""The warehouse format: atomic commits, views over committed files only, read-only SQL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

import actwh
from actwh.errors import ActwhError
from actwh.warehouse import layout
from actwh.warehouse.catalog import now
from actwh.warehouse.store import Store
from actwh.warehouse.writer import CommitWriter


def residual_rows(prompts, d=4, dtype=np.float32, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    vec = (rng.standard_normal((len(prompts), d)) * scale).astype(dtype)
    return pa.table(
        {
            "prompt": pa.array(prompts, pa.int32()),
            "pos": pa.array([0] * len(prompts), pa.int32()),
            "site": ["resid_mid"] * len(prompts),
            "vec": pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel()), d),
        }
    ), vec


def new_run(store, name="r"):
    with store.catalog.begin() as conn:
        store.catalog.insert(
            conn,
            "runs",
            {
                "name": name,
                "model": "m",
                "prompt_set": "p",
                "mode": "generate",
                "config": "{}",
                "status": "running",
                "n_prompts": 10,
                "n_tokens": 0,
                "created_at": now(),
            },
        )
    return CommitWriter(store, run=name)


@pytest.fixture
def store(tmp_path):
    return Store.create(tmp_path / "wh")


def test_create_and_open_errors(tmp_path):
    with pytest.raises(ActwhError, match="does not exist"):
        Store.open(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hi")
    with pytest.raises(ActwhError, match="not an actwh warehouse"):
        Store.open(tmp_path / "other")
    with pytest.raises(ActwhError, match="not empty and is not an actwh warehouse"):
        Store.create(tmp_path / "other")
    Store.create(tmp_path / "wh")
    assert (tmp_path / "wh" / layout.MARKER).is_file()
    Store.open(tmp_path / "wh")  # and again: idempotent
    Store.create(tmp_path / "wh")


def test_commit_then_query_with_vector_functions(store):
    writer = new_run(store)
    rows, vec = residual_rows([0, 1, 2])
    writer.add("residuals", {"run": "r", "layer": 5}, rows, vector_size=4)
    with actwh.open(store.root) as wh:
        assert wh.sql("select count(*) as n from residuals")["n"][0] == 0  # buffered only
    writer.commit(prompts=[0, 1, 2], n_tokens=3)
    with actwh.open(store.root) as wh:
        types = dict(wh.sql("describe residuals").select("column_name", "column_type").iter_rows())
        assert types["vec"] == "FLOAT[4]" and types["layer"] == "SMALLINT"
        frame = wh.sql(
            "select prompt, layer, array_cosine_similarity(vec, vec) as c, "
            "array_inner_product(vec, vec) as d from residuals order by prompt"
        )
        assert frame["layer"].to_list() == [5, 5, 5]
        np.testing.assert_allclose(frame["c"].to_numpy(), 1.0, rtol=1e-6)
        np.testing.assert_allclose(frame["d"].to_numpy(), (vec**2).sum(1), rtol=1e-5)
        assert wh.sql("select n_tokens from runs")["n_tokens"][0] == 3
        scanned = wh.scan("residuals").sort("prompt").collect()
        assert scanned.schema["vec"] == pl.Array(pl.Float32, 4)
        np.testing.assert_allclose(scanned["vec"].to_numpy(), vec)


def test_float16_and_float32_files_read_as_one_table(store):
    writer = new_run(store)
    half, half_vec = residual_rows([0, 1], dtype=np.float16)
    full, full_vec = residual_rows([2, 3], scale=1e5, seed=1)
    writer.add("residuals", {"run": "r", "layer": 0}, half, vector_size=4, dtype="float16")
    writer.commit(prompts=[0, 1])
    writer.add("residuals", {"run": "r", "layer": 0}, full, vector_size=4, dtype="float32")
    writer.commit(prompts=[2, 3])
    with actwh.open(store.root) as wh:
        got = wh.sql("select vec from residuals order by prompt")["vec"].to_numpy()
        scanned = wh.scan("residuals").sort("prompt").collect()["vec"].to_numpy()
    expected = np.vstack([half_vec.astype(np.float32), full_vec])
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(scanned, expected, rtol=1e-6)
    assert np.isfinite(got).all()


def test_vectors_come_in_key_order_whatever_order_they_were_committed_in(store):
    writer = new_run(store)
    committed = {}
    for prompt in (3, 1, 2):
        rows, vec = residual_rows([prompt], dtype=np.float16, seed=prompt)
        writer.add("residuals", {"run": "r", "layer": 0}, rows, vector_size=4, dtype="float16")
        writer.commit(prompts=[prompt])
        committed[prompt] = vec[0]
    with actwh.open(store.root) as wh:
        X, keys = wh.vectors("residuals", run="r", layer=0)
    assert keys["prompt"].to_list() == [1, 2, 3]
    np.testing.assert_array_equal(X, np.stack([committed[p] for p in (1, 2, 3)]))


def test_vector_files_are_plain_and_other_files_compressed_with_statistics(store):
    """What bench/writer.py chose: a file with vectors stores them uncompressed, with null
    counts but no min/max; a file without vectors is zstd with min/max for pruning."""
    import pyarrow.parquet as pq

    writer = new_run(store)
    writer.add("residuals", {"run": "r", "layer": 0}, residual_rows([0, 1])[0], vector_size=4)
    acts = {"prompt": [0, 1], "pos": [0, 0], "neuron": [7, 7], "act": [0.5, -0.5]}
    writer.add("neuron_acts", {"run": "r", "layer": 0}, pa.table(acts))
    writer.commit(prompts=[0, 1])
    (vectors,) = (store.root / "data" / "residuals").rglob("*.parquet")
    (plain,) = (store.root / "data" / "neuron_acts").rglob("*.parquet")
    group = pq.ParquetFile(vectors).metadata.row_group(0)
    columns = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    vec = next(c for name, c in columns.items() if name.startswith("vec"))
    assert vec.compression == "UNCOMPRESSED"
    assert vec.statistics.null_count == 0 and not vec.statistics.has_min_max
    prompt = pq.ParquetFile(plain).metadata.row_group(0).column(0)
    assert prompt.compression == "ZSTD" and (prompt.statistics.min, prompt.statistics.max) == (0, 1)
    assert pq.read_schema(vectors).field("vec").type == pa.list_(pa.float32(), 4)


def test_one_value_vector_is_read_from_one_row_group_of_its_layers_file(store):
    """value_vectors is read a neuron at a time (a neuron page): its files are written in row
    groups of 128 rows with min/max statistics, so a scan for one neuron skips every other
    group (the whole layer's file was one group without min/max: all of it was read)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from actwh.warehouse.arrays import vectors_to_column

    vectors = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    rows = pa.table(
        {
            "neuron": pa.array(np.arange(300), pa.int32()),
            "vec": vectors_to_column(vectors),
            "norm": np.linalg.norm(vectors, axis=1).astype(np.float32),
            "top_tokens": pa.nulls(300, pa.list_(pa.string())),
            "bottom_tokens": pa.nulls(300, pa.list_(pa.string())),
        }
    )
    writer = CommitWriter(store, model="m")
    writer.add("value_vectors", {"model": "m", "layer": 2}, rows, vector_size=8)
    writer.commit()
    (path,) = (store.root / "data" / "value_vectors").rglob("*.parquet")
    meta = pq.ParquetFile(path).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [128, 128, 44]
    (fragment,) = ds.dataset(path).get_fragments()
    (group,) = fragment.split_by_row_group(pc.field("neuron") == 200)
    assert [g.id for g in group.row_groups] == [1]
    with actwh.open(store.root) as wh:
        found, keys = wh.vectors("value_vectors", model="m", layer=2, neuron=200)
    assert keys["neuron"].to_list() == [200]
    np.testing.assert_array_equal(found[0], vectors[200])


def test_failed_commit_leaves_nothing_visible(store, monkeypatch):
    writer = new_run(store)
    writer.add("residuals", {"run": "r", "layer": 0}, residual_rows([0])[0], vector_size=4)

    def crash(*args):
        raise RuntimeError("power cut")

    monkeypatch.setattr(writer, "_record", crash)
    with pytest.raises(RuntimeError):
        writer.commit(prompts=[0])
    assert layout.all_files(store.root) == []
    with actwh.open(store.root) as wh:
        assert wh.sql("select count(*) as n from residuals")["n"][0] == 0


def test_background_commits_land_in_order_and_a_failed_one_leaves_nothing(store, monkeypatch):
    writer = new_run(store)
    with writer.in_background():
        for prompt in range(3):
            rows = residual_rows([prompt])[0]
            writer.add("residuals", {"run": "r", "layer": 0}, rows, vector_size=4)
            writer.commit(prompts=[prompt], n_tokens=1)
    with actwh.open(store.root) as wh:
        assert wh.sql("select count(*) from residuals").item() == 3
        assert wh.sql("select n_tokens from runs").item() == 3
    record = writer._record

    def crash(commit_id, *args):
        if args[1] == [4]:
            raise OSError(28, "No space left on device")
        return record(commit_id, *args)

    monkeypatch.setattr(writer, "_record", crash)
    with pytest.raises(OSError, match="No space"), writer.in_background():
        for prompt in (3, 4, 5):
            rows = residual_rows([prompt])[0]
            writer.add("residuals", {"run": "r", "layer": 0}, rows, vector_size=4)
            writer.commit(prompts=[prompt], n_tokens=1)  # 5's waits for 4's and raises
    with actwh.open(store.root) as wh:
        committed = wh.sql("select prompt from commit_prompts order by prompt")["prompt"]
        assert committed.to_list() == [0, 1, 2, 3]
        assert wh.sql("select count(*) from residuals").item() == 4
    assert len(layout.all_files(store.root)) == 4  # the failed commit's file is gone


def test_a_commit_whose_one_file_fails_keeps_none_of_its_files(store, monkeypatch):
    writer = new_run(store)
    for layer in range(4):
        rows = residual_rows([0])[0]
        writer.add("residuals", {"run": "r", "layer": layer}, rows, vector_size=4)
    write = writer._write

    def fail_layer_2(table, partition, tables, commit_id):
        if dict(partition)["layer"] == 2:
            raise OSError(28, "No space left on device")
        return write(table, partition, tables, commit_id)

    monkeypatch.setattr(writer, "_write", fail_layer_2)
    with pytest.raises(OSError):
        writer.commit(prompts=[0])
    assert layout.all_files(store.root) == []
    assert store.catalog.rows("commits") == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_under_the_parquet_writer_is_an_os_error_naming_the_file(store, monkeypatch):
    """polars reports a failed write as a ComputeError; the writer turns it back into the
    OSError it was (one line at the CLI) and leaves no file behind."""
    writer = new_run(store)
    writer.add("residuals", {"run": "r", "layer": 0}, residual_rows([0])[0], vector_size=4)
    tmp_path = layout.tmp_path

    def onto_a_full_disk(final):
        tmp = tmp_path(final)
        tmp.symlink_to("/dev/full")  # every write to it fails with ENOSPC
        return tmp

    monkeypatch.setattr(layout, "tmp_path", onto_a_full_disk)
    with pytest.raises(OSError, match="No space left on device") as raised:
        writer.commit(prompts=[0])
    assert raised.value.errno == 28 and raised.value.filename.endswith(".parquet.tmp")
    assert list((store.root / "data").rglob("*parquet*")) == []
    assert store.catalog.rows("commits") == []


def test_orphans_are_invisible_and_removed(store):
    writer = new_run(store)
    writer.add("residuals", {"run": "r", "layer": 0}, residual_rows([0])[0], vector_size=4)
    writer.commit(prompts=[0])
    # A crash after the rename but before the catalog commit leaves a file nobody recorded,
    # and a crash mid-write leaves a .tmp file.
    partition = layout.partition_dir(store.root, "residuals", {"run": "r", "layer": 0})
    orphan = partition / layout.file_name(writer.tag, "deadbeef")
    orphan.write_bytes((next(partition.glob("*.parquet"))).read_bytes())
    half_written = layout.tmp_path(partition / layout.file_name(writer.tag, "cafe"))
    half_written.write_bytes(b"PAR1 partial")
    assert half_written.name.startswith("_")  # directory readers (Spark, Hive) skip it
    older = partition / (layout.file_name(writer.tag, "beef") + layout.TMP_SUFFIX)  # before the _
    older.write_bytes(b"PAR1 partial")
    with actwh.open(store.root) as wh:
        assert wh.sql("select count(*) as n from residuals")["n"][0] == 1
    orphans = {store.relative(p) for p in (orphan, half_written, older)}
    assert set(writer.remove_orphans()) == orphans
    assert len(layout.all_files(store.root)) == 1


def test_a_repair_waits_for_a_commit_in_flight(store, monkeypatch):
    """Files renamed into place but not yet recorded are not orphans while their writer lives:
    a repair (even with no grace) waits for the commit, which lands whole. It used to delete
    them, and the writer recorded files that were gone."""
    import threading

    from actwh.warehouse import writer as writer_module
    from actwh.warehouse.check import check
    from actwh.warehouse.options import CheckOptions

    renamed, release = threading.Event(), threading.Event()

    def pause(point):
        if point == "commit.after_files":
            renamed.set()
            release.wait(10)

    monkeypatch.setattr(writer_module, "crash_point", pause)
    writer = new_run(store)
    writer.add("residuals", {"run": "r", "layer": 0}, residual_rows([0])[0], vector_size=4)
    committing = threading.Thread(target=writer.commit, kwargs={"prompts": [0]})
    committing.start()
    assert renamed.wait(10)
    reports = []
    repairing = threading.Thread(
        target=lambda: reports.append(check(store, CheckOptions(repair=True, grace=0)))
    )
    repairing.start()
    repairing.join(0.5)
    assert repairing.is_alive()  # waiting for the commit lock
    release.set()
    committing.join(10)
    repairing.join(10)
    assert reports[0].removed == [] and reports[0].orphans == []
    assert check(store).left == set() and check(store).files == 1
    with actwh.open(store.root) as wh:
        assert wh.sql("select count(*) from residuals").item() == 1


def test_a_repair_deletes_only_what_actwh_writes(store):
    """Only a writer's own file names in a table's partition folders are orphans; anything
    else under data/ is reported as foreign and left alone."""
    from actwh.warehouse.check import check
    from actwh.warehouse.options import CheckOptions

    writer = new_run(store)
    writer.add("residuals", {"run": "r", "layer": 0}, residual_rows([0])[0], vector_size=4)
    writer.commit(prompts=[0])
    partition = layout.partition_dir(store.root, "residuals", {"run": "r", "layer": 0})
    committed = next(partition.glob("*.parquet")).read_bytes()
    orphan = partition / layout.file_name(writer.tag, "0123456789abcdef")
    foreign = [
        partition / "notes.parquet",  # a name actwh never gives
        store.root / "data" / "mine" / "x.parquet",  # a folder that is no table
        store.root / "data" / "residuals" / "run=r" / orphan.name,  # no layer= folder
        store.root / "data" / "residuals" / "run=r" / "lay=0" / orphan.name,
    ]
    for path in [orphan, *foreign]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(committed)
    found = check(store)
    assert found.orphans == [store.relative(orphan)]
    assert sorted(found.foreign) == sorted(store.relative(p) for p in foreign)
    repaired = check(store, CheckOptions(repair=True, grace=0))
    assert repaired.removed == [store.relative(orphan)]
    assert all(p.exists() for p in foreign) and not orphan.exists()


def test_a_prompt_commits_once(store):
    writer = new_run(store)
    writer.add("residuals", {"run": "r", "layer": 0}, residual_rows([0])[0], vector_size=4)
    writer.commit(prompts=[0])
    other = CommitWriter(store, run="r", shard=(1, 2))
    other.add("residuals", {"run": "r", "layer": 0}, residual_rows([0])[0], vector_size=4)
    with pytest.raises(ActwhError, match="already committed"):
        other.commit(prompts=[0])
    assert len(layout.all_files(store.root)) == 1


def test_snapshot_isolation(store):
    writer = new_run(store)
    writer.add("residuals", {"run": "r", "layer": 0}, residual_rows([0])[0], vector_size=4)
    writer.commit(prompts=[0])
    wh = actwh.open(store.root)
    assert wh.sql("select count(*) as n from residuals")["n"][0] == 1
    writer.add("residuals", {"run": "r", "layer": 0}, residual_rows([1])[0], vector_size=4)
    writer.commit(prompts=[1])
    assert wh.sql("select count(*) as n from residuals")["n"][0] == 1
    assert wh.refresh().sql("select count(*) as n from residuals")["n"][0] == 2


@pytest.mark.parametrize(
    "query",
    [
        "create table x (a int)",
        "insert into runs values ('x')",
        "copy (select 1) to 'out.csv'",
        "attach 'other.db'",
        "set threads = 1",
        "select 1; drop view residuals",
        "update runs set status = 'x'",
        "delete from models",
        "pragma version",
    ],
)
def test_user_sql_is_read_only(store, query):
    with actwh.open(store.root) as wh, pytest.raises(ActwhError, match="read-only"):
        wh.sql(query)


def test_sql_params_and_errors(store):
    with actwh.open(store.root) as wh:
        assert wh.sql("select $a + 1 as x", {"a": 41})["x"][0] == 42
        with pytest.raises(ActwhError, match="SQL error"):
            wh.sql("select * from no_such_table")
        assert {"tokens", "residuals", "runs", "models"} <= set(wh.tables()["name"])
        assert wh.scan("tokens").collect().columns[:3] == ["run", "prompt", "pos"]
        with pytest.raises(ActwhError, match="no fact table"):
            wh.scan("runs")


def test_one_statement_at_a_time_and_the_warehouse_object_stays_usable(store):
    """Several statements used to run the first and fail the second with DuckDB's "unfinished
    result", and every later query of the same object failed until refresh()."""
    writer = new_run(store)
    writer.add("residuals", {"run": "r", "layer": 0}, residual_rows([0])[0], vector_size=4)
    writer.commit(prompts=[0])
    with actwh.open(store.root) as wh:
        with pytest.raises(ActwhError, match="2 SQL statements given; run one at a time"):
            wh.sql("select 1; select 2")
        with pytest.raises(ActwhError, match="refused: DROP statement"):
            wh.sql("select 1; drop view residuals")
        assert wh.sql("select count(*) from residuals").item() == 1
        assert wh.sql("select 1 as x;")["x"].to_list() == [1]  # a trailing ; is one statement


@pytest.mark.parametrize("where", ["data on another disk", "a folder named a=b"])
def test_a_warehouse_reads_wherever_its_files_are(tmp_path, where):
    """A data/ folder that is a link (to a bigger disk) was refused on every read, blaming the
    query; a warehouse under a folder that looks like a Hive partition read its name as one."""
    root = tmp_path / ("run=x" if "a=b" in where else "plain") / "wh"
    store = Store.create(root)
    if "another disk" in where:
        (tmp_path / "disk" / "data").mkdir(parents=True)
        (root / "data").symlink_to(tmp_path / "disk" / "data")
    writer = new_run(store, "r1")
    rows, vec = residual_rows([0, 1])
    writer.add("residuals", {"run": "r1", "layer": 3}, rows, vector_size=4)
    writer.commit(prompts=[0, 1])
    with actwh.open(root) as wh:
        got = wh.sql("select run, layer, vec from residuals order by prompt")
        assert got["run"].to_list() == ["r1", "r1"] and got["layer"].to_list() == [3, 3]
        np.testing.assert_allclose(np.array(got["vec"].to_list()), vec)
        X, keys = wh.vectors("residuals", run="r1")
        np.testing.assert_allclose(X, vec)
        assert wh.scan("residuals").select("run").collect()["run"].to_list() == ["r1", "r1"]


def test_a_catalog_of_an_older_actwh_takes_writes(tmp_path):
    """A column a newer schema.sql declares (runs.error) is added before the first write."""
    import duckdb

    store = Store.create(tmp_path / "wh")
    with duckdb.connect(str(store.catalog_file)) as con:
        con.execute("ALTER TABLE runs DROP COLUMN error")
    older = Store.open(store.root)
    new_run(older).commit(prompts=[0])
    from actwh.warehouse.registry import fail_run

    fail_run(older.catalog, "r", "RuntimeError: boom")
    with actwh.open(store.root) as wh:
        assert wh.sql("select status, error from runs").row(0) == ("failed", "RuntimeError: boom")


def test_a_warehouse_of_344b4d1_reads_the_same(tmp_path):
    """A warehouse made by commit 344b4d1 (before run configs had a format and a typed reader):
    its runs, tables, directions, every table's rows and the named queries that read the stored
    configs (a run's, a variant's edit) come back as that version read them (tables and
    columns added since aside)."""
    import json
    import tarfile

    from old_warehouse import reads

    with tarfile.open(Path(__file__).parent / "data" / "warehouse-344b4d1.tar.gz") as archive:
        archive.extractall(tmp_path, filter="data")
    expected = json.loads((tmp_path / "read.json").read_text())
    got = json.loads(json.dumps(reads(actwh.open(tmp_path / "warehouse")), sort_keys=True))
    new = {row["name"] for row in got["tables"]} - {row["name"] for row in expected["tables"]}
    assert all(got.pop(f"rows.{table}") == [] for table in new)  # tables added since: empty
    got["tables"] = [row for row in got["tables"] if row["name"] not in new]
    assert got.keys() == expected.keys()
    for key, rows in expected.items():
        if isinstance(rows, list) and rows:  # columns added since are left out
            got[key] = [{column: row[column] for column in rows[0]} for row in got[key]]
        assert got[key] == rows, key


@pytest.mark.parametrize(
    "uri, message",
    [
        ("s3://", "a malformed URI; an object store prefix is s3://BUCKET/PREFIX"),
        ("s3:/bkt/x", "a malformed URI; an object store prefix is s3://BUCKET/PREFIX"),
        ("S3:bkt", "a malformed URI; an object store prefix is s3://BUCKET/PREFIX"),
        ("ftp://host/x", "actwh cannot open ftp:// stores"),
        ("file://host/x", "a malformed URI; a local path is file:///ABSOLUTE/PATH"),
    ],
)
def test_a_malformed_uri_is_refused_not_made_a_folder(tmp_path, monkeypatch, uri, message):
    """These made local folders named s3:, S3: or file: and exited 0."""
    from actwh.errors import BadInput

    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInput, match=message):
        actwh.open(uri, create=True)
    assert list(tmp_path.iterdir()) == []


def test_a_file_uri_is_the_local_path_and_a_scheme_any_case(tmp_path):
    from actwh.warehouse.object_store import location

    Store.create(f"file://{tmp_path}/a%20b")
    assert actwh.open(f"FILE://{tmp_path}/a%20b").path == tmp_path / "a b"
    assert location("S3://Bucket/Prefix/") == "s3://Bucket/Prefix"


def test_a_store_that_does_not_answer_is_one_line_in_time(tmp_path):
    """gs:// without credentials or network used to hang for more than five minutes (the
    credential lookup waits for a metadata server); a store gets ACTWH_STORE_TIMEOUT seconds."""
    import subprocess
    import sys
    import time

    actwh_bin = str(Path(sys.executable).with_name("actwh"))
    env = {**__import__("os").environ, "ACTWH_STORE_TIMEOUT": "3"}
    started = time.monotonic()
    done = subprocess.run(
        [actwh_bin, "tables", "gs://actwh-no-such-bucket/wh"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: gs://actwh-no-such-bucket/wh")
    assert time.monotonic() - started < 30


def test_sql_that_is_not_utf8_and_a_damaged_marker_are_one_line(tmp_path):
    """Non-UTF-8 SQL in a file, on stdin and as an argument (undecodable bytes of a command
    line), and a warehouse.json that is a list or names a catalog that is no string, were
    tracebacks; a statement that ends in a comment naming a .sql file is a statement."""
    import sys

    from click.testing import CliRunner

    from actwh.cli import main

    wh = tmp_path / "wh"
    Store.create(wh)
    (tmp_path / "bad.sql").write_bytes(b"select 1 \xff")
    runner = CliRunner()
    cases = [
        ([str(tmp_path / "bad.sql")], None, "bad.sql:1: not valid UTF-8 text (byte 0xff)"),
        (["-"], b"select 1 \xff", "the SQL on stdin:1: not valid UTF-8 text (byte 0xff)"),
        (
            [b"select 1 \xff".decode(sys.getfilesystemencoding(), "surrogateescape")],
            None,
            "the SQL: not valid UTF-8 text",
        ),
    ]
    for args, stdin, message in cases:
        result = runner.invoke(main, ["sql", str(wh), *args], input=stdin)
        assert result.exit_code == 2 and message in result.stderr, result.output
        assert result.stderr.count("\n") == 1
    result = runner.invoke(main, ["sql", str(wh), "select 42 as x -- see my.sql", "--csv"])
    assert result.exit_code == 0 and result.stdout == "x\n42\n", result.output
    for marker in ("[1, 2]", '{"format": "1", "catalog": 5}'):
        (wh / "warehouse.json").write_text(marker)
        result = runner.invoke(main, ["tables", str(wh)])
        assert result.exit_code == 2 and "warehouse.json is damaged" in result.stderr
        assert result.stderr.count("\n") == 1
