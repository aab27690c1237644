"""The capture kinds: everything a run can keep from inside the model, one module each (see
:mod:`actwh.ingest.kinds.base` for what a kind declares), with its options in
:mod:`actwh.ingest.kinds.options` (torch-free, so the CLI builds its flags without torch) and the
list of kinds in :mod:`actwh.ingest.kinds.registry`.

To add a kind (attention patterns, SAE features, ...): write its module here with a ``make``
function, add ``make`` to :data:`~actwh.ingest.kinds.registry.KINDS`, give it an options
dataclass in ``options.py`` (its fields become ``actwh ingest`` flags and ``wh.ingest``
keywords), and declare its table in ``schema.sql``.
"""
