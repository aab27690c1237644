"""Other engines read the warehouse: the committed-file list, Parquet exports (read back by
pyarrow, polars, DuckDB and — where Java and pyspark are installed — Spark), and the Hugging Face
``datasets`` export in both layouts."""

from __future__ import annotations

import json
import shutil

import duckdb
import numpy as np
import polars as pl
import pyarrow.dataset as ds
import pytest
from cli_helpers import cli, cli_error

import actwh
from actwh.errors import ActwhError
from actwh.warehouse import layout


@pytest.fixture(scope="module")
def wh(tmp_path_factory, gpt2_dir):
    """Two runs of a tiny GPT-2: one stored as float16 (the default), one as float32."""
    root = tmp_path_factory.mktemp("export") / "wh"
    warehouse = actwh.open(root, create=True)
    common = dict(generate=4, capture=["resid_mid", "mlp_post"], progress=False)
    warehouse.ingest(gpt2_dir, name="base", **common)
    warehouse.ingest(gpt2_dir, name="wide", store_dtype="float32", **common)
    yield warehouse
    warehouse.close()


def _norms_by_layer(frame: pl.DataFrame) -> dict[int, float]:
    norms = frame.with_columns(norm=pl.col("vec").list.eval(pl.element().pow(2)).list.sum().sqrt())
    means = norms.group_by("layer").agg(pl.col("norm").mean()).sort("layer")
    return dict(zip(means["layer"], means["norm"], strict=True))


def _sql_norms(wh, run: str, layers: list[int]) -> dict[int, float]:
    frame = wh.sql(
        "select layer, avg(sqrt(list_dot_product(vec::FLOAT[], vec::FLOAT[]))) as norm "
        "from residuals where run = $r and site = 'resid_mid' and list_contains($l, layer) "
        "group by layer order by layer",
        {"r": run, "l": layers},
    )
    return dict(zip(frame["layer"], frame["norm"], strict=True))


def test_files_are_the_committed_ones_whatever_lies_beside_them(tmp_path, wh):
    before = wh.files("residuals", runs="base")
    assert before and all(p.is_file() and p.suffix == ".parquet" for p in before)
    assert {p.parent.parent.name for p in before} == {"run=base"}
    # a crash can leave an orphan (renamed, not recorded) and an unfinished temporary file
    orphan = before[0].with_name("part-s0of1-000000000000dead.parquet")
    shutil.copy(before[0], orphan)
    unfinished = layout.tmp_path(before[0].with_name("part-s0of1-000000000000cafe.parquet"))
    unfinished.write_bytes(b"PAR1 partial")
    try:
        assert unfinished.name.startswith("_")  # hidden from Spark's and Hive's directory reads
        assert wh.refresh().files("residuals", runs="base") == before
        listed = cli("files", wh.path, "residuals", "--runs", "base").output.split()
        assert listed == [str(p) for p in before]
        out = tmp_path / "export"
        manifest = wh.export("residuals", out, runs="base", progress=False)
        rows = wh.sql("select count(*) from residuals where run = 'base'").item()
        assert manifest["rows"] == rows
        assert ds.dataset(out, format="parquet", partitioning="hive").count_rows() == rows
        assert "000000000000dead" not in json.dumps(manifest)
    finally:
        orphan.unlink()
        unfinished.unlink()
    assert wh.files("tokens", runs=["base", "wide"], layers=None)
    assert len(wh.files("residuals", layers=[1])) == 2  # one file per run at layer 1


