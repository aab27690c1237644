"""``actwh ingest ... --ray``: one ingestion worker per GPU of a Ray cluster (or N CPU workers).

Each worker runs the ordinary :func:`~actwh.ingest.worker.ingest` with ``--shard i/N``: it loads
the model itself, takes every N-th batch, and commits its shards to the same warehouse, which
must be on storage every node sees. Ray is an optional extra: ``pip install 'actwh[ray]'``.
"""

from __future__ import annotations

from actwh.errors import ActwhError, arg
from actwh.ingest.options import IngestOptions
from actwh.ingest.worker import RunSummary, ingest


def _shard(warehouse: str, model: str, prompts: str | None, options: IngestOptions, shard: str):
    try:
        return ingest(warehouse, model, prompts, options, shard=shard)
    except ActwhError as error:  # crosses the process boundary as a plain message
        return f"error: {error.template}"


def ingest_with_ray(
    warehouse: str,
    model: str,
    prompts: str | None,
    options: IngestOptions,
    *,
    workers: int | None = None,
    address: str | None = None,
) -> RunSummary:
    """Run ``workers`` shards (default: one per GPU in the cluster) and merge their summaries."""
    try:
        import ray
    except ImportError:
        raise ActwhError(f"{arg('ray')} needs Ray: pip install 'actwh[ray]'") from None
    ray.init(
        address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False
    )
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        count = workers or gpus
        if not count:
            raise ActwhError(
                f"{arg('ray')}: the cluster has no GPU; pass {arg('workers')} N to use N CPU "
                "workers"
            )
        resources = {"num_gpus": 1} if gpus and not workers else {"num_cpus": 1}
        remote = ray.remote(**resources)(_shard)
        options = IngestOptions(**{**options.as_dict(), "progress": False})
        results = ray.get(
            [
                remote.remote(warehouse, model, prompts, options, f"{i}/{count}")
                for i in range(count)
            ]
        )
    finally:
        ray.shutdown()
    errors = [r for r in results if isinstance(r, str)]
    if errors:
        raise ActwhError(errors[0].removeprefix("error: "))
    first = results[0]
    return RunSummary(
        run=first.run,
        model=first.model,
        prompt_set=first.prompt_set,
        n_prompts=sum(r.n_prompts for r in results),
        n_tokens=sum(r.n_tokens for r in results),
        seconds=max(r.seconds for r in results),
        resumed=any(r.resumed for r in results),
        warnings=sorted({w for r in results for w in r.warnings}),
    )
