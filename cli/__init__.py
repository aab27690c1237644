"""The ``actwh`` command line: it parses, calls the library, and prints. Each command's options
come from its options dataclass (:mod:`actwh.cli.flags`), declared beside the code that runs
it; the commands are grouped by what they do:

- :mod:`actwh.cli.main`: the group, and how an error is shown (one line, exit status 2);
- :mod:`actwh.cli.reading`: ``sql``, ``query``, ``info``, ``files``, ``export``, ``search`` ...;
- :mod:`actwh.cli.writing`: ``ingest``, ``index-vectors``, ``directions add``, ``variant``,
  ``evaluate``, ``check``, ``compact`` ...;
- :mod:`actwh.cli.studying`: ``make-pairs``, ``train-dpo``, ``train-probe``, ``report``,
  ``demo``.

Heavy imports (torch, transformers) happen inside the library calls that run models, so
``actwh sql`` and other read-only commands start fast.
"""

from actwh.cli import reading, studying, writing  # noqa: F401 - each adds its commands
from actwh.cli.main import main

__all__ = ["main"]
