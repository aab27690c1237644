"""What a warehouse reads: SQL, named analyses, polars, numpy, FAISS and exports — the half of
:class:`~actwh.api.warehouse.Warehouse` that needs no torch, so a core install reads any
warehouse and opening one stays fast.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path
from typing import Self, cast

import numpy as np
import polars as pl
import pyarrow as pa

from actwh.arguments import check, checks_arguments, takes_options
from actwh.errors import ActwhError, BadInput, NotFound, arg, natural_key, unknown
from actwh.ingest.options import RunConfig
from actwh.queries.loader import named_queries, named_query
from actwh.warehouse.arrays import column_to_numpy
from actwh.warehouse.layout import outside
from actwh.warehouse.object_store import location
from actwh.warehouse.options import (
    DatasetOptions,
    ExportOptions,
    FilesOptions,
    SearchOptions,
)
from actwh.warehouse.reader import Snapshot
from actwh.warehouse.schema import arrow_type, fact_table, fact_tables
from actwh.warehouse.store import Store

_FILTER_ARGS = {"run": "runs", "layer": "layers", "site": "sites", "model": "models"}


@checks_arguments
class Reads:
    """What a :class:`~actwh.api.warehouse.Warehouse` reads: opening, the snapshot rule (see
    there), SQL, named queries, frames, vectors, search and exports. Nothing here imports torch.
    """

    def __init__(self, path: str | Path, *, create: bool = False, catalog: str | None = None):
        check("path", path, str | Path)
        check("catalog", catalog, str | None)
        self.root: Path | str = location(path)  # a directory, or an object store's URI
        self._catalog_url = catalog
        self._store: Store | None = Store.existing(self.root)
        if self._store is not None:
            self._store.check_catalog(catalog)
        elif not create:
            Store.open(self.root)  # raises: says why this is not a warehouse
        self._snapshot: Snapshot | None = None
        self._indexes: dict = {}  # model → loaded FAISS index

    # ---- opening, the snapshot rule ---------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def path(self) -> Path | str:
        """The warehouse's directory, or its object store URI."""
        return self.root

    @property
    def store(self) -> Store:
        """The warehouse on disk (created on first use when opened with ``create=True``)."""
        if self._store is None:
            self._store = Store.create(self.root, catalog_url=self._catalog_url)
        return self._store

    @property
    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            self._snapshot = Snapshot(self.store)
        return self._snapshot

    def refresh(self) -> Self:
        """Take a new snapshot, so later queries see commits made since."""
        self.close()
        self._indexes.clear()
        return self

    def close(self) -> None:
        if self._snapshot is not None:
            self._snapshot.close()
            self._snapshot = None

    # ---- notebook manners -------------------------------------------------------------------

    def summary(self) -> dict:
        """Models, runs (by status), fact tables with rows, and bytes of their committed files —
        all from the catalog, which records every committed file's rows and bytes (no file is
        opened)."""
        if self._store is None:
            return {"models": [], "runs": {}, "tables": {}, "bytes": 0}
        models = self.sql("select name from models")["name"].to_list()
        runs = dict(self.sql("select status, count(*) from runs group by status").iter_rows())
        files = self.sql(
            """select table_name, sum(n_rows) as n_rows, sum(n_bytes) as n_bytes
               from commit_files group by table_name order by table_name"""
        )
        tables = {t: int(n) for t, n, _ in files.iter_rows() if n and t in fact_tables()}
        return {
            "models": sorted(models, key=natural_key),
            "runs": runs,
            "tables": tables,
            "bytes": int(files["n_bytes"].sum() or 0),
        }

    def info(self) -> dict[str, pl.DataFrame]:
        """An overview to start from: ``models`` (role, parent, shape), ``runs`` (model, prompt
        set, mode, status, prompts, tokens, what each captured and at which layers, bytes),
        ``prompt_sets``, ``directions`` (how many of each kind per model) and ``tables`` (rows and
        bytes of each fact table), all from the catalog."""
        runs = self.sql(
            """SELECT r.name, r.model, r.prompt_set, r.mode, r.source_run, r.status, r.n_prompts,
                      r.n_tokens, r.config,
                      coalesce(sum(f.n_bytes), 0)::BIGINT AS n_bytes
               FROM runs r LEFT JOIN commits c ON c.run = r.name
               LEFT JOIN commit_files f ON f.commit_id = c.id
               GROUP BY ALL ORDER BY min(r.created_at)"""
        )
        configs = [RunConfig.of(c) for c in runs["config"]]
        runs = runs.drop("config").with_columns(
            pl.Series("captured", [", ".join(c.capture) or "-" for c in configs]),
            pl.Series(
                "layers",
                [_spans(c.layers) if c.layers is not None else "None" for c in configs],
            ),
        )
        return {
            "models": self.sql(
                "SELECT name, role, parent, architecture, n_layers, d_model, d_mlp, vocab_size "
                "FROM models ORDER BY created_at"
            ),
            "runs": runs,
            "prompt_sets": self.sql("SELECT name, n_prompts FROM prompt_sets ORDER BY name"),
            "directions": self.sql(
                "SELECT model, kind, count(*) AS n, string_agg(name, ', ' ORDER BY "
                # natural order: dx.2 before dx.10
                "regexp_replace(name, '[0-9]+$', ''), "
                "try_cast(regexp_extract(name, '[0-9]+$') AS BIGINT), name) AS names "
                "FROM directions GROUP BY ALL ORDER BY model, kind"
            ),
            "tables": self.sql(
                "SELECT table_name AS table, sum(n_rows)::BIGINT AS n_rows, "
                "sum(n_bytes)::BIGINT AS n_bytes FROM commit_files GROUP BY ALL ORDER BY 1"
            ),
        }

    def __repr__(self) -> str:
        s = self.summary()
        runs = ", ".join(f"{n} {status}" for status, n in sorted(s["runs"].items())) or "none"
        tables = ", ".join(f"{t} {n:,}" for t, n in s["tables"].items()) or "none"
        return (
            f"Warehouse({str(self.root)!r})\n"
            f"  models: {', '.join(s['models']) or 'none'}\n"
            f"  runs: {runs}\n"
            f"  rows: {tables}\n"
            f"  data: {_size(s['bytes'])}"
        )

    def _repr_html_(self) -> str:
        s = self.summary()
        rows = [
            ("models", ", ".join(s["models"]) or "none"),
            ("runs", ", ".join(f"{n} {st}" for st, n in sorted(s["runs"].items())) or "none"),
            *((f"{t} rows", f"{n:,}") for t, n in s["tables"].items()),
            ("data", _size(s["bytes"])),
        ]
        cells = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
            f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
            for k, v in rows
        )
        where = html.escape(str(self.root))
        return f"<b>actwh warehouse</b> <code>{where}</code><table>{cells}</table>"

    # ---- reading ----------------------------------------------------------------------------

    def sql(self, query: str, params: dict | list | None = None) -> pl.DataFrame:
        """Run read-only SQL (DuckDB dialect) and return a polars DataFrame.

        Parameters bind as ``$name`` (dict) or ``?`` (list); they are never formatted into SQL.

        >>> wh.sql("select * from runs where model = $m", {"m": "smollm2-135m-instruct"})
        """
        return _frame(self.snapshot.execute(query, params))

    def sql_batches(
        self, query: str, params: dict | list | None = None, *, rows: int = 65_536
    ) -> Iterator[pl.DataFrame]:
        """:meth:`sql`, streamed: the result in DataFrames of at most ``rows`` rows (at least
        one, empty when the result is), so memory stays flat however large the result.

        >>> for chunk in wh.sql_batches("select * from residuals"): ...
        """
        schema, batches = self.snapshot.stream(query, params, rows)
        empty = True
        for batch in batches:
            empty = False
            yield _frame(batch)
        if empty:
            yield _frame(schema.empty_table())

    def query_batches(self, name: str, **params) -> Iterator[pl.DataFrame]:
        """:meth:`query`, streamed like :meth:`sql_batches` (a Python analysis comes whole)."""
        named, bound = self._bound(name, params)
        if named.run is not None:
            yield named.run(self.sql, **bound)
            return
        yield from self.sql_batches(named.sql, bound or None)

    def query(self, name: str, **params) -> pl.DataFrame:
        """Run a named analysis from ``queries/`` (see :meth:`queries`), parameters bound.

        >>> wh.query("activation_drop", base_run="base", tuned_run="dpo", n=5)
        """
        named, bound = self._bound(name, params)
        if named.run is not None:  # a Python analysis (queries/loader.py)
            return named.run(self.sql, **bound)
        return self.sql(named.sql, bound or None)

    def _bound(self, name: str, params: dict):
        """The named query and its parameters, bound and checked."""
        named = named_query(name)
        bound = named.bind(params)
        self._check_names(bound)
        return named, bound

    RUN_PARAMS = ("run", "base_run", "tuned_run", "selected_by")

    def _check_names(self, params: dict) -> None:
        """A named query's runs, arm, model, direction, layer, neuron, site and target token must
        be in the warehouse: a typo is an error naming it and the known ones, never an empty
        answer (SQL that finds no rows cannot tell a typo from nothing)."""
        runs = self.snapshot.runs()
        for key in self.RUN_PARAMS:
            if params.get(key) is not None and params[key] not in runs:
                raise unknown(f"run for {key}", params[key], runs, hint=INGEST_HINT)
        run = params.get("base_run") or params.get("run")
        if params.get("arm") not in (None, "all"):
            arms = self.sql("select distinct arm from prompt_arms($r)", {"r": run})["arm"]
            if params["arm"] not in arms:
                raise unknown(f"arm of run {run}", params["arm"], [*arms, "all"])
        if params.get("model") is not None:
            models = self.sql("select name from models")["name"]
            if params["model"] not in models:
                raise unknown("model", params["model"], models, hint=INGEST_HINT)
        if params.get("direction") is not None:
            known = self.sql("select distinct name from directions")["name"]
            if params["direction"] not in known:
                raise unknown("direction", params["direction"], known, hint=DIRECTION_HINT)
        if params.get("token") is not None:
            tokens = self.sql("select distinct token from token_probs")["token"]
            if params["token"] not in tokens:
                raise unknown("target token", params["token"], tokens, hint=TOKEN_HINT)
        if params.get("scorer") is not None:
            scorers = self.sql("select scorer from evaluations union select scorer from scores")[
                "scorer"
            ]
            if params["scorer"] not in scorers:
                raise unknown("scorer", params["scorer"], scorers, hint=SCORER_HINT)
        if params.get("prefix") is not None:
            prefixes = self.sql(
                "select distinct regexp_replace(name, '\\.[0-9]+$', '') as p "
                "from directions where kind = 'delta'"
            )["p"]
            if params["prefix"] not in prefixes:
                raise unknown("δx direction prefix", params["prefix"], prefixes, hint=DELTA_HINT)
        if run is not None:
            _check_captured(params, run, RunConfig.of(runs[run]["config"]))

    def pca(
        self,
        base_run: str,
        tuned_run: str,
        layer: int,
        *,
        site: str | None = None,
        n_prompts: int = 50,
        neuron: tuple[int, int] | None = None,
    ) -> pl.DataFrame:
        """Figure 4: ``site`` (default: what the MLP reads, resid_mid; resid_pre for GPT-NeoX) of
        paired runs at the last prompt token, z-scored, projected on the mean shift
        (tuned − base) and the first principal component.

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

    def tables(self) -> pl.DataFrame:
        """Every table and view a query can use (``name``), with its number of rows
        (``n_rows``)."""
        catalog = self.sql(
            "select table_name from duckdb_tables() where database_name = current_database()"
        )["table_name"]
        counts = " UNION ALL ".join(
            f"SELECT '{t}' AS name, count(*) AS n_rows FROM {t}" for t in catalog
        )
        # A fact table's rows are the sum of its committed files' (the catalog has them all).
        facts = pl.DataFrame({"name": list(fact_tables())})
        committed = self.sql(
            "SELECT table_name AS name, sum(n_rows)::BIGINT AS n_rows FROM commit_files GROUP BY 1"
        )
        rows = facts.join(committed, on="name", how="left").fill_null(0)
        return pl.concat([self.sql(counts), rows]).sort("name")

    def directions(self) -> pl.DataFrame:
        """Registered directions (``model, name, kind, d_model, norm, meta``), names in natural
        order (``dx.2`` before ``dx.10``)."""
        frame = self.sql(
            "select model, name, kind, d_model, round(norm, 4) as norm, meta from directions"
        )
        return natural_sort(frame, "model", "name")

    def evaluations(self) -> pl.DataFrame:
        """Toxicity, perplexity and F1 of every evaluated model (paper Tables 2 and 4)."""
        return self.sql(
            "select model, prompt_set, scorer, n_prompts, round(toxicity, 4) as toxicity, "
            "round(perplexity, 3) as perplexity, round(f1, 4) as f1 from evaluations "
            "order by prompt_set, scorer, toxicity desc"
        )

    def scan(self, table: str) -> pl.LazyFrame:
        """A polars LazyFrame over a fact table's committed Parquet files: a filter on its
        partition columns (run, model, layer) reads only the files of those partitions.

        Vector columns come back as ``pl.Array(pl.Float32, d)`` whatever the stored dtype
        (``pl.List`` where the table holds vectors of several sizes).

        >>> wh.scan("residuals").filter(pl.col("layer") == 19).select("prompt", "pos", "vec")
        """
        if table not in fact_tables():
            raise NotFound(
                f"no fact table {table!r}; scan one of: {', '.join(sorted(fact_tables()))} "
                "(catalog tables: use .sql)"
            )
        spec = fact_table(table)
        # The files a filter can match are chosen from the catalog, as for SQL.
        dataset = self.snapshot.dataset(table)
        frame = pl.scan_pyarrow_dataset(dataset).with_columns(  # strings, read as dictionaries
            pl.col(f.name).cast(pl.String) for f in dataset.schema if pa.types.is_dictionary(f.type)
        )
        shown = [c for c, _ in spec.read_columns]
        if spec.scale_column and spec.vector_column:  # see schema.sql: stored × scale, where set
            vec, scale = pl.col(spec.vector_column), pl.col(spec.scale_column)
            frame = frame.with_columns(pl.when(scale.is_null()).then(vec).otherwise(vec * scale))
        return frame.select(shown)

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
            raise NotFound(
                f"{table!r} has no vectors; tables with vectors: {', '.join(with_vectors)}"
            )
        column = column or spec.vector_column
        names = [c for c, _ in spec.read_columns]
        integers_or_text = ("VARCHAR", "INTEGER", "SMALLINT", "BIGINT")
        keys = [c for c, t in spec.read_columns if t in integers_or_text]
        unknown = sorted(set(filters) - set(names))
        if unknown:
            raise NotFound(f"{table} has no column {unknown[0]!r}; columns: {', '.join(names)}")
        where, params = [], {}
        types = dict(spec.read_columns)
        for i, (name, value) in enumerate(filters.items()):
            values = value if isinstance(value, list | tuple) else [value]
            # Cast to the column's type: DuckDB pushes `layer IN ($p)` into the scan, where the
            # catalog chooses the partition's files, only when no cast falls on the column.
            placeholders = ", ".join(f"$p{i}_{j}::{types[name]}" for j in range(len(values)))
            where.append(f"{name} IN ({placeholders})")
            params.update({f"p{i}_{j}": v for j, v in enumerate(values)})
        query = f"SELECT {', '.join(keys)}, {column} FROM {table}"
        if where:
            query += " WHERE " + " AND ".join(where)
        # polars sorts the rows with their vectors in tow in half the time DuckDB's ORDER BY takes
        frame = self.sql(query, params or None)
        if "site" in frame.columns and "site" not in filters:  # several sites: which one?
            sites = sorted(frame["site"].unique().to_list())
            if len(sites) > 1:
                raise BadInput(
                    f"{table}: these rows hold {len(sites)} sites ({', '.join(sites)}), whose "
                    f"vectors mean different things; choose with site=..., e.g. site={sites[0]!r} "
                    f"(or site={sites!r} for both)"
                )
        frame = frame.sort(keys, nulls_last=True)
        if frame.is_empty():
            self._check_filters(table, filters)
        return column_to_numpy(frame[column].to_arrow()), frame.drop(column)

    def _check_filters(self, table: str, filters: dict) -> None:
        """After an empty answer: a filter value the table does not hold at all is a typo (or
        something never captured), an error naming it; an empty combination is an answer."""
        for name, value in filters.items():
            known = self.sql(f"SELECT DISTINCT {name} FROM {table}")[name].to_list()
            for v in value if isinstance(value, list | tuple) else [value]:
                if v not in known:
                    raise unknown(f"{name} in {table}", v, known)

    # ---- other engines and tools --------------------------------------------------------------

    @takes_options(FilesOptions)
    def files(
        self, table: str, options: FilesOptions | None = None, **overrides
    ) -> list[Path] | list[str]:
        """The committed Parquet files of ``table`` (absolute paths; URLs on an object store),
        optionally only those of some ``runs``, ``layers`` or ``models``: exactly what a query
        reads, never an orphan a crash left or a file being written. For engines that take a
        file list (Spark: pass ``basePath=WH/data/TABLE`` to keep the partition columns).

        >>> wh.files("tokens", runs="base")
        """
        from actwh.warehouse.export import check_filters, committed_files, readable, table_spec

        o = FilesOptions.given(options, overrides)
        filters = self._export_filters(self.sql, runs=o.runs, layers=o.layers, models=o.models)
        check_filters(table_spec(table), filters, _FILTER_ARGS)
        listed = committed_files(self.snapshot, table, filters)
        readable(self.store, table, listed)  # a damaged file is an error, as in a query
        return self.store.addresses(listed)

    @takes_options(ExportOptions)
    def export(
        self, table: str, out: str | Path, options: ExportOptions | None = None, **overrides
    ) -> dict:
        """Write ``table`` (or the rows of some ``runs``, ``layers``, ``sites`` or ``models``) to
        the new directory ``out`` as Parquet any engine reads as is: committed rows only, float32
        vectors, Hive-partitioned like the warehouse, with ``out/_manifest.json`` listing the
        files. Streams (memory stays flat); whole or absent. Returns the manifest.

        >>> wh.export("residuals", "export/residuals", runs="base", layers=[17, 18, 19])
        """
        from actwh.warehouse.export import check_filters, export_table, table_spec

        o = ExportOptions.given(options, overrides)
        target = outside(out, "out")
        filters = self._export_filters(
            self.sql, runs=o.runs, layers=o.layers, sites=o.sites, models=o.models
        )
        check_filters(table_spec(table), filters, _FILTER_ARGS)
        return export_table(self.snapshot, table, target, filters, o.progress)

    @takes_options(DatasetOptions)
    def export_dataset(self, out: str | Path, options: DatasetOptions | None = None, **overrides):
        """Write ``run``'s stored vectors of ``sites`` at ``layers`` as a Hugging Face
        ``datasets`` dataset (``save_to_disk``) in the new directory ``out``, float32, one column
        per TransformerLens hook (``blocks.19.hook_resid_mid``). ``layout="tokens"``: a row per
        token with ``run``, ``prompt``, ``pos``, ``token_id``; ``"saelens"``: SAELens's
        cached-activation layout (rows of ``context_size`` tokens, ``token_ids``). Returns the
        dataset. See :mod:`actwh.warehouse.hf_dataset`.

        >>> wh.export_dataset("sae-data", run="base", sites="resid_mid", layers=19,
        ...                   layout="saelens", context_size=128)
        """
        from actwh.arguments import names, parse_layers
        from actwh.warehouse.hf_dataset import export_dataset

        o = DatasetOptions.given(options, overrides)
        run = cast(str, o.run)  # a required option: DatasetOptions refuses None
        target = outside(out, "out")
        found = self.sql("select model from runs where name = $r", {"r": run})
        if found.is_empty():
            raise NotFound(f"{arg('run')} {run}: no such run")
        n_layers = self.sql(
            "select n_layers from models where name = $m", {"m": found["model"][0]}
        ).item()
        chosen = parse_layers(o.layers, n_layers)
        sites = names(o.sites or ())
        if not sites:
            raise BadInput(f"{arg('sites')}: no site given (e.g. resid_mid, mlp_post)")
        points = [(site, layer) for site in sites for layer in chosen]
        return export_dataset(
            self.sql, target, run, points, o.layout, o.context_size, progress=o.progress
        )

    def _export_filters(self, sql, **filters) -> dict[str, list]:
        """Export filters by column: ``runs`` → ``run``; a name or a list, layers as usual;
        ``sql`` answers the name checks."""
        from actwh.arguments import names, parse_layers

        columns: dict[str, list] = {}
        for name, value in filters.items():
            if value is None:
                continue
            if name == "layers":
                most = sql("select coalesce(max(n_layers), 0) from models").item()
                columns["layer"] = parse_layers(value, most)
            else:
                columns[name.removesuffix("s")] = names(value)
        for column, table in (("run", "runs"), ("model", "models")):
            known = set(sql(f"select name from {table}")["name"])
            unknown = [v for v in columns.get(column, []) if v not in known]
            if unknown:
                listing = ", ".join(sorted(known, key=natural_key)) or "none"
                raise NotFound(f"{arg(table)} {unknown[0]}: no such {column} ({table}: {listing})")
        return columns

    def resolve_direction(self, name: str, model: str | None = None) -> tuple[str, np.ndarray]:
        """Direction ``name`` as ``model`` sees it: its own, else its nearest ancestor's (the
        SQL macro ``direction_of``); without a model, the only direction of that name.
        Returns ``(model, vector)``; kept with the snapshot (a page asks on every view)."""
        found, vector = self.snapshot.once(
            ("resolve_direction", name, model), lambda: self._resolve_direction(name, model)
        )
        return found, vector.copy()

    def _resolve_direction(self, name: str, model: str | None) -> tuple[str, np.ndarray]:
        if model is None:
            owners = self.sql("select model from directions where name = $n", {"n": name})
            if owners.height != 1:
                known = self.sql("select distinct name from directions")["name"].to_list()
                if owners.height == 0:
                    raise NotFound(
                        f"no direction {name!r} (known: "
                        f"{', '.join(sorted(known, key=natural_key)) or 'none'})"
                    )
                raise ActwhError(
                    f"direction {name!r} exists for several models "
                    f"({', '.join(sorted(owners['model']))}); pass {arg('model')}"
                )
            model = owners.item()
        found = self.sql("select vec from direction_of($m, $n)", {"m": model, "n": name})
        if found.height == 0:
            from actwh.warehouse.registry import unknown_direction

            known = self.sql(
                "select d.name from directions d join lineage($m) l using (model)", {"m": model}
            )["name"].to_list()
            raise unknown_direction(name, model, known)
        return model, np.array(found["vec"][0], dtype=np.float32)

    def direction(self, name: str, *, model: str | None = None) -> np.ndarray:
        """A registered direction as a float32 vector ``[d_model]`` (see
        :meth:`resolve_direction`).

        >>> wh.direction("toxic_probe")
        """
        return self.resolve_direction(name, model)[1]

    def vector_tokens(
        self, model: str, vector: np.ndarray, k: int = 10
    ) -> tuple[list, list] | None:
        """What ``vector`` (``[d_model]``, e.g. a value vector) writes into the vocabulary: the
        ``k`` tokens +vector promotes most and the ``k`` −vector promotes most, best first, read
        through ``model``'s stored readout (as the SQL function ``vector_tokens``); None where
        the model has no readout (a warehouse written before there was one).

        >>> v = wh.vectors("value_vectors", model=m, layer=29, neuron=263)[0][0]
        >>> promoted, suppressed = wh.vector_tokens(m, v)
        """
        return self.snapshot.readouts.both_ways(model, np.asarray(vector, np.float32), k)

    @takes_options(SearchOptions)
    def search(
        self, direction: str | np.ndarray, options: SearchOptions | None = None, **overrides
    ) -> pl.DataFrame:
        """The neurons whose value vectors can write most along a direction (FAISS; exact by
        default): by cosine for GELU MLPs (the paper's Table 1), by |cosine| for gated ones.

        ``direction``: a direction's name, a vector ``[d_model]`` or a batch ``[q, d]``.
        Returns ``query, rank, layer, neuron, cosine, sign, norm, top_tokens``: ``sign`` is the
        sign of the coefficient m that writes toward the direction, ``top_tokens`` those of
        ``sign · v``. With ``run``, also ``frac_pos, mean_pos, mean_neg, mean_write``: how each
        neuron fires over the run's generated tokens (see :func:`actwh.warehouse.search.nearest`).

        >>> wh.search("toxic_probe", k=10, run="base", layers=range(20, 30))
        """
        from actwh.arguments import parse_layers
        from actwh.warehouse.search import load_index, nearest  # faiss, on first use

        o = SearchOptions.given(options, overrides)
        model, layers = o.model, o.layers
        if isinstance(direction, str):
            model, vector = self.resolve_direction(direction, model)
        else:
            vector = np.asarray(direction, dtype=np.float32)
            if model is None:
                models = self.sql("select model from vector_indexes")["model"].to_list()
                if len(models) != 1:
                    raise ActwhError(
                        f"pass {arg('model')}: value vectors are stored for {models or 'no model'}"
                    )
                model = models[0]
        if layers is not None:
            n_layers = self.sql("select n_layers from models where name = $m", {"m": model})
            layers = parse_layers(layers, n_layers["n_layers"][0] if n_layers.height else 0)
        if model not in self._indexes:
            self._indexes[model] = load_index(self.snapshot, model)
        index = self._indexes[model]
        hits = nearest(self.snapshot, index, model, vector, o.k, layers, o.run, o.tokens)
        return _frame(hits)

    @property
    def engine(self):
        """A SQLAlchemy ``Engine`` on the catalog (read-only), for tools that speak SQLAlchemy.

        Keep connections short: a DuckDB catalog held open blocks writers.
        """
        return self.store.catalog._read_engine


def _frame(data: pa.Table | pa.RecordBatch) -> pl.DataFrame:
    """A polars DataFrame of an Arrow table (``pl.from_arrow`` is typed to return a Series too)."""
    return cast(pl.DataFrame, pl.from_arrow(data))


def natural_sort(frame: pl.DataFrame, *columns: str) -> pl.DataFrame:
    """Rows ordered by ``columns`` with numbers inside names compared as numbers."""
    keys = [[natural_key(str(v)) for v in frame[c].to_list()] for c in columns]
    order = sorted(range(frame.height), key=lambda i: [k[i] for k in keys])
    return frame[order] if order else frame


def polars_type(sql_type: str) -> pl.DataType:
    """The polars type of a fact table's column type (from its one Arrow type)."""
    return pl.Series(pa.array([], arrow_type(sql_type))).dtype


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n} TB"


