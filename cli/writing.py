"""The commands that write to a warehouse: ``init``, ``ingest``, ``index-vectors``,
``directions add``, ``diff``, ``variant``, ``evaluate``, ``score``, ``check``, ``compact``,
``rehome``; and ``prompts transform``, which writes a prompt file."""

from __future__ import annotations

import json
import sys

import click

from actwh.cli.flags import options_of
from actwh.cli.main import flag, main, model_option, open_warehouse, warehouse_argument
from actwh.cli.output import emit, output_options
from actwh.cli.reading import directions
from actwh.errors import BadInput
from actwh.ingest.options import (
    DiffOptions,
    IndexOptions,
    IngestOptions,
    LaunchOptions,
    TransformOptions,
)
from actwh.models.options import VariantOptions
from actwh.train.options import EvaluateOptions, ScoreOptions
from actwh.warehouse.layout import shown_url
from actwh.warehouse.options import (
    CatalogOptions,
    CheckOptions,
    CompactOptions,
    DirectionOptions,
    RehomeOptions,
)


def split(options: dict, *classes: type) -> list:
    """The flags of a command made from several options dataclasses, one instance each."""
    from dataclasses import fields

    return [
        cls(**{f.name: options[f.name] for f in fields(cls) if f.name in options})
        for cls in classes
    ]


@main.command()
@warehouse_argument
@options_of(CatalogOptions)
def init(warehouse, catalog):
    """Create an empty warehouse (other commands also create one when it is missing).

    \b
    Example:
      actwh init wh --catalog postgresql+psycopg://me@dbhost/actwh
    """
    wh = open_warehouse(warehouse, create=True, catalog=catalog)
    click.echo(f"warehouse {wh.store.location} (catalog {shown_url(wh.store.catalog_url)})")


@main.command()
@warehouse_argument
@model_option(help="embedded, a hub id, a local HF directory, or a .gguf file.")
@click.option(
    "--prompts",
    type=click.Path(dir_okay=False),
    help="JSONL or text file (default: the shipped prompt set).",
)
@options_of(IngestOptions)
@options_of(LaunchOptions)
@options_of(CatalogOptions)
def ingest(warehouse, model, prompts, **options):
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
    settings, launch, catalog = split(options, IngestOptions, LaunchOptions, CatalogOptions)
    wh = open_warehouse(warehouse, create=True, catalog=catalog.catalog)
    summary = wh.ingest(model, prompts, settings, launch)
    for warning in summary.warnings:
        click.echo(f"warning: {warning}", err=True)
    for notice in summary.notices:
        click.echo(f"warning: {notice.render(flag)}", err=True)
    verb = "resumed" if summary.resumed else "ingested"
    redone = f" ({summary.n_redone} redone after a repair)" if summary.n_redone else ""
    where = f", {summary.workers} workers on {summary.nodes} node(s)" if summary.workers > 1 else ""
    click.echo(
        f"{verb} run {summary.run}: {summary.n_prompts} prompts{redone}, "
        f"{summary.n_tokens:,} tokens in {summary.seconds:.1f}s ({summary.speed}){where}"
    )


@main.command()
@warehouse_argument
@model_option()
@options_of(IndexOptions)
def index_vectors(warehouse, model, **options):
    """Store every MLP value vector of a model and index them with FAISS.

    Each value vector MLP.v_i^l (row i of W_out) goes to the value_vectors table with its norm;
    the model's readout (index/MODEL.BUILD.readout.npy) and tokens (the vocabulary table) read a
    vector as the tokens it promotes when asked: search, the report, top_toxic_vectors, or in
    SQL vector_tokens(model, vec, 1, 10) (-1: those of −v, what a gated neuron writes when its
    coefficient is negative).

    \b
    Example:
      actwh index-vectors wh --model embedded
    """
    with open_warehouse(warehouse, create=True) as wh:
        row = wh.index_vectors(model, IndexOptions(**options))
    click.echo(
        f"{row['n_vectors']:,} value vectors of {row['model']} in {row['path']} ({row['kind']}, "
        f"tokens read {row['unembed'] or 'raw'})"
    )


@directions.command("add")
@warehouse_argument
@click.argument("name")
@options_of(DirectionOptions)
def directions_add(warehouse, name, **options):
    """Register direction NAME, from exactly one source.

    \b
    Examples:
      actwh directions add wh probe --model embedded --vector probe.npy
      actwh directions add wh v770 --model smollm2-135m-instruct --value-vector 19:770
      actwh directions add wh svd0 --svd-of toxic_probe -k 128
      actwh directions add wh dx --delta base dpo
    """
    with open_warehouse(warehouse) as wh:
        added = wh.add_direction(name, DirectionOptions(**options))
    if isinstance(added, list):
        norms = "  ".join(f"{row['name']}:{row['norm']:.3g}" for row in added)
        click.echo(f"added {len(added)} δx directions of {added[0]['model']} (norms {norms})")
        return
    click.echo(
        f"added direction {added['name']} ({added['kind']}) of {added['model']}: "
        f"norm {added['norm']:.4g}"
    )


