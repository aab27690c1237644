"""The commands that read a warehouse: ``sql``, ``query``, ``queries``, ``info``, ``tables``,
``files``, ``export``, ``export-dataset``, ``search``, ``directions list`` and ``show``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from actwh.arguments import param_value, utf8
from actwh.cli.flags import options_of
from actwh.cli.main import main, named, open_warehouse, warehouse_argument
from actwh.cli.output import emit, output_options
from actwh.errors import BadInput, from_os_error
from actwh.warehouse.options import DatasetOptions, ExportOptions, FilesOptions, SearchOptions


def parse_params(pairs: tuple[str, ...]) -> dict:
    """``k=v`` pairs; values that parse as JSON (numbers, true, null, lists) keep that type."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadInput(f"--param {pair!r}: expected name=value")
        params[key] = param_value(value)
    return params


@main.command()
@warehouse_argument
@click.argument("query")
@click.option("--param", "-p", "params", multiple=True, help="Bind $name: name=value (repeatable).")
@output_options
def sql(warehouse, query, params, output):
    """Run read-only SQL (DuckDB) over WAREHOUSE; QUERY is a statement, a FILE.sql, or '-' to
    read it from stdin.

    Fact tables (tokens, generations, residuals, mlp_acts, ...) are views over the committed
    Parquet files; catalog tables (models, runs, prompts, ...) are there too.

    \b
    Example:
      actwh sql wh "select layer, count(*) from residuals group by layer order by layer"
      actwh sql wh "select * from runs where model = \\$m" --param m=smollm2-135m-instruct --csv
      actwh sql wh analysis.sql --csv
    """
    if query == "-":
        query = utf8(sys.stdin.buffer.read(), "the SQL on stdin")
    elif query.endswith(".sql") and (
        Path(query).is_file() or not any(c.isspace() for c in query)
    ):  # a file name, not a statement that ends "-- see my.sql"
        try:
            query = utf8(Path(query).read_bytes(), query)
        except OSError as error:
            raise from_os_error(error, "reading the SQL file: ") from None
    with open_warehouse(warehouse) as wh:
        emit(wh.sql_batches(query, parse_params(params) or None), output)


@main.command()
@warehouse_argument
@click.argument("name")
@click.option("--param", "-p", "params", multiple=True, help="name=value (repeatable).")
@output_options
def query(warehouse, name, params, output):
    """Run a named analysis (see `actwh queries`), with its parameters bound.

    \b
    Example:
      actwh query wh activation_drop --param base_run=base --param tuned_run=dpo
      actwh query wh toxicity_table --csv
    """
    click.get_current_context().meta["query_params"] = True
    with open_warehouse(warehouse) as wh:
        emit(wh.query_batches(name, **parse_params(params)), output)


@main.command()
@warehouse_argument
@click.argument("name", required=False)
@output_options
def queries(warehouse, name, output):
    """List the named analyses with the paper figure each reproduces and its parameters; with
    NAME, that one analysis: what it answers, what it needs, each parameter, and an example.

    \b
    Example:
      actwh queries wh
      actwh queries wh activation_drop
    """
    if name is not None:
        click.echo(_describe_query(name, warehouse))
        return
    with open_warehouse(warehouse) as wh:
        listing = wh.queries()
        if output[0] == "table":
            for row in listing.iter_rows(named=True):
                click.echo(f"{row['name']}({row['parameters']})")
                click.echo(f"    {row['paper']}")
                click.echo(f"    answers: {row['answers']}")
                click.echo(f"    needs: {row['needs']}\n")
        else:
            emit(listing, output)


def _describe_query(name: str, warehouse: str) -> str:
    """One named analysis as help text: its header, each parameter and an example call."""
    from actwh.queries.loader import named_query

    q = named_query(name)
    lines = [
        f"{q.name}: {q.answers}",
        f"  paper: {q.paper}",
        f"  needs: {q.needs}",
        "  parameters:",
    ]
    for p in q.params:
        default = "required" if p.required else f"default {p.default!r}"
        lines.append(f"    {p.name} ({default}): {p.description}")
    required = " ".join(f"-p {p.name}=..." for p in q.params if p.required)
    lines.append(f"  example: actwh query {warehouse} {q.name} {required}".rstrip())
    return "\n".join(lines)


@main.command()
@warehouse_argument
def info(warehouse):
    """What a warehouse holds: models, runs (with what each captured, its layers and size),
    prompt sets, directions, and rows and bytes per table.

    \b
    Example:
      actwh info wh
    """
    with open_warehouse(warehouse) as wh:
        found = wh.info()
    for title, frame in found.items():
        click.echo(f"{title}:")
        emit(frame, ("table", None))
        click.echo("")


@main.command()
@warehouse_argument
@output_options
def tables(warehouse, output):
    """List the tables and views of WAREHOUSE with their row counts.

    \b
    Example:
      actwh tables wh
    """
    with open_warehouse(warehouse) as wh:
        emit(wh.tables(), output)


