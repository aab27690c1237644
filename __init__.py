"""actwh: an activation warehouse for mechanistic interpretability of alignment.

Open a warehouse and ask it questions::

    import actwh
    wh = actwh.open("wh/")
    wh.sql("select layer, count(*) from residuals group by layer order by layer")

Importing ``actwh`` is cheap: nothing heavy (torch, transformers) is imported until a command
that runs a model needs it.
"""

__version__ = "0.1.0"


def open(path, **kwargs):  # noqa: A001 - the entry point reads best as actwh.open(path)
    """Open the warehouse at ``path`` for reading; see :class:`actwh.api.warehouse.Warehouse`."""
    from actwh.api.warehouse import Warehouse

    return Warehouse(path, **kwargs)
