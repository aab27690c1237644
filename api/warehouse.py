"""The public face of a warehouse: ``actwh.open(path)`` returns a :class:`Warehouse`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from actwh.errors import ActwhError
from actwh.queries.loader import named_queries, named_query
from actwh.warehouse.arrays import column_to_numpy
from actwh.warehouse.reader import Snapshot
from actwh.warehouse.schema import fact_table, fact_tables
from actwh.warehouse.store import Store

_POLARS_TYPES = {
    "VARCHAR": pl.String,
    "INTEGER": pl.Int32,
    "SMALLINT": pl.Int16,
    "BIGINT": pl.Int64,
    "FLOAT": pl.Float32,
    "DOUBLE": pl.Float64,
    "BOOLEAN": pl.Boolean,
    "VARCHAR[]": pl.List(pl.String),
}


class Warehouse:
    """A warehouse opened for reading.

    Queries see a snapshot of what was committed when the warehouse was opened (or last
    :meth:`refresh`-ed); a commit landing meanwhile is never half-visible.

    Examples
    --------
    >>> import actwh
    >>> wh = actwh.open("wh/")
    >>> wh.sql("select layer, count(*) as n from residuals group by layer order by layer")
    >>> wh.scan("tokens").filter(pl.col("is_generated")).collect()
    """

    def __init__(self, path: str | Path):
        self.store = Store.open(path)
        self._snapshot: Snapshot | None = None
        self._indexes: dict = {}  # model → loaded FAISS index

    def __repr__(self) -> str:
        return f"Warehouse({str(self.store.root)!r})"

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def path(self) -> Path:
        return self.store.root

    @property
    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            self._snapshot = Snapshot(self.store)
        return self._snapshot

    def refresh(self) -> Warehouse:
        """Take a new snapshot, so later queries see commits made since."""
        self.close()
        self._indexes.clear()
        return self

    def close(self) -> None:
        if self._snapshot is not None:
            self._snapshot.close()
            self._snapshot = None

    def sql(self, query: str, params: dict | list | None = None) -> pl.DataFrame:
        """Run read-only SQL (DuckDB dialect) and return a polars DataFrame.

        Parameters bind as ``$name`` (dict) or ``?`` (list); they are never formatted into SQL.

        >>> wh.sql("select * from runs where model = $m", {"m": "smollm2-135m-instruct"})
        """
        return pl.from_arrow(self.snapshot.execute(query, params))

    def query(self, name: str, **params) -> pl.DataFrame:
        """Run a named analysis from ``queries/`` (see :meth:`queries`), parameters bound.

        >>> wh.query("activation_drop", base_run="base", tuned_run="dpo", n=5)
        """
        named = named_query(name)
        return self.sql(named.sql, named.bind(params) or None)

    def pca(
        self,
        base_run: str,
        tuned_run: str,
        layer: int,
        *,
        site: str = "resid_mid",
        n_prompts: int = 50,
        neuron: tuple[int, int] | None = None,
    ) -> pl.DataFrame:
        """Figure 4: resid_mid of paired runs at the last prompt token, z-scored, projected on
        the mean shift (tuned − base) and the first principal component.

        Returns ``prompt, run, shift, pc1, activation`` (the coefficient of ``neuron`` =
        ``(layer, index)`` there, when it was tracked).

        >>> wh.pca("base", "dpo", layer=19, neuron=(19, 770))
        """
        from actwh.queries.pca import pca_shift

        return pca_shift(
            self.sql, base_run, tuned_run, layer, site=site, n_prompts=n_prompts, neuron=neuron
        )

    def queries(self) -> pl.DataFrame:
        """Every named query: what it answers, the paper table or figure, its parameters."""
        return pl.DataFrame(
            [
                {
                    "name": q.name,
                    "paper": q.paper,
                    "parameters": q.signature(),
                    "answers": q.answers,
                    "needs": q.needs,
                }
                for q in named_queries().values()
            ]
        )

    def tables(self) -> list[str]:
        """Names of every table and view a query can use."""
        return self.sql("select table_name from information_schema.tables order by 1")[
            "table_name"
        ].to_list()

    def scan(self, table: str) -> pl.LazyFrame:
        """A polars LazyFrame over a fact table's committed Parquet files.

        Vector columns come back as ``pl.Array(pl.Float32, d)`` whatever the stored dtype.

        >>> wh.scan("residuals").filter(pl.col("layer") == 19).select("prompt", "pos", "vec")
        """
        if table not in fact_tables():
            raise ActwhError(
                f"no fact table {table!r}; scan one of: {', '.join(sorted(fact_tables()))} "
                "(catalog tables: use .sql)"
            )
        spec = fact_table(table)
        if table in self.snapshot.broken:
            reason = self.snapshot.broken[table]
            raise ActwhError(f"cannot read table {table}: {reason} (run: actwh check WH)")
        files = self.snapshot.absolute_files(table)
        sizes = self.snapshot.vector_sizes[table]
        schema = {}
        for column, type_ in spec.data_columns:
            if column == spec.vector_column:
                if len(sizes) != 1:
                    if files:
                        raise ActwhError(
                            f"{table} holds vectors of several sizes {sorted(sizes)}; "
                            "filter by run with wh.sql(...) instead"
                        )
                    schema[column] = pl.Array(pl.Float32, 1)
                    continue
                schema[column] = pl.Array(pl.Float32, next(iter(sizes)))
            else:
                schema[column] = _POLARS_TYPES[type_]
        hive = {c: _POLARS_TYPES[spec.column_type(c)] for c in spec.partition}
        ordered = [c for c, _ in spec.columns]
        if not files:
            return pl.LazyFrame(schema={**hive, **schema}).select(ordered)
        return pl.scan_parquet(
            files,
            schema=schema,
            hive_partitioning=True,
            hive_schema=hive,
            cast_options=pl.ScanCastOptions(float_cast="upcast"),
        ).select(ordered)

    def vectors(
        self, table: str, *, column: str | None = None, **filters
    ) -> tuple[np.ndarray, pl.DataFrame]:
        """Vectors of a fact table as numpy, with the key columns of each row.

        Filters are equality on columns (a list means "any of"). Rows come in key order.

        >>> X, keys = wh.vectors("residuals", run="base", layer=19, site="resid_mid")
        >>> X.shape   # [n_tokens, d_model]; keys has run, layer, prompt, pos, site
        """
        spec = fact_tables().get(table)
        if spec is None or spec.vector_column is None:
            with_vectors = sorted(t for t, s in fact_tables().items() if s.vector_column)
            raise ActwhError(
                f"{table!r} has no vectors; tables with vectors: {', '.join(with_vectors)}"
            )
        column = column or spec.vector_column
        names = [c for c, _ in spec.columns]
        keys = [c for c, t in spec.columns if t in ("VARCHAR", "INTEGER", "SMALLINT", "BIGINT")]
        unknown = sorted(set(filters) - set(names))
        if unknown:
            raise ActwhError(f"{table} has no column {unknown[0]!r}; columns: {', '.join(names)}")
        where, params = [], {}
        for i, (name, value) in enumerate(filters.items()):
            values = value if isinstance(value, list | tuple) else [value]
            placeholders = ", ".join(f"$p{i}_{j}" for j in range(len(values)))
            where.append(f"{name} IN ({placeholders})")
            params.update({f"p{i}_{j}": v for j, v in enumerate(values)})
        query = f"SELECT {', '.join(keys)}, {column} FROM {table}"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += f" ORDER BY {', '.join(keys)}"
        frame = self.sql(query, params or None)
        return column_to_numpy(frame[column].to_arrow()), frame.drop(column)

    def direction(self, name: str, *, model: str | None = None) -> np.ndarray:
        """A registered direction as a float32 vector ``[d_model]``.

        >>> wh.direction("toxic_probe")
        """
        from actwh.warehouse.directions import get_direction  # the catalog, via SQLAlchemy

        return get_direction(self.store, name, model)[1]

    def nearest(
        self,
        direction_or_vector: str | np.ndarray,
        *,
        k: int = 20,
        model: str | None = None,
        layers: list[int] | None = None,
        run: str | None = None,
    ) -> pl.DataFrame:
        """The neurons whose value vectors can write most along a direction (FAISS; exact by
        default): by cosine for GELU MLPs (the paper's Table 1), by |cosine| for gated ones.

        ``direction_or_vector``: a direction name, a vector ``[d_model]`` or a batch ``[q, d]``.
        Returns ``query, rank, layer, neuron, cosine, sign, norm, top_tokens``: ``sign`` is the
        sign of the coefficient m that writes toward the direction, ``top_tokens`` those of
        ``sign · v``. With ``run``, also ``frac_pos, mean_pos, mean_neg, mean_write``: how each
        neuron fires over the run's generated tokens (see :func:`actwh.warehouse.search.nearest`).

        >>> wh.nearest("toxic_probe", k=10, run="base")
        """
        from actwh.warehouse.directions import get_direction
        from actwh.warehouse.search import load_index, nearest  # faiss, on first use

        if isinstance(direction_or_vector, str):
            owner, vector = get_direction(self.store, direction_or_vector, model)
            model = model or owner
        else:
            vector = np.asarray(direction_or_vector, dtype=np.float32)
            if model is None:
                models = self.sql("select model from vector_indexes")["model"].to_list()
                if len(models) != 1:
                    raise ActwhError(
                        f"pass model=...: value vectors are stored for {models or 'no model'}"
                    )
                model = models[0]
        if model not in self._indexes:
            self._indexes[model] = load_index(self.snapshot, model)
        hits = nearest(self.snapshot, self._indexes[model], model, vector, k, layers, run)
        return pl.from_arrow(hits)

    @property
    def engine(self):
        """A SQLAlchemy ``Engine`` on the catalog (read-only), for tools that speak SQLAlchemy.

        Keep connections short: a DuckDB catalog held open blocks writers.
        """
        return self.store.catalog._read_engine
