"""Spark reads a warehouse's tables in place: the schema to read a table with, and the SQL that
turns its stored float16 vectors into floats. Nothing here imports pyspark.

Two things stand between Spark and the files as they are. Vectors are float16 by default, a
Parquet type Spark refuses (``PARQUET_TYPE_ILLEGAL ... FLOAT16``); told to, though, Spark reads
each float16 element as its two bytes (a schema with ``vec array<binary>``), and
:func:`vector_sql` decodes those bytes with Spark's own SQL functions (IEEE half precision:
sign, exponent, mantissa; subnormals, infinities and NaN included) and applies ``vec_scale``,
so any Spark API can use it (``selectExpr`` in Python or Scala, Spark SQL). And a table's folder
may hold files no commit lists: the commit log actwh keeps in it
(:mod:`actwh.warehouse.spark_log`) makes Spark read the committed files only.

Without actwh installed on the cluster::

    df = spark.read.schema(SCHEMA).parquet("wh/data/residuals")   # SCHEMA: spark_schema(...)
    df = df.selectExpr("run", "layer", "prompt", "pos", "site", VECTOR_SQL + " AS vec")

With it, on the driver: ``read_table(spark, "wh", "residuals")``, which also reads tables that
hold float32 vectors (``--store-dtype float32``, or the float32 fallback) beside float16 ones.
"""

from __future__ import annotations

from actwh.errors import NotFound
from actwh.warehouse.schema import VECTOR_TYPE, fact_table

_SPARK_TYPES = {
    "VARCHAR": "string",
    "INTEGER": "int",
    "SMALLINT": "smallint",
    "BIGINT": "bigint",
    "FLOAT": "float",
    "DOUBLE": "double",
    "BOOLEAN": "boolean",
    "VARCHAR[]": "array<string>",
    "INTEGER[]": "array<int>",
}


def spark_schema(table: str, dtype: str = "float16") -> str:
    """The schema (Spark DDL) to read ``table``'s files with: its columns, partition columns
    last, the vector column as the stored ``dtype`` reads (``array<binary>`` for float16,
    ``array<float>`` for float32)."""
    spec = fact_table(table)
    columns = [*spec.data_columns, *((c, spec.column_type(c)) for c in spec.partition)]
    vector = "array<binary>" if dtype == "float16" else "array<float>"
    return ", ".join(
        f"{column} {vector if type_ == VECTOR_TYPE else _SPARK_TYPES[type_]}"
        for column, type_ in columns
    )


def vector_sql(column: str = "vec", scale: str | None = "vec_scale", dtype: str = "float16") -> str:
    """Spark SQL for the vector ``column`` as ``array<float>``: float16 elements decoded from
    their two bytes (little-endian), times ``scale`` where a row has one."""
    factor = f" * coalesce({scale}, 1)" if scale else ""
    if dtype != "float16":
        return f"transform({column}, x -> CAST(x{factor} AS FLOAT))" if factor else column
    bits = "CAST(conv(concat(substr(hex(b), 3, 2), substr(hex(b), 1, 2)), 16, 10) AS INT)"
    exponent, mantissa = "((u DIV 1024) % 32)", "(u % 1024)"
    value = (
        f"CASE WHEN u >= 32768 THEN -1.0D ELSE 1.0D END * "
        f"CASE WHEN {exponent} = 0 THEN {mantissa} * power(2, -24) "
        f"WHEN {exponent} = 31 THEN CASE WHEN {mantissa} = 0 THEN CAST('Infinity' AS DOUBLE) "
        f"ELSE CAST('NaN' AS DOUBLE) END "
        f"ELSE (1 + {mantissa} / 1024.0D) * power(2, {exponent} - 15) END"
    )
    return f"transform(transform({column}, b -> {bits}), u -> CAST({value}{factor} AS FLOAT))"


SCHEMA = spark_schema("residuals")
VECTOR_SQL = vector_sql()


def read_table(spark, warehouse: str, table: str):
    """``table`` of the warehouse at ``warehouse`` as a Spark DataFrame of its committed rows,
    vectors as ``array<float>`` at their true values (``vec_scale`` applied); the columns are
    those ``actwh sql`` shows. The catalog (read on the driver) lists the files and how each
    stores its vectors."""
    import actwh

    spec = fact_table(table)
    with actwh.open(warehouse) as wh:
        rows = wh.sql(
            "SELECT coalesce(vector_dtype, 'float16') AS dtype, list(path ORDER BY path) AS paths "
            "FROM commit_files WHERE table_name = $t GROUP BY ALL",
            {"t": table},
        ).rows()
        base = wh.store.url(f"data/{table}")
        urls = {dtype: [wh.store.url(p) for p in paths] for dtype, paths in rows}
    shown = [c for c, _ in spec.read_columns]
    frames = []
    for dtype, paths in sorted(urls.items()):
        frame = spark.read.schema(spark_schema(table, dtype)).option("basePath", base)
        frame = frame.parquet(*paths)
        if spec.vector_column:
            decoded = vector_sql(spec.vector_column, spec.scale_column, dtype)
            frame = frame.selectExpr(
                *(f"{decoded} AS {c}" if c == spec.vector_column else c for c in shown)
            )
        frames.append(frame.select(*shown))
    if not frames:
        raise NotFound(f"table {table} of {warehouse} has no committed files")
    result = frames[0]
    for frame in frames[1:]:
        result = result.unionByName(frame)
    return result