def test_an_export_reads_anywhere_with_float32_vectors(tmp_path, wh):
    out = tmp_path / "residuals"
    message = cli(
        "export",
        wh.path,
        "residuals",
        out,
        "--runs",
        "base",
        "--runs",
        "wide",
        "--layers",
        "0-1",
        "--sites",
        "resid_mid",
        "--no-progress",
    ).output
    assert message.startswith("exported ")
    manifest = json.loads((out / "_manifest.json").read_text())
    listed = sorted(f["path"] for f in manifest["files"])
    assert listed == sorted(str(p.relative_to(out)) for p in out.rglob("*.parquet"))
    assert all(p.startswith(("run=base/layer=", "run=wide/layer=")) for p in listed)
    assert {"name": "vec", "type": "list<item: float>"} in manifest["columns"]
    # pyarrow, polars and DuckDB read the directory as it is, partition columns from the paths
    table = ds.dataset(out, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == manifest["rows"]
    assert set(table.column("site").to_pylist()) == {"resid_mid"}
    frame = pl.read_parquet(out / "**/*.parquet", hive_partitioning=True)
    assert frame.height == manifest["rows"] and frame["vec"].dtype == pl.List(pl.Float32)
    for run in ("base", "wide"):
        exported = _norms_by_layer(frame.filter(pl.col("run") == run))
        assert exported == pytest.approx(_sql_norms(wh, run, [0, 1]), rel=1e-6)
    counted = duckdb.sql(
        f"select count(*) from read_parquet('{out}/**/*.parquet', hive_partitioning = true)"
    ).fetchall()[0][0]
    assert counted == manifest["rows"]


def test_exports_refuse_bad_requests_and_leave_nothing(tmp_path, wh):
    out = tmp_path / "x"
    with pytest.raises(ActwhError, match="runs nope: no such run"):
        wh.export("residuals", out, runs="nope")
    with pytest.raises(ActwhError, match="models: table residuals has no column model"):
        wh.export("residuals", out, models="tiny-gpt2")
    with pytest.raises(ActwhError, match="inside the warehouse"):
        wh.export("tokens", wh.path / "out")
    with pytest.raises(ActwhError, match="no rows of residuals match"):
        wh.export("residuals", out, sites="attn_out", progress=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    out.mkdir()
    assert cli_error("export", wh.path, "tokens", out).startswith(f"error: OUT {out}: already")
    assert "no such table" in cli_error("files", wh.path, "nope")


@pytest.fixture(scope="module")
def spark():
    """A local Spark session, or a skip saying why there is none."""
    pytest.importorskip("pyspark", reason="pyspark is not installed (.ci/run adds it)")
    if shutil.which("java") is None:
        pytest.skip("no Java runtime for Spark (.ci/run installs default-jre-headless)")
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[1]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    yield session
    session.stop()


def _spark_norms(frame) -> dict[int, float]:
    from pyspark.sql import functions

    norm = functions.sqrt(functions.aggregate("vec", functions.lit(0.0), lambda a, x: a + x * x))
    rows = (
        frame.where("site = 'resid_mid'")
        .withColumn("norm", norm)
        .groupBy("layer")
        .agg(functions.avg("norm").alias("norm"))
        .collect()
    )
    return {row["layer"]: row["norm"] for row in rows}


def test_spark_reads_an_export_as_actwh_sql_does(tmp_path, wh, spark):
    out = tmp_path / "residuals"
    wh.export("residuals", out, runs=["base", "wide"], layers=[0, 1, 2], progress=False)
    frame = spark.read.parquet(str(out))
    norms = _spark_norms(frame.where("run = 'base'"))
    assert (
        frame.count()
        == wh.sql("select count(*) from residuals where run in ('base', 'wide')").item()
    )
    assert norms == pytest.approx(_sql_norms(wh, "base", [0, 1, 2]), rel=1e-6)


def test_spark_reads_the_raw_tables_in_place(wh, spark):
    """Spark reads a table's folder as actwh reads the table: the commit log in it names the
    committed files (a planted orphan is not read), and float16 vectors — which Spark refuses as
    such — decode, with their scale, to the values actwh's SQL sees. read_table reads a table
    holding float16 and float32 vectors alike."""
    from actwh.warehouse.spark import VECTOR_SQL, read_table, spark_schema

    root = wh.path
    committed = wh.files("tokens", runs="base")
    orphan = committed[0].with_name("part-s0of1-0000000000001bad.parquet")
    shutil.copy(committed[0], orphan)
    try:
        counted = spark.read.parquet(str(root / "data" / "tokens")).count()
    finally:
        orphan.unlink()
    assert counted == wh.sql("select count(*) from tokens").item()
    raw = spark.read.schema(spark_schema("residuals")).parquet(str(root / "data" / "residuals"))
    raw = raw.where("run = 'base'").selectExpr("layer", "site", f"{VECTOR_SQL} AS vec")
    layers = sorted(wh.sql("select distinct layer from residuals")["layer"])
    assert _spark_norms(raw) == pytest.approx(_sql_norms(wh, "base", layers), rel=1e-6)
    table = read_table(spark, str(root), "residuals")
    assert table.count() == wh.sql("select count(*) from residuals").item()
    wide = _spark_norms(table.where("run = 'wide'"))
    assert wide == pytest.approx(_sql_norms(wh, "wide", layers), rel=1e-6)
    first = table.where("run = 'base' and layer = 0").orderBy("prompt", "pos", "site").first()
    vectors, keys = wh.vectors("residuals", run="base", layer=0)
    assert np.array_equal(np.array(first["vec"], dtype=np.float32), vectors[0])


def test_a_tokens_dataset_holds_the_stored_vectors(tmp_path, wh):
    from datasets import load_from_disk

    out = tmp_path / "tokens"
    message = cli(
        "export-dataset",
        wh.path,
        out,
        "--run",
        "base",
        "--sites",
        "resid_mid,mlp_post",
        "--layers",
        "1",
        "--no-progress",
    ).output
    assert "blocks.1.hook_resid_mid, blocks.1.mlp.hook_post" in message
    loaded = load_from_disk(str(out))
    assert loaded.column_names == [
        "run",
        "prompt",
        "pos",
        "token_id",
        "blocks.1.hook_resid_mid",
        "blocks.1.mlp.hook_post",
    ]
    columns = loaded.with_format("numpy")[:]
    X, keys = wh.vectors("residuals", run="base", layer=1, site="resid_mid")
    np.testing.assert_array_equal(columns["blocks.1.hook_resid_mid"], X)  # float16 → float32
    assert columns["prompt"].tolist() == keys["prompt"].to_list()
    assert columns["pos"].tolist() == keys["pos"].to_list()
    M, _ = wh.vectors("mlp_acts", run="base", layer=1)
    np.testing.assert_array_equal(columns["blocks.1.mlp.hook_post"], M)
    tokens = wh.sql("select token_id from tokens where run = 'base' order by prompt, pos")
    assert columns["token_id"].tolist() == tokens["token_id"].to_list()


def test_a_saelens_dataset_packs_tokens_into_rows_of_the_context(tmp_path, wh):
    from datasets import load_from_disk

    out = tmp_path / "sae"
    wh.export_dataset(
        out,
        run="base",
        sites="resid_mid",
        layers=2,
        layout="saelens",
        context_size=16,
        progress=False,
    )
    loaded = load_from_disk(str(out))
    hook = "blocks.2.hook_resid_mid"
    assert loaded.features[hook].shape == (16, 32)  # what SAELens checks: (context_size, d_in)
    X, _ = wh.vectors("residuals", run="base", layer=2, site="resid_mid")
    n = len(X) // 16
    assert loaded.num_rows == n
    columns = loaded.with_format("numpy")[:]
    np.testing.assert_array_equal(columns[hook].reshape(-1, 32), X[: n * 16])
    tokens = wh.sql("select token_id from tokens where run = 'base' order by prompt, pos")
    np.testing.assert_array_equal(
        columns["token_ids"].reshape(-1), tokens["token_id"].to_numpy()[: n * 16]
    )
    with pytest.raises(ActwhError, match="no stored attn_out vectors at layer 2"):
        wh.export_dataset(tmp_path / "y", run="base", sites="attn_out", layers=2)
    assert not (tmp_path / "y").exists()
