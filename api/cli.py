"""The ``actwh`` command line: a thin mirror of the library.

Heavy imports (torch, transformers) happen inside the commands that run models, so ``actwh sql``
and other read-only commands start fast.
"""

from __future__ import annotations

import json
import sys

import click

from actwh.api.output import emit, output_options
from actwh.errors import ActwhError


class _Group(click.Group):
    """Prints an :class:`ActwhError` as one line and exits with status 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ActwhError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="actwh")
def main():
    """actwh: an activation warehouse for mechanistic interpretability of alignment.

    Run a base model and its DPO-tuned sibling over the same prompts, keep what happens inside
    them token by token and layer by layer, and ask questions of it in SQL.

    \b
    Example:
      actwh ingest wh --model embedded --generate 20 --capture resid_mid,mlp_post
      actwh sql wh "select layer, count(*) from residuals group by layer order by layer"
    """


def parse_params(pairs: tuple[str, ...]) -> dict:
    """``k=v`` pairs; values that parse as JSON (numbers, true, null, lists) keep that type."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ActwhError(f"--param {pair!r}: expected name=value")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


@main.command()
@click.argument("warehouse", type=click.Path(file_okay=False))
@click.option(
    "--model",
    "model",
    required=True,
    help="embedded, a hub id, a local HF directory, or a .gguf file.",
)
@click.option(
    "--prompts",
    type=click.Path(dir_okay=False),
    help="JSONL or text file (default: the shipped prompt set).",
)
@click.option(
    "--name", help="Run name (default MODEL.PROMPTSET). An unfinished run of that name is resumed."
)
@click.option("--model-name", help="Name to register the model under (default from the source).")
@click.option(
    "--prompt-set", help="Name to register the prompt set under (default: the file's stem)."
)
@click.option(
    "--generate",
    default=20,
    show_default=True,
    help="Greedy tokens to generate per prompt (0: prompt only).",
)
@click.option(
    "--capture",
    default="",
    help="Sites whose full vectors are stored (comma list): resid_pre, resid_mid, "
    "resid_post, attn_out, mlp_out, mlp_post. Default: none.",
)
@click.option(
    "--project",
    default="resid_mid,resid_post",
    show_default=True,
    help="Residual sites projected on the model's directions.",
)
@click.option("--layers", default="all", show_default=True, help="all, 19, 10-20, or a comma list.")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@click.option(
    "--dtype",
    type=click.Choice(["float32", "bfloat16", "float16"]),
    default="float32",
    show_default=True,
    help="dtype the model runs in.",
)
@click.option(
    "--store-dtype",
    type=click.Choice(["float16", "float32"]),
    default="float16",
    show_default=True,
    help="dtype of stored vectors.",
)
@click.option(
    "--on-overflow",
    "overflow",
    type=click.Choice(["fallback", "error"]),
    default="fallback",
    show_default=True,
    help="float16 storage of values beyond ±65504: store that block as float32, or stop.",
)
@click.option(
    "--max-prompt-tokens",
    type=int,
    help="Keep the first N tokens of longer prompts (default: what the context allows).",
)
@click.option("--shard", help="i/N: this worker takes every N-th batch (run N workers at once).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def ingest(warehouse, model, prompts, quiet, shard, **options):
    """Run a model over prompts and store its activations in WAREHOUSE.

    Every token of prompt and continuation is captured at every requested site and layer.
    The warehouse is created if it does not exist; bad input is refused before anything is
    written.

    \b
    Example:
      actwh ingest wh --model embedded --generate 20 --capture resid_mid,mlp_post
    """
    from actwh.ingest.options import IngestOptions
    from actwh.ingest.prompts import shipped_prompts
    from actwh.ingest.worker import ingest as run_ingest

    summary = run_ingest(
        warehouse,
        model,
        prompts or shipped_prompts(),
        IngestOptions(progress=not quiet, **options),
        shard=shard,
    )
    for warning in summary.warnings:
        click.echo(f"warning: {warning}", err=True)
    verb = "resumed" if summary.resumed else "ingested"
    click.echo(
        f"{verb} run {summary.run}: {summary.n_prompts} prompts, {summary.n_tokens:,} tokens "
        f"in {summary.seconds:.1f}s ({summary.tokens_per_second:,.0f} tok/s)"
    )


@main.command()
@click.argument("warehouse", type=click.Path(file_okay=False))
@click.argument("query")
@click.option("--param", "-p", "params", multiple=True, help="Bind $name: name=value (repeatable).")
@output_options
def sql(warehouse, query, params, output):
    """Run read-only SQL (DuckDB) over WAREHOUSE; QUERY '-' reads it from stdin.

    Fact tables (tokens, generations, residuals, mlp_acts, ...) are views over the committed
    Parquet files; catalog tables (models, runs, prompts, ...) are there too.

    \b
    Example:
      actwh sql wh "select layer, count(*) from residuals group by layer order by layer"
      actwh sql wh "select * from runs where model = \\$m" --param m=smollm2-135m-instruct --csv
    """
    from actwh.api.warehouse import Warehouse

    if query == "-":
        query = sys.stdin.read()
    with Warehouse(warehouse) as wh:
        emit(wh.sql(query, parse_params(params) or None), output)


@main.command()
@click.argument("warehouse", type=click.Path(file_okay=False))
@output_options
def tables(warehouse, output):
    """List the tables and views of WAREHOUSE with their row counts.

    \b
    Example:
      actwh tables wh
    """
    from actwh.api.warehouse import Warehouse

    with Warehouse(warehouse) as wh:
        counts = " UNION ALL ".join(
            f"SELECT '{t}' AS name, count(*) AS n_rows FROM {t}" for t in wh.tables()
        )
        emit(wh.sql(counts), output)


@main.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="demo-out",
    show_default=True,
    help="Directory for the warehouse and the report; a rerun reuses finished steps.",
)
def demo(out):
    """Run the main job offline on the embedded SmolLM2-135M-Instruct.

    \b
    Example:
      actwh demo --out demo-out
    """
    from pathlib import Path

    from actwh.api.demo import run_demo

    run_demo(Path(out))
