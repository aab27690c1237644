"""The options of ``actwh serve``: the one declaration of its flags (see ``Options`` in
:mod:`actwh.arguments`)."""

from __future__ import annotations

from dataclasses import dataclass

from actwh.arguments import Options, option


@dataclass
class ServeOptions(Options):
    """Where the server listens, and how many processes answer."""

    host: str = option(
        "127.0.0.1", "The address to listen on (another than 127.0.0.1 exposes the warehouse)."
    )
    port: int = option(8000, "The port (0: any free one).", at_least=0, at_most=65535)
    workers: int = option(
        1,
        "Server processes, each with its own read-only view of the warehouse: pages are built "
        "one at a time per process, so give one per core for several users.",
        at_least=1,
    )
