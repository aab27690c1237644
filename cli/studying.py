"""The commands of the study: ``train-probe``, ``make-pairs``, ``train-dpo``, ``report``,
``serve`` (a warehouse in the browser) and ``demo`` (the whole study, offline)."""

from __future__ import annotations

import json

import click

from actwh.cli.flags import options_of
from actwh.cli.main import main, model_option, named, open_warehouse, warehouse_argument
from actwh.report.options import ReportOptions
from actwh.serve.options import ServeOptions
from actwh.study.options import DemoOptions
from actwh.train.options import DPOOptions, PairOptions, ProbeOptions


@main.command()
@warehouse_argument
@model_option()
@options_of(ProbeOptions)
def train_probe(warehouse, model, **options):
    """Train the linear toxicity probe and register it as a direction (positive = toxic).

    Logistic regression on the mean over tokens of one residual site (default: resid_post of
    the last layer), 90:10 split; prints validation accuracy.

    \b
    Example:
      actwh train-probe wh --model embedded
      actwh search wh --direction toxic_probe -k 20
    """
    with open_warehouse(warehouse, create=True) as wh:
        row = wh.train_probe(model, ProbeOptions(**options))
    meta = json.loads(row["meta"])
    click.echo(
        f"probe {row['name']} of {row['model']}: validation accuracy {meta['val_accuracy']:.3f} "
        f"({meta['n_val']} texts; train {meta['train_accuracy']:.3f} on {meta['n_train']}), "
        f"norm {row['norm']:.4g}"
    )


@main.command()
@model_option(help="A model registered in --warehouse, or a source.")
@click.option(
    "--warehouse",
    required=True,
    type=click.Path(file_okay=False),
    help="Where the steering direction lives.",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Pairs JSONL to write.")
@options_of(PairOptions)
def make_pairs(model, warehouse, out, **options):
    """Write DPO preference pairs: greedy (preferred) vs toxic-steered (dispreferred).

    A cheap stand-in for the paper's PPLM: the direction is added to the residual stream while
    sampling. Pairs are kept where the scorer rates the steered continuation more toxic by at
    least --min-margin; the summary gives the margins of the kept pairs.
    Format: prompt_text, unpert_gen_text (preferred), pert_gen_text (dispreferred).

    \b
    Example:
      actwh make-pairs --model embedded --warehouse wh --out pairs.jsonl
    """
    chosen = PairOptions(**options)
    with open_warehouse(warehouse) as wh:
        stats = wh.make_pairs(model, out, chosen)
    click.echo(f"{stats.summary(chosen.scorer)} → {out}")


@main.command()
@model_option("--base", "The model to tune: a source, or a model registered in --warehouse.")
@click.option(
    "--pairs",
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
@options_of(DPOOptions)
def train_dpo(base, pairs, out, warehouse, **options):
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
        with open_warehouse(warehouse, create=True) as wh:
            metrics = wh.train_dpo(base, pairs, out, settings)
    else:  # train only: the same library steps, nothing registered
        from actwh.train.dpo import train_only

        metrics = train_only(base, pairs, out, settings)
    click.echo(
        f"saved {out}: {metrics['steps']} steps, train loss {metrics['train_loss']:.4f}, "
        f"best validation loss {metrics.get('best_eval_loss', float('nan')):.4f}"
    )
    if warehouse:
        click.echo(
            f"registered {metrics['model']} (dpo, parent {metrics['parent']}) in {warehouse}"
        )


@main.command()
@warehouse_argument
@options_of(ReportOptions)
def report(warehouse, **options):
    """Write the paper's figures and tables, computed from WAREHOUSE, as one HTML page.

    With them: the study's findings (when WAREHOUSE holds the demo's runs), a page per top
    value vector of the direction (its tokens, coefficient histogram in both runs, top contexts,
    cosines with δx) and a token-by-token view of the prompts tuning changed most. The page
    works offline (JavaScript inlined); each chart is also saved as a PNG beside it. Anchors:
    #neuron-L19-770, #prompt-12.

    \b
    Example:
      actwh report wh -o report.html
      actwh report wh -o report.html --neurons 19:770,12:771 --prompts 12
    """
    from actwh import report as reports
    from actwh.study.findings import FINDINGS_SECTION

    named(out="-o")
    with open_warehouse(warehouse) as wh:
        written = reports.write(wh, ReportOptions(**options), first=[FINDINGS_SECTION])
    plan = written.plan
    click.echo(
        f"wrote {written.page} and {len(written.charts)} PNG charts; "
        f"{len(plan.neurons)} neuron pages, {len(plan.prompts)} prompt views"
    )


@main.command()
@warehouse_argument
@options_of(ServeOptions)
def serve(warehouse, **options):
    """Browse WAREHOUSE in a web browser, read-only and offline: a page for any neuron, prompt,
    direction, search, named query and SQL (results as CSV or Parquet, and charted).

    Pages: / (models, runs, directions, tables), /neuron/MODEL/LAYER/NEURON,
    /prompt/RUN/PROMPT, /direction/NAME, /search?neuron=L:N&model=M, /query/NAME, /sql?q=...
    Every page's URL reproduces it. It binds 127.0.0.1 unless --host says otherwise.

    \b
    Example:
      actwh serve demo-out/wh            # then open http://127.0.0.1:8000
      actwh serve wh --port 8080
    """
    from actwh.serve import serve as run

    o = ServeOptions(**options)
    click.echo(f"serving {warehouse} at http://{o.host}:{o.port}/ (Ctrl-C stops it)", err=True)
    run(warehouse, o)


@main.command()
@options_of(DemoOptions)
def demo(**options):
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
    from actwh.study.demo import demo as run

    run(DemoOptions(**options), echo=click.echo)