@main.command()
@warehouse_argument
@click.argument("table")
@options_of(FilesOptions)
def files(warehouse, table, **options):
    """List the committed Parquet files of TABLE, one absolute path per line.

    Exactly what actwh's own queries read: never an orphan left by a crash, nor a file being
    written. For engines that take a file list (Spark, Trino, DuckDB).

    \b
    Example:
      actwh files wh tokens --runs base
      actwh files wh residuals --runs base --layers 17-19 | xargs du -ch | tail -1
    """
    named(table="TABLE")
    with open_warehouse(warehouse) as wh:
        listed = wh.files(table, FilesOptions(**options))
    for path in listed:
        click.echo(path)


@main.command()
@warehouse_argument
@click.argument("table")
@click.argument("out", type=click.Path(file_okay=False))
@options_of(ExportOptions)
def export(warehouse, table, out, **options):
    """Write TABLE (or part of it) to the new directory OUT as plain Parquet for other engines.

    Only committed rows; vectors as float32 (Spark cannot read the warehouse's float16);
    Hive-partitioned like the warehouse (OUT/run=base/layer=19/part-*.parquet); OUT/_manifest.json
    lists the files. Spark reads it with spark.read.parquet(OUT).

    \b
    Example:
      actwh export wh residuals export/residuals --runs base --layers 17-19
    """
    named(table="TABLE", out="OUT")
    with open_warehouse(warehouse) as wh:
        manifest = wh.export(table, out, ExportOptions(**options))
    click.echo(
        f"exported {manifest['rows']:,} rows of {table} in {len(manifest['files'])} files to {out}"
    )


@main.command()
@warehouse_argument
@click.argument("out", type=click.Path(file_okay=False))
@options_of(DatasetOptions)
def export_dataset(warehouse, out, **options):
    """Write a run's stored vectors to OUT as a Hugging Face datasets dataset (save_to_disk).

    Columns are named by TransformerLens hook (blocks.19.hook_resid_mid, blocks.19.mlp.hook_post),
    float32. Load it with datasets.load_from_disk(OUT); train a SAE on it with SAELens
    (use_cached_activations=True, cached_activations_path=OUT, hook_name, context_size, d_in).

    \b
    Example:
      actwh export-dataset wh sae-data --run base --sites resid_mid --layers 19 --layout saelens
    """
    named(out="OUT")
    with open_warehouse(warehouse) as wh:
        written = wh.export_dataset(out, DatasetOptions(**options))
    hooks = [c for c in written.column_names if c.startswith("blocks.")]
    click.echo(f"wrote {written.num_rows:,} rows ({', '.join(hooks)}) to {out}")


@main.command()
@warehouse_argument
@click.option("--direction", required=True, help="A registered direction.")
@options_of(SearchOptions)
@output_options
def search(warehouse, direction, output, **options):
    """Neurons whose value vectors can write most along a direction, with their top tokens.

    A GELU neuron (GPT-2) writes +v, so the ranking is by cosine (the paper's Table 1). A gated
    neuron (Llama family) writes +v or -v: the ranking is by |cosine|; `sign` says which sign of
    its coefficient writes toward the direction, and `top_tokens` are those of sign·v.

    \b
    Example:
      actwh search wh --direction toxic_probe -k 20
      actwh search wh --direction toxic_probe -k 20 --run base
    """
    with open_warehouse(warehouse) as wh:
        hits = wh.search(direction, SearchOptions(**options))
        emit(hits.drop("query"), output)


@main.group()
def directions():
    """Named vectors in a model's residual space: add, list, show."""


@directions.command("list")
@warehouse_argument
@output_options
def directions_list(warehouse, output):
    """List registered directions.

    \b
    Example:
      actwh directions list wh
    """
    with open_warehouse(warehouse) as wh:
        emit(wh.directions(), output)


@directions.command("show")
@warehouse_argument
@click.argument("name")
@click.option("--model", help="The direction's model, when several have one of that name.")
@click.option(
    "-k",
    "--k",
    "k",
    default=0,
    help="Also list the K tokens it promotes most (from the stored readout; where the model's "
    "vectors are not indexed, from the model).",
)
def directions_show(warehouse, name, model, k):
    """Show a direction: where it came from, its norm, and optionally its top tokens.

    \b
    Example:
      actwh directions show wh toxic_probe -k 10
    """
    import numpy as np

    with open_warehouse(warehouse) as wh:
        owner, vector = wh.resolve_direction(name, model)
        row = wh.sql(
            "select kind, d_model, norm, meta from direction_of($m, $n)", {"m": owner, "n": name}
        ).row(0, named=True)
        click.echo(
            f"{name} ({row['kind']}) of model {owner}: d_model {row['d_model']}, "
            f"norm {row['norm']:.6g}"
        )
        click.echo(f"meta: {row['meta']}")
        click.echo(f"first values: {np.array2string(vector[:8], precision=4)}")
        if k:
            words, unembed = wh.direction_tokens(name, model=model, k=k)
            click.echo(f"top tokens ({unembed}): " + ", ".join(repr(t) for t in words))
