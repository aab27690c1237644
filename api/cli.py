"""The ``actwh`` command line: a thin mirror of the library.

Heavy imports (torch, transformers) happen inside the commands that run models, so ``actwh sql``
and other read-only commands start fast.
"""

from __future__ import annotations

import json
import os
import sys

import click

from actwh.api.flags import list_option, options_of
from actwh.api.output import emit, output_options, rate
from actwh.arguments import names
from actwh.errors import ActwhError, from_os_error, missing_extra
from actwh.ingest.options import IngestOptions
from actwh.models.shipped import SHIPPED
from actwh.train.options import DPOOptions
from actwh.warehouse.compact import CompactOptions
from actwh.warehouse.layout import PROBE, shown_url


def flag(argument: str) -> str:
    """How the CLI names a library argument in an error message: its flag — ``--`` and the name
    with dashes, unless the command says otherwise (``context.meta["flags"]``)."""
    context = click.get_current_context(silent=True)
    if context and context.meta.get("query_params"):  # actwh query/sql: every argument is -p K=V
        return f"-p {argument}"
    overrides = context.meta.get("flags", {}) if context else {}
    return overrides.get(argument, "--" + argument.replace("_", "-"))


class _Group(click.Group):
    """Prints an :class:`ActwhError`, or an I/O failure, as one line and exits with status 2;
    the arguments an error names are shown as this CLI's flags."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ActwhError as error:
            click.echo(f"error: {error.render(flag)}", err=True)
            sys.exit(2)
        except ModuleNotFoundError as error:  # a command whose extra is not installed
            if (missing := missing_extra(error, f"actwh {ctx.invoked_subcommand}")) is None:
                raise
            click.echo(f"error: {missing}", err=True)
            sys.exit(2)
        except BrokenPipeError:  # the reader left (actwh sql ... | head): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except OSError as error:  # an I/O failure anywhere else: one line, not a traceback
            click.echo(f"error: {from_os_error(error)}", err=True)
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
    "--catalog",
    metavar="URL",
    help="Catalog database: any SQLAlchemy URL (e.g. postgresql+psycopg://user@host/db); "
    "default an embedded DuckDB file in the warehouse.",
)
def init(warehouse, catalog):
    """Create an empty warehouse (other commands also create one when it is missing).

    \b
    Example:
      actwh init wh --catalog postgresql+psycopg://me@dbhost/actwh
    """
    wh = _warehouse(warehouse, create=True, catalog=catalog)
    click.echo(f"warehouse {wh.store.location} (catalog {shown_url(wh.store.catalog_url)})")


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
@options_of(IngestOptions)
@click.option("--shard", help="i/N: this worker takes every N-th batch (run N workers at once).")
@click.option("--ray", "use_ray", is_flag=True, help="Launch one worker per GPU of a Ray cluster.")
@click.option("--workers", type=int, help="--ray: this many workers (CPU workers if no GPU).")
@click.option("--ray-address", help="--ray: the cluster's address (default: start a local Ray).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def ingest(warehouse, model, prompts, quiet, shard, use_ray, workers, ray_address, **options):
    """Run a model over prompts and store its activations in WAREHOUSE.

    Every token of prompt and continuation is captured at every requested site and layer.
    Projections on every direction of the model (and of its parent) are always stored.
    The warehouse is created if it does not exist; bad input is refused before anything is
    written; an unfinished run of the same name is resumed.

    \b
    Example:
      actwh ingest wh --model embedded --generate 20 --capture resid_mid,mlp_post
      actwh ingest wh --model ./dpo --name dpo --teacher-force base --capture resid_mid
    """
    wh = _warehouse(warehouse, create=True, catalog=options.pop("catalog"))
    summary = wh.ingest(
        model,
        prompts,
        shard=shard,
        ray=use_ray,
        workers=workers,
        ray_address=ray_address,
        progress=not quiet,
        **options,
    )
    for warning in summary.warnings:
        click.echo(f"warning: {warning}", err=True)
    for notice in summary.notices:
        click.echo(f"warning: {notice.render(flag)}", err=True)
    verb = "resumed" if summary.resumed else "ingested"
    redone = f" ({summary.n_redone} redone after a repair)" if summary.n_redone else ""
    where = f", {summary.workers} workers on {summary.nodes} node(s)" if summary.workers > 1 else ""
    click.echo(
        f"{verb} run {summary.run}: {summary.n_prompts} prompts{redone}, "
        f"{summary.n_tokens:,} tokens in {summary.seconds:.1f}s ({rate(summary.tokens_per_second)})"
        f"{where}"
    )


@main.command()
@click.argument("warehouse", type=click.Path(file_okay=False))
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
        query = sys.stdin.read()
    elif query.endswith(".sql") and "\n" not in query:
        try:
            query = open(query, encoding="utf-8").read()
        except OSError as error:
            raise from_os_error(error, "reading the SQL file: ") from None
    with _warehouse(warehouse) as wh:
        emit(wh.sql_batches(query, parse_params(params) or None), output)


@main.command()
@click.argument("warehouse", type=click.Path(file_okay=False))
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
    with _warehouse(warehouse) as wh:
        emit(wh.query_batches(name, **parse_params(params)), output)


@main.command()
@click.argument("warehouse", type=click.Path(file_okay=False))
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
    with _warehouse(warehouse) as wh:
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
@click.argument("warehouse", type=click.Path(file_okay=False))
def info(warehouse):
    """What a warehouse holds: models, runs (with what each captured, its layers and size),
    prompt sets, directions, and rows and bytes per table.

    \b
    Example:
      actwh info wh
    """
    with _warehouse(warehouse) as wh:
        found = wh.info()
    for title, frame in found.items():
        click.echo(f"{title}:")
        emit(frame, ("table", None))
        click.echo("")


@main.command()
@click.argument("warehouse", type=click.Path(file_okay=False))
@output_options
def tables(warehouse, output):
    """List the tables and views of WAREHOUSE with their row counts.

    \b
    Example:
      actwh tables wh
    """
    with _warehouse(warehouse) as wh:
        emit(wh.tables(), output)


@main.command()
@click.argument("warehouse", type=click.Path(file_okay=False))
@click.argument("table")
@list_option("--runs", help="Only these runs' files.")
@list_option("--layers", help="Only these layers: 19 or 10-20.")
@list_option("--models", help="Only these models' files.")
def files(warehouse, table, runs, layers, models):
    """List the committed Parquet files of TABLE, one absolute path per line.

    Exactly what actwh's own queries read: never an orphan left by a crash, nor a file being
    written. For engines that take a file list (Spark, Trino, DuckDB).

    \b
    Example:
      actwh files wh tokens --runs base
      actwh files wh residuals --runs base --layers 17-19 | xargs du -ch | tail -1
    """
    click.get_current_context().meta["flags"] = {"table": "TABLE"}
    with _warehouse(warehouse) as wh:
        listed = wh.files(table, runs=runs, layers=layers, models=models)
    for path in listed:
        click.echo(path)


@main.command()
@click.argument("warehouse", type=click.Path(file_okay=False))
@click.argument("table")
@click.argument("out", type=click.Path(file_okay=False))
@list_option("--runs", help="Only these runs' rows.")
@list_option("--layers", help="Only these layers: 19 or 10-20.")
@list_option("--sites", help="Only these sites' rows.")
@list_option("--models", help="Only these models' rows.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def export(warehouse, table, out, runs, layers, sites, models, quiet):
    """Write TABLE (or part of it) to the new directory OUT as plain Parquet for other engines.

    Only committed rows; vectors as float32 (Spark cannot read the warehouse's float16);
    Hive-partitioned like the warehouse (OUT/run=base/layer=19/part-*.parquet); OUT/_manifest.json
    lists the files. Spark reads it with spark.read.parquet(OUT).

    \b
    Example:
      actwh export wh residuals export/residuals --runs base --layers 17-19
    """
    click.get_current_context().meta["flags"] = {"table": "TABLE", "out": "OUT"}
    with _warehouse(warehouse) as wh:
        manifest = wh.export(
            table,
            out,
            runs=runs,
            layers=layers,
            sites=sites,
            models=models,
            progress=not quiet,
        )
    click.echo(
        f"exported {manifest['rows']:,} rows of {table} in {len(manifest['files'])} files to {out}"
    )


@main.command()
@click.argument("warehouse", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--run", required=True, help="The run whose vectors are exported.")
@list_option("--sites", required=True, help="Captured sites: resid_mid, mlp_post, ...")
@list_option("--layers", required=True, help="19, 10-20, or all.")
@click.option(
    "--layout",
    type=click.Choice(["tokens", "saelens"]),
    default="tokens",
    show_default=True,
    help="tokens: a row per token (run, prompt, pos, token_id, a vector per hook); saelens: "
    "rows of --context-size tokens, SAELens's cached-activation layout.",
)
@click.option(
    "--context-size", default=128, show_default=True, help="--layout saelens: tokens a row."
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def export_dataset(warehouse, out, run, sites, layers, layout, context_size, quiet):
    """Write a run's stored vectors to OUT as a Hugging Face datasets dataset (save_to_disk).

    Columns are named by TransformerLens hook (blocks.19.hook_resid_mid, blocks.19.mlp.hook_post),
    float32. Load it with datasets.load_from_disk(OUT); train a SAE on it with SAELens
    (use_cached_activations=True, cached_activations_path=OUT, hook_name, context_size, d_in).

    \b
    Example:
      actwh export-dataset wh sae-data --run base --sites resid_mid --layers 19 --layout saelens
    """
    click.get_current_context().meta["flags"] = {"out": "OUT"}
    with _warehouse(warehouse) as wh:
        written = wh.export_dataset(
            out,
            run=run,
            sites=sites,
            layers=layers,
            layout=layout,
            context_size=context_size,
            progress=not quiet,
        )
    hooks = [c for c in written.column_names if c.startswith("blocks.")]
    click.echo(f"wrote {written.num_rows:,} rows ({', '.join(hooks)}) to {out}")


@main.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Directory for the warehouse, the DPO model and the report; a rerun reuses finished "
    "steps.  [default: demo-out, or demo-out-MODEL for another --model]",
)
@click.option(
    "--model",
    type=click.Choice(list(SHIPPED)),
    default="embedded",
    show_default=True,
    help="The shipped model studied: SmolLM2-135M-Instruct, or the pretrained Gemma 3 270M.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option(
    "--quick",
    is_flag=True,
    help="A small but complete study in minutes (48 prompts, 8 tokens, 4 DPO steps, no sweep): "
    "every table and report section filled, to explore; its numbers are not findings.  "
    "[out: demo-quick]",
)
@click.option(
    "--seeds",
    default=1,
    show_default=True,
    help="Repeat pairs → DPO → evaluation with this many seeds and report the spread (a rerun "
    "with more seeds adds only the new ones).",
)
@list_option(
    "--sweep",
    help="Scales of the un-aligning sweep besides the paper's ×10 (each is a variant and its "
    "control, evaluated: about 3 minutes each on SmolLM2 here).  [default: 2,5; none with "
    "--quick]",
)
def demo(out, model, quiet, quick, seeds, sweep):
    """The whole study, offline, on a CPU: on the embedded SmolLM2-135M-Instruct (an already
    aligned model: the fast default), or on the shipped pretrained Gemma 3 270M (the paper's
    setting: a base LM aligned by DPO).

    Probe, value vectors and search, preference pairs, DPO, base and DPO runs over the same
    tokens, δx, weight differences, the un-aligned variant and its control, evaluation, the named
    analyses with their controls and the report; then a summary of the findings.

    \b
    Example:
      actwh demo --out demo-out
      actwh demo --quick
      actwh demo --out demo-out --seeds 3
      actwh demo --out demo-out --sweep 1.5,2,3,5
      actwh demo --model gemma3-270m --out demo-gemma
    """
    from pathlib import Path

    from actwh.study.demo import quick_settings, run_study, study_settings

    if seeds < 1:
        raise ActwhError(f"--seeds {seeds}: at least 1")
    try:
        scales = None if sweep is None else tuple(float(x) for x in sweep.split(",") if x.strip())
    except ValueError:
        raise ActwhError(f"--sweep {sweep!r}: expected scales such as 2,5") from None
    if any(not x > 0 for x in scales or ()):
        raise ActwhError(f"--sweep {sweep!r}: scales must be positive")
    stem = "demo-quick" if quick else "demo-out"
    out = out or (stem if model == "embedded" else f"{stem}-{model}")
    made = quick_settings if quick else study_settings
    more = {} if scales is None else {"unalign_sweep": scales}  # else: the settings' own
    settings = made(model, progress=not quiet, seeds=seeds, **more)
    run_study(Path(out), settings)


def _warehouse(path, **kwargs):
    from actwh.api.warehouse import Warehouse

    return Warehouse(path, **kwargs)


@main.command()
@click.argument("warehouse", type=click.Path(file_okay=False))
@click.option(
    "--model", required=True, help="A registered model name, or a source (embedded, hub id, path)."
)
@click.option(
    "--index",
    "kind",
    type=click.Choice(["flat", "ivf", "hnsw"]),
    default="flat",
    show_default=True,
    help="flat is exact; ivf and hnsw are approximate, for millions of vectors.",
)
@click.option(
    "--unembed",
    type=click.Choice(["raw", "final_norm"]),
    help="Read top tokens from W_U·v (raw, the paper's Table 1) or through the final norm's "
    "gain, W_U·(γ⊙v). Default: raw for GPT-2, final_norm for gated (RMSNorm) models.",
)
@click.option("--replace", is_flag=True, help="Rebuild even if this model's vectors are stored.")
@click.option("--device", default="auto", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def index_vectors(warehouse, model, kind, unembed, replace, device, quiet):
    """Store every MLP value vector of a model and index them with FAISS.

    Each value vector MLP.v_i^l (row i of W_out) goes to the value_vectors table with its norm;
    the model's readout (index/MODEL.readout.npy) and tokens (the vocabulary table) read a
    vector as the tokens it promotes when asked: search, the report, top_toxic_vectors, or in
    SQL vector_tokens(model, vec, 1, 10) (-1: those of −v, what a gated neuron writes when its
    coefficient is negative).

    \b
    Example:
      actwh index-vectors wh --model embedded
    """
    with _warehouse(warehouse, create=True) as wh:
        row = wh.index_vectors(
            model,
            index=kind,
            unembed=unembed,
            replace=replace,
            device=device,
            progress=not quiet,
        )
    click.echo(
        f"{row['n_vectors']:,} value vectors of {row['model']} in {row['path']} ({row['kind']}, "
        f"tokens read {row['unembed'] or 'raw'})"
    )


@main.command()
@click.argument("warehouse", type=click.Path(file_okay=False))
@click.option("--direction", required=True, help="A registered direction.")
@click.option("--model", help="Whose value vectors (default: the direction's model).")
@click.option("-k", "k", default=20, show_default=True)
@list_option("--layers", default="all", help="all, 19 or 10-20.")
@click.option(
    "--run",
    help="Also show how each neuron fires in this run: share of tokens with m > 0, mean positive "
    "and negative parts of m, and its mean write along the direction.",
)
@output_options
def search(warehouse, direction, model, k, layers, run, output):
    """Neurons whose value vectors can write most along a direction, with their top tokens.

    A GELU neuron (GPT-2) writes +v, so the ranking is by cosine (the paper's Table 1). A gated
    neuron (Llama family) writes +v or -v: the ranking is by |cosine|; `sign` says which sign of
    its coefficient writes toward the direction, and `top_tokens` are those of sign·v.

    \b
    Example:
      actwh search wh --direction toxic_probe -k 20
      actwh search wh --direction toxic_probe -k 20 --run base
    """
    with _warehouse(warehouse) as wh:
        hits = wh.search(
            direction, k=k, model=model, layers=None if layers == "all" else layers, run=run
        )
        emit(hits.drop("query"), output)


@main.group()
def directions():
    """Named vectors in a model's residual space: add, list, show."""


@directions.command("add")
@click.argument("warehouse", type=click.Path(file_okay=False))
@click.argument("name")
@click.option("--model", help="The model whose residual space it lives in.")
@click.option(
    "--file", "file", type=click.Path(dir_okay=False), help="One vector: .npy, .npz, .pt or .txt."
)
@click.option("--value-vector", metavar="LAYER:NEURON", help="The value vector MLP.v_NEURON^LAYER.")
@click.option(
    "--svd-of", metavar="DIRECTION", help="SVD of the value vectors nearest this direction."
)
@click.option("--top", default=128, show_default=True, help="--svd-of: how many value vectors.")
@click.option(
    "--component", default=0, show_default=True, help="--svd-of: which left singular vector."
)
@click.option(
    "--per-layer",
    type=int,
    help="--svd-of: keep each layer's best K first (the paper's code: 100).",
)
@click.option(
    "--delta",
    nargs=2,
    metavar="BASE_RUN TUNED_RUN",
    help="δx per layer: mean tuned − base over paired tokens; adds NAME.LAYER for each layer.",
)
@click.option(
    "--site",
    default=None,
    help="--delta: the residual site (default: what the MLP reads, resid_mid; resid_pre for "
    "GPT-NeoX).",
)
@list_option("--layers", help="--delta: layers (default: every layer both runs store).")
@click.option(
    "--arm",
    default="plain",
    show_default=True,
    help="--delta: the prompts averaged over: plain, an encoding (rot13, base64, leet), chat, "
    "or all.",
)
@click.option("--random", "random_", is_flag=True, help="A random Gaussian direction (a baseline).")
@click.option("--seed", default=0, show_default=True, help="--random: seed.")
@click.option("--replace", is_flag=True, help="Overwrite a direction of the same name.")
def directions_add(
    warehouse,
    name,
    model,
    file,
    value_vector,
    svd_of,
    top,
    component,
    per_layer,
    delta,
    site,
    layers,
    arm,
    random_,
    seed,
    replace,
):
    """Register direction NAME, from exactly one source.

    \b
    Examples:
      actwh directions add wh probe --model embedded --file probe.npy
      actwh directions add wh v770 --model gpt2-medium --value-vector 19:770
      actwh directions add wh svd0 --svd-of toxic_probe --top 128
      actwh directions add wh dx --delta base dpo
    """
    click.get_current_context().meta["flags"] = {"vector": "--file"}
    with _warehouse(warehouse) as wh:
        added = wh.add_direction(
            name,
            model=model,
            vector=file,
            value_vector=value_vector and _layer_neuron(value_vector, "--value-vector"),
            svd_of=svd_of,
            delta=delta,
            random=random_,
            top=top,
            component=component,
            per_layer=per_layer,
            site=site,
            layers=layers,
            arm=arm,
            seed=seed,
            replace=replace,
        )
    if isinstance(added, list):
        norms = "  ".join(f"{row['name']}:{row['norm']:.3g}" for row in added)
        click.echo(f"added {len(added)} δx directions of {added[0]['model']} (norms {norms})")
        return
    click.echo(
        f"added direction {added['name']} ({added['kind']}) of {added['model']}: "
        f"norm {added['norm']:.4g}"
    )


def _layer_neuron(spec: str, option: str) -> tuple[int, int]:
    try:
        layer, neuron = (int(x) for x in spec.split(":"))
    except ValueError:
        raise ActwhError(f"{option} {spec!r}: expected LAYER:NEURON") from None
    return layer, neuron


def _number(spec: str, option: str) -> int:
    try:
        return int(spec)
    except ValueError:
        raise ActwhError(f"{option} {spec!r}: expected a number") from None


@directions.command("list")
@click.argument("warehouse", type=click.Path(file_okay=False))
@output_options
def directions_list(warehouse, output):
    """List registered directions.

    \b
    Example:
      actwh directions list wh
    """
    with _warehouse(warehouse) as wh:
        emit(wh.directions(), output)


@directions.command("show")
@click.argument("warehouse", type=click.Path(file_okay=False))
@click.argument("name")
@click.option("--model", help="The direction's model, when several have one of that name.")
@click.option(
    "--tokens",
    default=0,
    help="Also list the K vocabulary tokens it promotes most (loads the model).",
)
def directions_show(warehouse, name, model, tokens):
    """Show a direction: where it came from, its norm, and optionally its top tokens.

    \b
    Example:
      actwh directions show wh toxic_probe --tokens 10
    """
    import numpy as np

    with _warehouse(warehouse) as wh:
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
        if tokens:
            words, unembed = wh.direction_tokens(name, model=model, k=tokens)
            click.echo(f"top tokens ({unembed}): " + ", ".join(repr(t) for t in words))


@main.command()
@click.argument("warehouse", type=click.Path(file_okay=False))
@click.option("--base", required=True, help="The base model (name or source).")
@click.option("--tuned", required=True, help="The tuned model (name or source).")
@click.option("--device", default="auto", show_default=True)
def diff(warehouse, base, tuned, device):
    """Per-parameter and per-value-vector differences of a tuned model from its base.

    Writes weight_diffs (cosine, norms) and value_vector_diffs (cosine, δv) — paper §5.1 and
    the inputs of Figure 5.

    \b
    Example:
      actwh diff wh --base smollm2-135m-instruct --tuned dpo
    """
    with _warehouse(warehouse, create=True) as wh:
        base_model, tuned_model = (
            wh.load_model(base, device=device),
            wh.load_model(tuned, device=device),
        )
        result = wh.diff(base_model, tuned_model)
    click.echo(
        f"{tuned_model.name} vs {base_model.name}: {result['n_parameters']} parameters, "
        f"min cosine {result['min_cosine']:.6f}, max ‖Δ‖ {result['max_norm_diff']:.4g}"
    )


@main.group()
def prompts():
    """Prompt files: variants of a prompt set."""


@prompts.command("transform")
@click.argument("source", type=click.Path(dir_okay=False))
@click.option(
    "-o", "--out", required=True, type=click.Path(dir_okay=False), help="The JSONL file to write."
)
@click.option("--rot13", is_flag=True)
@click.option("--base64", "b64", is_flag=True)
@click.option("--leet", is_flag=True)
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def prompts_transform(source, out, rot13, b64, leet, force):
    """Write SOURCE's prompts followed by encoded variants linked to them.

    Each variant line has "transform" and "source_prompt" (the index of its original in OUT),
    so one run covers plain and transformed prompts and one query compares them.

    \b
    Example:
      actwh prompts transform prompts.jsonl -o variants.jsonl --rot13 --base64 --leet
    """
    from actwh.ingest.transforms import transform_file

    names = [n for n, on in (("rot13", rot13), ("base64", b64), ("leet", leet)) if on]
    if not names:
        raise ActwhError("choose at least one of --rot13, --base64, --leet")
    n = transform_file(source, out, names, force=force)
    click.echo(f"wrote {n} prompts to {out} (originals, then {', '.join(names)})")


@main.command()
@click.argument("warehouse", type=click.Path(file_okay=False))
@click.option("--model", required=True, help="A registered model name, or a source.")
@click.option(
    "--data",
    type=click.Path(dir_okay=False),
    help="Jigsaw-style CSV (comment_text, toxic) or JSONL (text, label); "
    "default: the shipped corpus.",
)
@click.option(
    "--site",
    type=click.Choice(["resid_pre", "resid_mid", "resid_post", "final"]),
    default="resid_post",
    show_default=True,
    help="final: after the final norm (HF hidden_states[-1]).",
)
@click.option("--layer", type=int, help="Default: the last layer.")
@click.option("--name", default=PROBE, show_default=True, help="Name of the direction to register.")
@click.option("--replace", is_flag=True, help="Overwrite a direction of that name.")
@click.option("--batch-size", default=16, show_default=True)
@click.option("--seed", default=0, show_default=True, help="Seed of the 90:10 split.")
@click.option("--device", default="auto", show_default=True)
def train_probe(warehouse, model, data, site, layer, name, replace, batch_size, seed, device):
    """Train the linear toxicity probe and register it as a direction (positive = toxic).

    Logistic regression on the mean over tokens of one residual site (default: resid_post of
    the last layer), 90:10 split; prints validation accuracy.

    \b
    Example:
      actwh train-probe wh --model embedded
      actwh search wh --direction toxic_probe -k 20
    """
    with _warehouse(warehouse, create=True) as wh:
        loaded = wh.load_model(model, device=device)
        row = wh.train_probe(
            loaded,
            data=data,
            site=site,
            layer=layer,
            name=name,
            replace=replace,
            batch_size=batch_size,
            seed=seed,
        )
    meta = json.loads(row["meta"])
    click.echo(
        f"probe {name} of {loaded.name}: validation accuracy {meta['val_accuracy']:.3f} "
        f"({meta['n_val']} texts; train {meta['train_accuracy']:.3f} on {meta['n_train']}), "
        f"norm {row['norm']:.4g}"
    )


@main.command()
@click.option("--model", required=True, help="A model registered in --warehouse, or a source.")
@click.option(
    "--warehouse",
    required=True,
    type=click.Path(file_okay=False),
    help="Where the steering direction lives.",
)
@click.option(
    "--prompts", type=click.Path(dir_okay=False), help="Prompt file (default: the shipped set)."
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Pairs JSONL to write.")
@click.option("--direction", default=PROBE, show_default=True)
@click.option(
    "--layer", type=int, help="Layer whose output is steered (default: 2/3 of the depth)."
)
@click.option(
    "--alpha",
    type=float,
    help="Steering strength (default: --relative-alpha × median residual norm there).",
)
@click.option("--relative-alpha", default=0.3, show_default=True)
@click.option("--scorer", default="profanity", show_default=True)
@click.option(
    "--min-margin",
    default=0.05,
    show_default=True,
    help="Keep a pair only if the steered continuation scores this much above the greedy one.",
)
@click.option("--generate", default=20, show_default=True)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
def make_pairs(
    model,
    warehouse,
    prompts,
    out,
    direction,
    layer,
    alpha,
    relative_alpha,
    scorer,
    min_margin,
    generate,
    batch_size,
    seed,
    device,
    force,
):
    """Write DPO preference pairs: greedy (preferred) vs toxic-steered (dispreferred).

    A cheap stand-in for the paper's PPLM: the direction is added to the residual stream while
    sampling. Pairs are kept where the scorer rates the steered continuation more toxic by at
    least --min-margin; the summary gives the margins of the kept pairs.
    Format: prompt_text, unpert_gen_text (preferred), pert_gen_text (dispreferred).

    \b
    Example:
      actwh make-pairs --model embedded --warehouse wh --out pairs.jsonl
    """
    with _warehouse(warehouse) as wh:
        stats = wh.make_pairs(
            model,
            out,
            prompts=prompts,
            direction=direction,
            layer=layer,
            alpha=alpha,
            relative_alpha=relative_alpha,
            scorer=scorer,
            min_margin=min_margin,
            generate=generate,
            batch_size=batch_size,
            seed=seed,
            device=device,
            force=force,
        )
    click.echo(f"{stats.summary(scorer)} → {out}")


@main.command()
@click.option(
    "--base",
    required=True,
    help="The model to tune: a source, or a model registered in --warehouse.",
)
@click.option(
    "--pairs",
    "pairs_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="Pairs JSONL (prompt_text, unpert_gen_text, pert_gen_text).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory for the tuned HF model.",
)
@click.option(
    "--warehouse",
    type=click.Path(file_okay=False),
    help="Register the tuned model here (role dpo).",
)
@click.option("--name", help="Name to register it under (default: the --out directory's name).")
@options_of(DPOOptions)
@click.option("--device", default="auto", show_default=True)
def train_dpo(base, pairs_file, out, warehouse, name, device, **options):
    """Fine-tune with DPO (TRL), defaulting to the paper's Table 8.

    \b
    Table 8: beta 0.1, lr 1e-6, RMSprop, batch 4, max grad norm 10, early stopping on
    validation loss with patience 10. Every value can be overridden.

    \b
    Example:
      actwh train-dpo --base embedded --pairs pairs.jsonl --out dpo-model --warehouse wh
      actwh train-dpo --base embedded --pairs pairs.jsonl --out dpo --lr 1e-5 --epochs 2
    """
    settings = DPOOptions(**options)
    if warehouse:
        with _warehouse(warehouse, create=True) as wh:
            metrics = wh.train_dpo(
                base, pairs_file, out, name=name, options=settings, device=device
            )
    else:  # train only: the same library steps, nothing registered
        from actwh.models.loading import load_model
        from actwh.train.dpo import train_dpo as train
        from actwh.train.pairs import read_pairs
        from actwh.warehouse.layout import outside

        outside(out, "out")
        loaded_pairs = read_pairs(pairs_file)
        metrics = train(load_model(base, device=device), loaded_pairs, out, settings)
    click.echo(
        f"saved {out}: {metrics['steps']} steps, train loss {metrics['train_loss']:.4f}, "
        f"best validation loss {metrics.get('best_eval_loss', float('nan')):.4f}"
    )
    if warehouse:
        click.echo(
            f"registered {metrics['model']} (dpo, parent {metrics['parent']}) in {warehouse}"
        )


@main.command()
@click.argument("warehouse", type=click.Path(file_okay=False))
@click.argument("name")
@click.option("--base", help="The model to derive from (registered name or source).")
@click.option(
    "--subtract",
    metavar="DIRECTION",
    help="Subtract scale × DIRECTION from layer --layer's MLP output (paper §3.3).",
)
@click.option(
    "--unalign",
    metavar="DIRECTION",
    help="Scale the key vectors of the --top-k neurons whose write points most along DIRECTION "
    "by --scale (paper §6).",
)
@click.option(
    "--control-of",
    metavar="VARIANT",
    help="A control for an un-aligned VARIANT: as many keys, in the same layers, chosen at "
    "random (--seed), same scale, same base.",
)
@click.option("--scale", type=float, help="α for --subtract; s for --unalign.")
@click.option("--layer", type=int, help="--subtract: the layer (default: the last).")
@click.option("--top-k", default=7, show_default=True, help="--unalign: how many neurons.")
@click.option(
    "--per-layer",
    default=100,
    show_default=True,
    help="--unalign: rank among each layer's best N first (the paper's code).",
)
@click.option(
    "--run",
    help="--unalign: rank neurons by the cosine of their mean write m̄·v in this run (needed "
    "for gated MLPs, whose coefficients are signed; GPT-2 ranks by the cosine of v).",
)
@click.option(
    "--keys",
    default="cosine",
    show_default=True,
    help="--unalign: which neurons: cosine (the paper's rule, by --run's mean write) or "
    "selectivity:LABELS (the neurons of --run that write the direction most on toxic contexts, "
    "e.g. selectivity:score:profanity; query selectivity).",
)
@click.option(
    "--one-sided",
    is_flag=True,
    help="--unalign: scale m_i only where it writes toward the direction (sign(m_i) = "
    "sign⟨v_i, d⟩), for gated MLPs whose coefficients are signed.",
)
@click.option("--seed", default=0, show_default=True, help="--control-of: the random seed.")
@click.option(
    "--match",
    type=click.Choice(["scale", "write"]),
    default="scale",
    show_default=True,
    help="--control-of: scale the random keys by the same factor, or by a factor per layer "
    "that adds as much write (mean |m|·‖v‖ in the variant's --run, times s − 1) as the edit.",
)
@click.option("--device", default="auto", show_default=True)
def variant(
    warehouse,
    name,
    base,
    subtract,
    unalign,
    control_of,
    scale,
    layer,
    top_k,
    per_layer,
    run,
    keys,
    one_sided,
    seed,
    match,
    device,
):
    """Register a derived model: an intervention the rest of actwh treats like any model.

    \b
    Examples:
      actwh variant wh minus-probe --base embedded --subtract toxic_probe --scale 50
      actwh variant wh unaligned --base dpo --unalign toxic_probe --top-k 7 --scale 10 --run dpo
      actwh variant wh selective --base dpo --unalign toxic_probe --scale 3 --run base \\
        --keys selectivity:score:profanity --one-sided
      actwh variant wh unaligned-control --control-of unaligned --seed 0 --match write
    """
    with _warehouse(warehouse) as wh:
        row = wh.variant(
            name,
            base=base,
            subtract=subtract,
            unalign=unalign,
            control_of=control_of,
            scale=scale,
            layer=layer,
            top_k=top_k,
            per_layer=per_layer,
            run=run,
            keys=keys,
            one_sided=one_sided,
            seed=seed,
            match=match,
            device=device,
        )
    from actwh.models.interventions import scaling

    edit = json.loads(row["config"])["edit"]
    chosen = ", ".join(f"{l}:{n}" for l, n in edit.get("keys", []))
    if control_of is not None:
        click.echo(
            f"registered control {row['name']} of {row['parent']}: keys of {chosen} "
            f"{scaling(edit)} (seed {seed})"
        )
    elif subtract:
        click.echo(
            f"registered variant {row['name']} of {row['parent']}: MLP output of layer "
            f"{edit['layer']} minus {scale:g}·{subtract}"
        )
    else:
        click.echo(
            f"registered variant {row['name']} of {row['parent']}: keys of {chosen} "
            f"(by {edit['chosen_by']}) {scaling(edit)}"
        )


@main.command()
@click.argument("warehouse", type=click.Path(file_okay=False))
@click.option("--model", required=True, help="A registered model name, or a source.")
@click.option(
    "--prompts",
    type=click.Path(dir_okay=False),
    help="Prompts for toxicity (default: the shipped set).",
)
@list_option(
    "--scorer",
    default="profanity",
    help="profanity, wordlist, detoxify or perspective; with several, scores with each.",
)
@click.option("--generate", default=20, show_default=True)
@click.option(
    "--max-prompt-tokens",
    default=32,
    show_default=True,
    help="Keep the first N prompt tokens (the paper's code: 32).",
)
@click.option(
    "--ppl-text",
    type=click.Path(dir_okay=False),
    help="Text for perplexity (default: the shipped encyclopedia text; Wikitext-2's test "
    "split for the paper's setting).",
)
@click.option(
    "--f1-data",
    type=click.Path(dir_okay=False),
    help="JSONL with prompt and gold, or a text (default: the shipped text, each sentence "
    "split in two).",
)
@click.option("--n-f1", default=200, show_default=True, help="At most this many F1 samples.")
@click.option("--batch-size", default=16, show_default=True)
@click.option("--device", default="auto", show_default=True)
@output_options
def evaluate(
    warehouse,
    model,
    prompts,
    scorer,
    generate,
    max_prompt_tokens,
    ppl_text,
    f1_data,
    n_f1,
    batch_size,
    device,
    output,
):
    """Toxicity, perplexity and F1 of a model (paper Tables 2 and 4), into `evaluations`.

    \b
    Example:
      actwh evaluate wh --model smollm2-135m-instruct
      actwh evaluate wh --model dpo
      actwh sql wh "select model, toxicity, perplexity, f1 from evaluations"
    """
    with _warehouse(warehouse, create=True) as wh:
        wh.evaluate(
            model,
            prompts=prompts,
            scorer=scorer,
            generate=generate,
            max_prompt_tokens=max_prompt_tokens,
            ppl_text=ppl_text,
            f1_data=f1_data,
            n_f1=n_f1,
            batch_size=batch_size,
            device=device,
        )
        emit(wh.evaluations(), output)


@main.command()
@click.argument("warehouse", type=click.Path(file_okay=False))
@click.option("--run", required=True, help="The run whose continuations to score.")
@click.option("--scorer", default="profanity", show_default=True)
def score(warehouse, run, scorer):
    """Score a run's continuations for toxicity into the `scores` table.

    \b
    Example:
      actwh score wh --run base --scorer profanity
    """
    with _warehouse(warehouse) as wh:
        mean = wh.score(run, scorer=scorer)
    click.echo(f"run {run}: mean {scorer} score {mean:.4f}")


@main.command()
@click.argument("warehouse", type=click.Path(file_okay=False))
@click.option(
    "-o", "--out", default="report.html", show_default=True, type=click.Path(dir_okay=False)
)
@click.option("--base-run", help="Default: the source of the first teacher-forced run.")
@click.option("--tuned-run", help="Default: the first teacher-forced run.")
@click.option("--direction", help="The direction the figures are about (default: toxic_probe).")
@click.option("--token", help="Logit-lens target token (default: the first one stored).")
@click.option(
    "--layer", type=int, help="Layer for Figures 4 and 5 (default: the top toxic vector's)."
)
@click.option("--scorer", default="profanity", show_default=True)
@list_option("--neurons", metavar="L:I", help="Add a page for each of these neurons.")
@list_option("--prompts", metavar="N", help="Add a token view of each of these prompts.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--force", is_flag=True, help="Replace OUT even if it is not an earlier report.")
def report(
    warehouse,
    out,
    base_run,
    tuned_run,
    direction,
    token,
    layer,
    scorer,
    neurons,
    prompts,
    quiet,
    force,
):
    """Write the paper's figures and tables, computed from WAREHOUSE, as one HTML page.

    With them: a page per top value vector of the direction (its tokens, coefficient histogram
    in both runs, top contexts, cosines with δx) and a token-by-token view of the prompts tuning
    changed most. The page works offline (JavaScript inlined); each chart is also saved as a PNG
    beside it. Anchors: #neuron-L19-770, #prompt-12.

    \b
    Example:
      actwh report wh -o report.html
      actwh report wh -o report.html --neurons 19:770,12:771 --prompts 12
    """
    click.get_current_context().meta["flags"] = {"out": "-o"}
    with _warehouse(warehouse) as wh:
        written = wh.report(
            out,
            base_run=base_run,
            tuned_run=tuned_run,
            direction=direction,
            token=token,
            layer=layer,
            scorer=scorer,
            neurons=[_layer_neuron(n, "--neurons") for n in names(neurons or "")],
            prompts=[_number(n, "--prompts") for n in names(prompts or "")],
            force=force,
            progress=not quiet,
        )
    plan = written.plan
    click.echo(
        f"wrote {written.page} and {len(written.charts)} PNG charts; "
        f"{len(plan.neurons)} neuron pages, {len(plan.prompts)} prompt views"
    )


@main.command()
@click.argument("warehouse", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Even if the old directory still holds the warehouse.")
def rehome(warehouse, force):
    """After moving a warehouse whose catalog is a server (PostgreSQL), make the catalog serve
    its new directory. One catalog serves one directory: a copy needs a catalog of its own.

    \b
    Example:
      mv /data/wh /bigdisk/wh && actwh rehome /bigdisk/wh
    """
    with _warehouse(warehouse) as wh:
        old = wh.rehome(force=force)
    click.echo(f"the catalog now serves {wh.root} (it served {old})")


@main.command()
@click.argument("warehouse", type=click.Path(file_okay=False))
@click.option(
    "--repair", is_flag=True, help="Delete orphans and unfinished files; drop damaged commits."
)
@click.option(
    "--grace",
    default=600.0,
    show_default=True,
    help="--repair leaves files younger than this (seconds): a writer may be committing them.",
)
@click.option(
    "--force",
    is_flag=True,
    help="--repair even when files are missing rather than damaged, or more than 3 commits "
    "would be dropped (otherwise it refuses and says what it would drop).",
)
def check(warehouse, repair, grace, force):
    """Verify every committed file against the catalog (exists, rows, sha256); find orphans.

    Exit status 1 when something is wrong (after --repair: when something is left).

    \b
    Example:
      actwh check wh
      actwh check wh --repair
    """
    with _warehouse(warehouse) as wh:
        report = wh.check(repair=repair, grace=grace, force=force)
    click.echo(f"checked {report.files} committed files")
    for path, problem in report.problems:
        click.echo(f"damaged: {path}: {problem}")
    for path in report.orphans:
        click.echo(f"orphan (no commit lists it): {path}")
    for path in report.unfinished:
        click.echo(f"unfinished write: {path}")
    for path in report.foreign:
        click.echo(f"not written by actwh (left alone): {path}")
    for path in report.removed:
        click.echo(f"removed: {path}")
    for run in report.runs_to_resume:
        click.echo(f"run {run} lost damaged files: rerun its actwh ingest command to redo them")
    for run in report.stale_runs:
        click.echo(
            f"run {run} is stale: it replayed a repaired run; ingest it again under another name"
        )
    for model in report.models_to_rebuild:
        click.echo(
            f"model {model} lost damaged commits: rerun actwh index-vectors / actwh diff for it"
        )
    for table in report.stale_logs:
        state = "written again" if table in report.published else "out of date (--repair)"
        click.echo(f"Spark log of {table}: {state}")
    left = report.left
    if not left:
        click.echo("ok" if not report.removed else "ok after repair")
    sys.exit(1 if left else 0)


@main.command()
@click.argument("warehouse", type=click.Path(file_okay=False))
@options_of(CompactOptions)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def compact(warehouse, quiet, **options):
    """Merge each partition's small files into files of about --target-mb.

    A long ingest leaves a file per table and partition per commit; every query pays per file
    it opens. Rows, and so every query's answer, stay the same. One catalog transaction per
    partition: a kill at any point loses nothing, and a rerun finishes the work. The merged
    files stay on disk for --grace seconds, for readers that started before.

    \b
    Example:
      actwh compact wh
      actwh compact wh --tables residuals,mlp_acts --runs base --target-mb 512
    """
    with _warehouse(warehouse) as wh:
        report = wh.compact(progress=not quiet, **options)
    click.echo(
        f"{report.partitions} partitions compacted: {report.files_before:,} files into "
        f"{report.files_after:,} ({report.bytes / 1e6:,.1f} MB, {report.rows:,} rows) in "
        f"{report.seconds:.1f}s"
    )
    if report.deleted:
        click.echo(f"deleted {len(report.deleted):,} files retired more than --grace ago")
