"""``actwh demo``: the main job, offline, on the embedded SmolLM2-135M-Instruct.

Ingests the shipped prompt set through the embedded model (converted once from its GGUF file),
storing resid_mid at every layer, and prints what a first query over it shows.
"""

from __future__ import annotations

from pathlib import Path

import click

from actwh.api.output import emit


def run_demo(out: Path) -> None:
    from actwh.api.warehouse import Warehouse
    from actwh.ingest.models import EMBEDDED
    from actwh.ingest.options import IngestOptions
    from actwh.ingest.prompts import shipped_prompts
    from actwh.ingest.worker import ingest

    wh_path = out / "wh"
    with Warehouse.maybe(wh_path) as existing:
        done = (
            existing is not None
            and not existing.sql(
                "select 1 from runs where name = 'base' and status = 'complete'"
            ).is_empty()
        )
    if not done:
        click.echo(f"[1/2] ingesting the shipped prompts through {EMBEDDED} SmolLM2 → {wh_path}")
        summary = ingest(
            str(wh_path),
            EMBEDDED,
            str(shipped_prompts()),
            IngestOptions(name="base", generate=20, capture="resid_mid"),
        )
        click.echo(
            f"      {summary.n_prompts} prompts, {summary.n_tokens:,} tokens, "
            f"{summary.tokens_per_second:,.0f} tok/s"
        )
    else:
        click.echo(f"[1/2] run 'base' already in {wh_path}: reusing it")
    with Warehouse(wh_path) as wh:
        click.echo("[2/2] a first look, in SQL:")
        query = """
            select p.meta->>'category' as category, count(*) as prompts,
                   round(avg(g.n_generated), 1) as avg_generated,
                   any_value(g.prompt_text || ' ▸' || g.continuation) as example
            from generations g join runs r on r.name = g.run
            join prompts p on p.prompt_set = r.prompt_set and p.prompt = g.prompt
            group by all order by category"""
        click.echo(f'  actwh sql {wh_path} "{" ".join(query.split())}"')
        emit(wh.sql(query), ("table", None))
        norms = """
            select layer, round(avg(sqrt(array_inner_product(vec, vec))), 1) as mean_norm
            from residuals where site = 'resid_mid' group by layer order by layer"""
        click.echo("  mean resid_mid norm per layer (layer:norm):")
        pairs = [f"{layer}:{norm:g}" for layer, norm in wh.sql(norms).iter_rows()]
        click.echo("  " + "  ".join(pairs))