INGEST_HINT = "make one with actwh ingest (a run) or actwh variant (a model)"
DIRECTION_HINT = "make one with actwh train-probe or actwh directions add"
SCORER_HINT = "score a run with actwh score, or a model with actwh evaluate"
DELTA_HINT = "make them with actwh directions add WH dx --delta BASE TUNED"
TOKEN_HINT = "ingest with --logit-lens K --target-tokens TOKENS (stored as typed: mind the space)"


def _check_captured(params: dict, run: str, config: RunConfig) -> None:
    """The layer, site and neuron a query reads must be what ``run`` stored (its config)."""
    layers = config.layers
    layer, neuron, site = params.get("layer"), params.get("neuron"), params.get("site")
    if layer is not None and layers is not None and layer not in layers:
        raise NotFound(f"{arg('layer')} {layer}: run {run} stored layers {_spans(layers)}")
    sites = {*config.project, *config.capture}
    if site is not None and sites and site not in sites:
        raise unknown(f"site of run {run}", site, sites)
    if neuron is not None and layer is not None:
        tracked = config.track_neurons.get(layer, [])
        if "mlp_post" not in config.capture and neuron not in tracked:
            raise NotFound(
                f"{arg('neuron')} {layer}:{neuron}: run {run} neither tracked it nor captured "
                f"mlp_post (tracked at layer {layer}: {tracked or 'none'})"
            )


def _spans(layers: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``0-2, 5``."""
    spans: list[list[int]] = []
    for layer in sorted(layers):
        if spans and layer == spans[-1][1] + 1:
            spans[-1][1] = layer
        else:
            spans.append([layer, layer])
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in spans)
