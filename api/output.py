"""Output options shared by the commands that print a table: --table, --csv, --json, --parquet."""

from __future__ import annotations

import functools
import sys

import click
import polars as pl


def output_options(command):
    """Add the output-format options to a click command; it receives ``output=(format, path)``."""

    @click.option(
        "--table", "fmt", flag_value="table", default=True, help="Aligned table (default)."
    )
    @click.option("--csv", "fmt", flag_value="csv", help="CSV with a header row.")
    @click.option("--json", "fmt", flag_value="json", help="One JSON object a line.")
    @click.option(
        "--parquet", "parquet", type=click.Path(dir_okay=False), help="Write a Parquet file."
    )
    @functools.wraps(command)
    def wrapper(*args, fmt, parquet, **kwargs):
        if parquet and kwargs.get("warehouse"):
            from pathlib import Path

            from actwh.warehouse.layout import outside

            outside(parquet, Path(kwargs["warehouse"]).expanduser().resolve(), "parquet")
        return command(*args, output=("parquet" if parquet else fmt, parquet), **kwargs)

    return wrapper


def emit(frame: pl.DataFrame, output: tuple[str, str | None]) -> None:
    fmt, path = output
    if fmt == "parquet":
        frame.write_parquet(path)
        click.echo(f"wrote {frame.height} rows to {path}", err=True)
    elif fmt == "csv":
        sys.stdout.write(_flatten(frame).write_csv())
    elif fmt == "json":
        sys.stdout.write(frame.write_ndjson())
    else:
        frame = frame.with_columns(pl.col(pl.String).str.replace_all("\n", "⏎", literal=True))
        with pl.Config(
            tbl_rows=-1,
            tbl_cols=-1,
            fmt_str_lengths=60,
            fmt_table_cell_list_len=10,
            tbl_width_chars=200,
            tbl_hide_dataframe_shape=True,
            tbl_hide_column_data_types=True,
            tbl_formatting="ASCII_MARKDOWN",
        ):
            click.echo(frame)


def _flatten(frame: pl.DataFrame) -> pl.DataFrame:
    """CSV has no nested types: write lists and arrays as ``[a, b, ...]``, structs as JSON."""
    columns = []
    for name, dtype in frame.schema.items():
        column = pl.col(name)
        if isinstance(dtype, pl.Struct):
            column = column.struct.json_encode()
        elif isinstance(dtype, pl.List | pl.Array):
            items = column.cast(pl.List(dtype.inner)).list.eval(pl.element().cast(pl.String))
            column = pl.format("[{}]", items.list.join(", ")).alias(name)
        columns.append(column)
    return frame.select(columns)
