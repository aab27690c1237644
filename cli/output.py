"""Output options shared by the commands that print a table: --table, --markdown, --csv, --json,
--parquet. Every format shows a value with the same digits (as CSV writes it) and never cuts one
short; lists are JSON arrays in CSV and JSON alike."""

from __future__ import annotations

import functools
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from actwh.errors import ActwhError

if TYPE_CHECKING:  # polars and pyarrow load when a result is printed: --help stays fast
    import polars as pl


def output_options(command):
    """Add the output-format options to a click command; it receives ``output=(format, path)``."""

    @click.option(
        "--table",
        "fmt",
        flag_value="table",
        default=True,
        help="Aligned table; rows wider than the terminal print as records (default).",
    )
    @click.option("--markdown", "fmt", flag_value="markdown", help="A GitHub Markdown table.")
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
    import polars as pl

    frames = [frames] if isinstance(frames, pl.DataFrame) else frames
    fmt, path = output
    if path is not None:  # --parquet PATH
        rows = _write_parquet(frames, path)
        click.echo(f"wrote {rows} rows to {path}", err=True)
    elif fmt == "csv":
        for i, frame in enumerate(frames):
            sys.stdout.write(_flatten(frame).write_csv(include_header=i == 0))
    elif fmt == "json":
        for frame in frames:
            sys.stdout.write(frame.write_ndjson())
    else:
        width = 0 if fmt == "markdown" else shutil.get_terminal_size((0, 0)).columns
        shown = 0
        for frame in _regrouped(frames, TABLE_ROWS):
            click.echo(_table(frame, width, first=shown + 1))
            shown += frame.height


TABLE_ROWS = 10_000  # a table gets a header per this many rows; a smaller result, one table


def _regrouped(frames: Iterable[pl.DataFrame], rows: int) -> Iterable[pl.DataFrame]:
    """The stream's rows in frames of at least ``rows`` (the last may be smaller): DuckDB hands
    back batches of any size, even a few rows each for a short result."""
    import polars as pl

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


def _table(frame: pl.DataFrame, width: int, first: int = 1) -> str:
    """``frame`` as a Markdown table, or — when that is wider than ``width`` (0: no limit) — as
    records, one ``column | value`` line each (psql's ``\\x``), numbered from ``first``."""
    header = frame.columns
    rows = [[_cell(v) for v in row] for row in _cells(frame).iter_rows()]
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(header)]
    if width and sum(widths) + 3 * len(widths) + 1 > width:
        name_width = max(len(h) for h in header)
        lines = []
        for n, row in enumerate(rows, start=first):
            lines.append(f"-[ RECORD {n} ]" + "-" * max(0, min(width, 40) - 14 - len(str(n))))
            lines += [f"{h:<{name_width}} | {v}" for h, v in zip(header, row, strict=True)]
        return "\n".join(lines)

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line([_cell(h) for h in header]), rule, *(line(r) for r in rows)])


def _cell(value: str | None) -> str:
    """A value inside a table: null spelled out, pipes escaped, line breaks shown as ⏎."""
    if value is None:
        return "null"
    return value.replace("|", "\\|").replace("\n", "⏎")


def _cells(frame: pl.DataFrame) -> pl.DataFrame:
    """Every value as a string, with the digits CSV writes; lists and structs as JSON."""
    import polars as pl

    return _flatten(frame).select(pl.all().cast(pl.String))


def _write_parquet(frames: Iterable[pl.DataFrame], path: str) -> int:
    """Stream ``frames`` into the Parquet file ``path``, whole or absent; returns the rows."""
    import pyarrow.parquet as pq

    from actwh.warehouse.layout import replacing

    rows, writer = 0, None
    with replacing(Path(path)) as f:
        for frame in frames:
            table = frame.to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(f, table.schema, compression="zstd")
            writer.write_table(table)
            rows += frame.height
        if writer is None:  # a stream of no frames has no schema to write
            raise ActwhError("the query gave no result to write")
        writer.close()
    return rows


def _flatten(frame: pl.DataFrame) -> pl.DataFrame:
    """CSV has no nested types: lists and arrays as JSON arrays (``[" a,b","c"]``: a token's
    spaces, commas and quotes survive), structs as JSON objects."""
    import polars as pl

    columns = []
    for name, dtype in frame.schema.items():
        column = pl.col(name)
        if isinstance(dtype, pl.Struct):
            column = column.struct.json_encode()
        elif isinstance(dtype, pl.List | pl.Array):
            # {"v":[...]} less its first 5 and last 1 characters: the list as JSON
            encoded = pl.struct(column.alias("v")).struct.json_encode().str.slice(5).str.head(-1)
            column = pl.when(column.is_null()).then(None).otherwise(encoded).alias(name)
        columns.append(column)
    return frame.select(columns)