@main.command()
@warehouse_argument
@model_option("--base", "The base model (name or source).")
@model_option("--tuned", "The tuned model (name or source).")
@options_of(DiffOptions)
def diff(warehouse, base, tuned, **options):
    """Per-parameter and per-value-vector differences of a tuned model from its base.

    Writes weight_diffs (cosine, norms) and value_vector_diffs (cosine, δv) — paper §5.1 and
    the inputs of Figure 5.

    \b
    Example:
      actwh diff wh --base smollm2-135m-instruct --tuned dpo
    """
    with open_warehouse(warehouse, create=True) as wh:
        result = wh.diff(base, tuned, DiffOptions(**options))
    click.echo(
        f"{result['tuned']} vs {result['base']}: {result['n_parameters']} parameters, "
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
@options_of(TransformOptions)
def prompts_transform(source, out, **options):
    """Write SOURCE's prompts followed by encoded variants linked to them.

    Each variant line has "transform" and "source_prompt" (the index of its original in OUT),
    so one run covers plain and transformed prompts and one query compares them.

    \b
    Example:
      actwh prompts transform prompts.jsonl -o variants.jsonl --rot13 --base64 --leet
    """
    from actwh.ingest.transforms import transform_file

    chosen = TransformOptions(**options)
    encodings = [n for n in ("rot13", "base64", "leet") if getattr(chosen, n)]
    if not encodings:
        raise BadInput("choose at least one of --rot13, --base64, --leet")
    n = transform_file(source, out, encodings, force=chosen.force)
    click.echo(f"wrote {n} prompts to {out} (originals, then {', '.join(encodings)})")


@main.command()
@warehouse_argument
@click.argument("name")
@model_option("--base", "The model to derive from (registered name or source).", required=False)
@options_of(VariantOptions)
def variant(warehouse, name, base, **options):
    """Register a derived model: an intervention the rest of actwh treats like any model.

    \b
    Examples:
      actwh variant wh minus-probe --base embedded --subtract toxic_probe --scale 50
      actwh variant wh unaligned --base dpo --unalign toxic_probe -k 7 --scale 10 --run dpo
      actwh variant wh selective --base dpo --unalign toxic_probe --scale 3 --run base \\
        --keys selectivity:score:profanity --one-sided
      actwh variant wh unaligned-control --control-of unaligned --seed 0 --match write
    """
    from actwh.models.interventions import scaling

    chosen = VariantOptions(**options)
    with open_warehouse(warehouse) as wh:
        row = wh.variant(name, base, chosen)
    edit = json.loads(row["config"])["edit"]
    keys = ", ".join(f"{l}:{n}" for l, n in edit.get("keys", []))
    if chosen.control_of is not None:
        what = f"control {row['name']} of {row['parent']}: keys of {keys} {scaling(edit)}"
        click.echo(f"registered {what} (seed {chosen.seed})")
    elif chosen.subtract:
        click.echo(
            f"registered variant {row['name']} of {row['parent']}: MLP output of layer "
            f"{edit['layer']} minus {chosen.scale:g}·{chosen.subtract}"
        )
    else:
        click.echo(
            f"registered variant {row['name']} of {row['parent']}: keys of {keys} "
            f"(by {edit['chosen_by']}) {scaling(edit)}"
        )


@main.command()
@warehouse_argument
@model_option()
@options_of(EvaluateOptions)
@output_options
def evaluate(warehouse, model, output, **options):
    """Toxicity, perplexity and F1 of a model (paper Tables 2 and 4), into `evaluations`.

    \b
    Example:
      actwh evaluate wh --model smollm2-135m-instruct
      actwh evaluate wh --model dpo
      actwh sql wh "select model, toxicity, perplexity, f1 from evaluations"
    """
    with open_warehouse(warehouse, create=True) as wh:
        wh.evaluate(model, EvaluateOptions(**options))
        emit(wh.evaluations(), output)


@main.command()
@warehouse_argument
@click.option("--run", required=True, help="The run whose continuations to score.")
@options_of(ScoreOptions)
def score(warehouse, run, **options):
    """Score a run's continuations for toxicity into the `scores` table.

    \b
    Example:
      actwh score wh --run base --scorer profanity
    """
    chosen = ScoreOptions(**options)
    with open_warehouse(warehouse) as wh:
        mean = wh.score(run, chosen)
    click.echo(f"run {run}: mean {chosen.scorer} score {mean:.4f}")


@main.command()
@warehouse_argument
@options_of(RehomeOptions)
def rehome(warehouse, **options):
    """After moving a warehouse whose catalog is a server (PostgreSQL), make the catalog serve
    its new directory. One catalog serves one directory: a copy needs a catalog of its own.

    \b
    Example:
      mv /data/wh /bigdisk/wh && actwh rehome /bigdisk/wh
    """
    with open_warehouse(warehouse) as wh:
        old = wh.rehome(RehomeOptions(**options))
    click.echo(f"the catalog now serves {wh.root} (it served {old})")


@main.command()
@warehouse_argument
@options_of(CheckOptions)
def check(warehouse, **options):
    """Verify every committed file against the catalog (exists, rows, sha256); find orphans.

    Exit status 1 when something is wrong (after --repair: when something is left).

    \b
    Example:
      actwh check wh
      actwh check wh --repair
    """
    with open_warehouse(warehouse) as wh:
        report = wh.check(CheckOptions(**options))
    click.echo(f"checked {report.files} committed files")
    for line in report.lines():
        click.echo(line)
    sys.exit(1 if report.left else 0)


@main.command()
@warehouse_argument
@options_of(CompactOptions)
def compact(warehouse, **options):
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
    with open_warehouse(warehouse) as wh:
        report = wh.compact(CompactOptions(**options))
    click.echo(
        f"{report.partitions} partitions compacted: {report.files_before:,} files into "
        f"{report.files_after:,} ({report.bytes / 1e6:,.1f} MB, {report.rows:,} rows) in "
        f"{report.seconds:.1f}s"
    )
    if report.deleted:
        click.echo(f"deleted {len(report.deleted):,} files retired more than --grace ago")
