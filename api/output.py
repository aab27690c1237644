"""Output options shared by the commands that print a table: --table, --csv, --json, --parquet."""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable
from pathlib import Path

import click
import polars as pl
import pyarrow.parquet as pq

from actwh.errors import ActwhError


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
    @click.option("--force", "force", is_flag=True, help="--parquet: replace the file.")
    @functools.wraps(command)
    def wrapper(*args, fmt, parquet, force, **kwargs):
        if parquet:
            from actwh.warehouse.layout import output_file

            output_file(parquet, "parquet", force=force)
        return command(*args, output=("parquet" if parquet else fmt, parquet), **kwargs)

    return wrapper


def emit(frames: pl.DataFrame | Iterable[pl.DataFrame], output: tuple[str, str | None]) -> None:
    """Print a result (a DataFrame, or a stream of them: memory stays flat) as ``output`` says:
    a table per 10,000 rows, CSV with one header, JSON lines, or a Parquet file."""
    frames = [frames] if isinstance(frames, pl.DataFrame) else frames
    fmt, path = output
    if fmt == "parquet":
        assert path is not None, "--parquet takes a path"
        rows = _write_parquet(frames, path)
        click.echo(f"wrote {rows} rows to {path}", err=True)
    elif fmt == "csv":
        for i, frame in enumerate(frames):
            sys.stdout.write(_flatten(frame).write_csv(include_header=i == 0))
    elif fmt == "json":
        for frame in frames:
            sys.stdout.write(frame.write_ndjson())
    else:
        for frame in _regrouped(frames, TABLE_ROWS):
            _print_table(frame)


TABLE_ROWS = 10_000  # a table gets a header per this many rows; a smaller result, one table


def _regrouped(frames: Iterable[pl.DataFrame], rows: int) -> Iterable[pl.DataFrame]:
    """The stream's rows in frames of at least ``rows`` (the last may be smaller): DuckDB hands
    back batches of any size, even a few rows each for a short result."""
    held: list[pl.DataFrame] = []
    count = 0
    for frame in frames:
        held.append(frame)
        count += frame.height
        if count >= rows:
            yield pl.concat(held, how="vertical_relaxed")
            held, count = [], 0
    if held:
        yield pl.concat(held, how="vertical_relaxed")


def _print_table(frame: pl.DataFrame) -> None:
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


def _write_parquet(frames: Iterable[pl.DataFrame], path: str) -> int:
    """Stream ``frames`` into the Parquet file ``path``, whole or absent; returns the rows."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    rows, writer = 0, None
    try:
        for frame in frames:
            table = frame.to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
            writer.write_table(table)
            rows += frame.height
        if writer is None:  # a stream of no frames has no schema to write
            raise ActwhError("the query gave no result to write")
        writer.close()
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return rows


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


def rate(per_second: float, unit: str = "tok/s") -> str:
    """A rate with the digits that make it non-zero: 1,234 tok/s, 12.3 tok/s, 0.042 tok/s."""
    if per_second >= 100 or per_second == 0:
        return f"{per_second:,.0f} {unit}"
    return f"{per_second:.3g} {unit}"
