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
@click.option(
    "--teacher-force",
    metavar="RUN",
    help="Replay the exact token sequences of an earlier run (pairs a tuned model with its base).",
)
@click.option(
    "--track-neurons",
    default="",
    metavar="SPEC",
    help="Store mlp_post coefficients of value vectors: 19:770,12:771 or DIRECTION:K (top K by "
    "cosine, e.g. toxic_probe:64).",
)
@click.option(
    "--logit-lens", default=0, metavar="K", help="Store the top-K tokens of the logit lens."
)
@click.option(
    "--target-tokens",
    default="",
    metavar="TOKENS",
    help="With --logit-lens: probability of these one-token strings at every layer, "
    "e.g. ' crap,#7510'.",
)
@click.option(
    "--lens-at",
    type=click.Choice(["last", "all"]),
    default="last",
    show_default=True,
    help="Logit lens at the last prompt token (what predicts the first generated token) or at all.",
)
@click.option("--shard", help="i/N: this worker takes every N-th batch (run N workers at once).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def ingest(warehouse, model, prompts, quiet, shard, **options):
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
    from actwh.ingest.options import IngestOptions
    from actwh.ingest.prompts import shipped_prompts
    from actwh.ingest.worker import ingest as run_ingest

    if prompts is None and not options["teacher_force"]:
        prompts = shipped_prompts()
    summary = run_ingest(
        warehouse,
        model,
        prompts,
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


def _warehouse(path):
    from actwh.api.warehouse import Warehouse

    return Warehouse(path)


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
    "--top-tokens", default=10, show_default=True, help="Vocabulary tokens kept per value vector."
)
@click.option("--replace", is_flag=True, help="Rebuild even if this model's vectors are stored.")
@click.option("--device", default="auto", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def vectors(warehouse, model, kind, top_tokens, replace, device, quiet):
    """Store every MLP value vector of a model and index them with FAISS.

    Each value vector MLP.v_i^l (row i of W_out) goes to the value_vectors table with its norm
    and the tokens it promotes most (highest dot product with the unembedding).

    \b
    Example:
      actwh vectors wh --model embedded
    """
    from actwh.ingest.registry import open_model
    from actwh.ingest.value_vectors import store_value_vectors
    from actwh.warehouse.store import Store

    store = Store.create(warehouse)
    loaded, _ = open_model(store, model, device=device)
    row = store_value_vectors(
        store, loaded, kind=kind, top=top_tokens, replace=replace, progress=not quiet
    )
    click.echo(
        f"{row['n_vectors']:,} value vectors of {row['model']} in {row['path']} ({row['kind']})"
    )


@main.command()
@click.argument("warehouse", type=click.Path(file_okay=False))
@click.option("--direction", required=True, help="A registered direction.")
@click.option("--model", help="Whose value vectors (default: the direction's model).")
@click.option("-k", "k", default=20, show_default=True)
@click.option("--layers", default="all", show_default=True, help="all, 19, 10-20, or a comma list.")
@output_options
def search(warehouse, direction, model, k, layers, output):
    """Value vectors most cosine-similar to a direction, with their top tokens.

    \b
    Example:
      actwh search wh --direction toxic_probe -k 20
    """
    from actwh.ingest.options import parse_layers

    with _warehouse(warehouse) as wh:
        vector = wh.direction(direction, model=model)
        if model is None:
            from actwh.warehouse.directions import get_direction

            model = get_direction(wh.store, direction)[0]
        n_layers = wh.sql("select n_layers from models where name = $m", {"m": model})
        chosen = None if layers == "all" else parse_layers(layers, n_layers["n_layers"][0])
        hits = wh.nearest(vector, k=k, model=model, layers=chosen)
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
@click.option("--site", default="resid_mid", show_default=True, help="--delta: the residual site.")
@click.option("--layers", default="all", show_default=True, help="--delta: layers.")
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
    import numpy as np

    from actwh.ingest.options import parse_layers
    from actwh.warehouse.directions import add_direction, model_row
    from actwh.warehouse.store import Store

    sources = [file, value_vector, svd_of, delta, random_ or None]
    if sum(s is not None for s in sources) != 1:
        raise ActwhError("give exactly one of --file, --value-vector, --svd-of, --delta, --random")
    store = Store.open(warehouse)
    added = []
    with _warehouse(warehouse) as wh:
        snapshot = wh.snapshot
        if delta:
            base_run, tuned_run = delta
            runs = {
                r["name"]: r for r in wh.sql("select name, model from runs").iter_rows(named=True)
            }
            owner = model or runs.get(base_run, {}).get("model")
            n_layers = model_row(store, owner)["n_layers"] if owner else 0
            chosen = None if layers == "all" else parse_layers(layers, n_layers)
            from actwh.warehouse.directions import delta_directions

            for layer, vector in delta_directions(
                snapshot, base_run, tuned_run, site, chosen
            ).items():
                meta = {"base_run": base_run, "tuned_run": tuned_run, "site": site, "layer": layer}
                added.append(
                    add_direction(
                        store,
                        owner,
                        f"{name}.{layer}",
                        vector,
                        kind="delta",
                        meta=meta,
                        replace=replace,
                    )
                )
        elif svd_of:
            from actwh.warehouse.directions import get_direction, svd_from_index
            from actwh.warehouse.search import load_index

            owner, source = get_direction(store, svd_of, model)
            owner = model or owner
            vector, meta = svd_from_index(
                snapshot,
                load_index(snapshot, owner),
                owner,
                source,
                top=top,
                component=component,
                per_layer=per_layer,
            )
            meta["source"] = svd_of
            added.append(
                add_direction(store, owner, name, vector, kind="svd", meta=meta, replace=replace)
            )
        else:
            if model is None:
                raise ActwhError("--model is required with --file, --value-vector and --random")
            if file:
                from actwh.ingest.vector_files import read_vector

                vector, kind, meta = read_vector(file), "file", {"file": str(file)}
            elif value_vector:
                from actwh.warehouse.search import value_vectors

                try:
                    layer, neuron = (int(x) for x in value_vector.split(":"))
                except ValueError:
                    raise ActwhError(
                        f"--value-vector {value_vector!r}: expected LAYER:NEURON"
                    ) from None
                vector = value_vectors(snapshot, model, [(layer, neuron)])[0]
                kind, meta = "value_vector", {"layer": layer, "neuron": neuron}
            else:
                d_model = model_row(store, model)["d_model"]
                vector = np.random.default_rng(seed).standard_normal(d_model).astype(np.float32)
                kind, meta = "random", {"seed": seed}
            added.append(
                add_direction(store, model, name, vector, kind=kind, meta=meta, replace=replace)
            )
    for row in added:
        click.echo(
            f"added direction {row['name']} ({row['kind']}) of {row['model']}: "
            f"norm {row['norm']:.4g}"
        )


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
        emit(
            wh.sql(
                "select model, name, kind, d_model, round(norm, 4) as norm, meta "
                "from directions order by model, name"
            ),
            output,
        )


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

    from actwh.warehouse.directions import get_direction
    from actwh.warehouse.store import Store

    store = Store.open(warehouse)
    owner, vector = get_direction(store, name, model)
    row = store.catalog.get("directions", model=owner, name=name)
    click.echo(
        f"{name} ({row['kind']}) of model {owner}: d_model {row['d_model']}, norm {row['norm']:.6g}"
    )
    click.echo(f"meta: {row['meta']}")
    click.echo(f"first values: {np.array2string(vector[:8], precision=4)}")
    if tokens:
        import torch

        from actwh.ingest.registry import open_model
        from actwh.ingest.rows import TokenText
        from actwh.ingest.value_vectors import top_tokens

        loaded, _ = open_model(store, owner)
        ids = top_tokens(loaded.adapter, torch.tensor(vector)[None], tokens)[0].tolist()
        click.echo("top tokens: " + ", ".join(repr(t) for t in TokenText(loaded.tokenizer)(ids)))


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
    from actwh.ingest.diff import store_weight_diffs
    from actwh.ingest.registry import open_model
    from actwh.warehouse.store import Store

    store = Store.create(warehouse)
    base_model, _ = open_model(store, base, device=device)
    tuned_model, _ = open_model(store, tuned, device=device)
    params = store_weight_diffs(store, base_model, tuned_model)
    cosine = [c for c in params.column("cosine").to_pylist() if c is not None]
    click.echo(
        f"{tuned_model.name} vs {base_model.name}: {params.num_rows} parameters, "
        f"min cosine {min(cosine):.6f}, max ‖Δ‖ {max(params.column('norm_diff').to_pylist()):.4g}"
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
def prompts_transform(source, out, rot13, b64, leet):
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
    n = transform_file(source, out, names)
    click.echo(f"wrote {n} prompts to {out} (originals, then {', '.join(names)})")
