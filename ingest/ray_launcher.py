"""``actwh ingest ... --ray``: one ingestion worker per GPU of a Ray cluster (or N CPU workers).

Each worker runs the ordinary :func:`~actwh.ingest.worker.ingest` with ``--shard i/N``: it loads
the model itself, takes every N-th batch, and commits its shards to the same warehouse, which
every node must reach: an object store (``s3://...``, with a PostgreSQL catalog), or a directory
they all mount. Workers are spread over the cluster's nodes (Ray's SPREAD strategy); each node
reads the usual AWS variables of the environment its Ray node was started in. Ray is an optional
extra: ``pip install 'actwh[ray]'``.
"""

from __future__ import annotations

import dataclasses
import logging

from actwh.errors import ActwhError, arg
from actwh.ingest.options import IngestOptions
from actwh.ingest.worker import RunSummary, ingest


def _shard(warehouse: str, model: str, prompts: str | None, options: IngestOptions, shard: str):
    """One worker: its summary and the Ray node it ran on."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    try:
        return ingest(warehouse, model, prompts, options, shard=shard), node
    except ActwhError as error:  # crosses the process boundary as a plain message
        return f"error: {error.template}", node


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
        address=address,
        ignore_reinit_error=True,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,  # not Ray's start-up lines on stderr: actwh says what it did
    )
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        count = workers or gpus
        if not count:
            raise ActwhError(
                f"{arg('ray')}: the cluster has no GPU; pass {arg('workers')} N to use N CPU "
                "workers"
            )
        num_gpus = 1 if gpus and not workers else 0  # one CPU each, and one GPU unless --workers
        # A worker that dies fails the command, as a killed local run does; running it again
        # resumes the run (its commits are kept, its orphans cleared).
        remote = ray.remote(
            scheduling_strategy="SPREAD", max_retries=0, num_cpus=1, num_gpus=num_gpus
        )(_shard)
        options = dataclasses.replace(options, progress=False)
        jobs = [
            remote.remote(warehouse, model, prompts, options, f"{i}/{count}") for i in range(count)
        ]
        try:
            ran = ray.get(jobs)
        except ray.exceptions.RayError as error:
            reason = str(error).strip().splitlines()[0]
            raise ActwhError(
                f"a Ray worker of the run failed ({reason}); run the same command again to "
                "resume the run"
            ) from None
    finally:
        ray.shutdown()
    results = [result for result, _ in ran]
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
        workers=len(results),
        nodes=len({node for _, node in ran}),
    )
