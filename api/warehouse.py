"""What a :class:`~actwh.api.warehouse.Warehouse` writes: the study's steps as typed methods.

Each method checks its input, does its work through the layer that owns it (``ingest`` runs
models, ``train`` trains and scores, ``warehouse`` owns the bytes and the catalog) and refreshes
the warehouse's snapshot, so the object shows what it wrote. Errors name the method's arguments
(``teacher_force``); the CLI shows them as its flags (``--teacher-force``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Union, cast

import numpy as np

from actwh.api.reads import Reads
from actwh.arguments import checks_arguments, exactly_one, layer_neuron, takes_options
from actwh.errors import ActwhError, AlreadyExists, BadInput, NotFound, arg
from actwh.ingest.options import DiffOptions, IndexOptions, IngestOptions, LaunchOptions
from actwh.ingest.prompts import PromptSet
from actwh.models.options import VariantOptions
from actwh.train.options import DPOOptions, EvaluateOptions, PairOptions, ProbeOptions, ScoreOptions
from actwh.warehouse.options import (
    CheckOptions,
    CompactOptions,
    DirectionOptions,
    RehomeOptions,
)
from actwh.warehouse.store import Store

if TYPE_CHECKING:  # the heavy types, for annotations only
    from actwh.ingest.batches import RunSummary
    from actwh.models.interventions import Edit
    from actwh.models.loading import LoadedModel
    from actwh.train.pairs import PairStats
    from actwh.warehouse.check import CheckReport
    from actwh.warehouse.compact import CompactReport

# A model given to a method: a registered name, a source (``embedded``, a hub id, a local
# directory, a ``.gguf`` file) or a model already loaded with :meth:`Warehouse.load_model`.
ModelRef = Union[str, Path, "LoadedModel"]  # noqa: UP007 - "LoadedModel" is imported lazily


def write(method: Callable) -> Callable:
    """Declares a :class:`Warehouse` method a write: when it returns (or fails), the next read
    takes a new snapshot, so the object always shows its own writes."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        finally:
            self.refresh()

    wrapper.__write__ = True  # type: ignore[attr-defined]
    return wrapper


def commits(method: Callable) -> Callable:
    """Declares that a write commits data files: when it returns (or fails), the Spark logs of
    the tables it changed are published (:mod:`actwh.warehouse.spark_log`) and files retired
    longer ago than their grace period are deleted (:mod:`actwh.warehouse.retired`)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        finally:
            if self._store is None:  # the write may have made the warehouse
                self._store = Store.existing(self.root)
            if self._store is not None:
                self._tidy()

    return wrapper


@checks_arguments
class Warehouse(Reads):
    """A warehouse on disk: one object that reads it (:class:`~actwh.api.reads.Reads`) and
    writes to it (this class; each write is marked ``@write``).

    **What a read sees.** Queries see a snapshot of what was committed when the first read after
    opening (or after the last write through this object) ran; a commit landing meanwhile is
    never half-visible. Every write method refreshes the snapshot when it returns, so this object
    always shows its own writes; call :meth:`refresh` to see writes made by other processes.

    Write methods take a model (:data:`ModelRef`) as a registered name, a source (``embedded``,
    a hub id, a local directory, a ``.gguf`` file) or a model already loaded with
    :meth:`load_model`.

    Examples
    --------
    >>> import actwh
    >>> wh = actwh.open("wh/", create=True)
    >>> wh.ingest("embedded", generate=20, capture=["resid_mid"], name="base")
    >>> wh.sql("select layer, count(*) as n from residuals group by layer order by layer")
    >>> wh.scan("tokens").filter(pl.col("is_generated")).collect()
    """

    # ---- models -----------------------------------------------------------------------------

    def load_model(
        self,
        model: str | Path,
        *,
        device: str = "auto",
        dtype: str = "float32",
        name: str | None = None,
    ) -> LoadedModel:
        """Load a registered model by name (a variant with its edit applied), or a source
        (``embedded``, a hub id, a directory, a ``.gguf`` file) under ``name``. Registers
        nothing; pass the result to other methods to load it once.

        >>> base = wh.load_model("embedded")
        """
        from actwh.ingest.registry import open_model

        return open_model(self._store, model, device=device, dtype=dtype, name=name)[0]

    def _model(self, model, device: str = "auto") -> LoadedModel:
        from actwh.models.loading import LoadedModel

        return model if isinstance(model, LoadedModel) else self.load_model(model, device=device)

    def _registered(self, model, device: str = "auto", **registration) -> LoadedModel:
        from actwh.ingest.registry import ensure_registered

        loaded = self._model(model, device)
        ensure_registered(self.store, loaded, **registration)
        return loaded

    # ---- capture ----------------------------------------------------------------------------

    @write
    @commits
    @takes_options(IngestOptions)
    def ingest(
        self,
        model: ModelRef,
        prompts: str | Path | PromptSet | None = None,
        options: IngestOptions | None = None,
        launch: LaunchOptions | None = None,
        **overrides,
    ) -> RunSummary:
        """Run ``model`` over ``prompts`` (a JSONL/text file or a PromptSet; default the shipped
        set) or replay run ``teacher_force``'s tokens, and store what happens inside it.

        ``options`` (or its fields as keywords) are :class:`~actwh.ingest.options.IngestOptions`
        (the same as ``actwh ingest``'s flags), in Python spellings: ``capture=["resid_mid",
        "mlp_post"]`` (sites whose full vectors are stored), ``layers=range(10, 20)``,
        ``track_neurons=[(19, 770)]`` or ``"toxic_probe:64"``, ``logit_lens=5`` ... An
        unfinished run of the same name is resumed; a new warehouse is made only once the input
        is checked. ``launch``: :class:`~actwh.ingest.options.LaunchOptions` —
        ``shard=(i, N)`` takes every N-th batch (run N workers at once); ``ray=True`` launches
        one worker per GPU of a Ray cluster.

        >>> wh.ingest("embedded", name="base", capture=["resid_mid"], logit_lens=5)
        >>> wh.ingest("./dpo", name="dpo", teacher_force="base", capture=["resid_mid"])
        """
        from actwh.ingest.prompts import read_prompts, shipped_prompts

        settings = IngestOptions.given(options, overrides)
        launch = LaunchOptions.given(launch, {})
        if prompts is None and not settings.teacher_force:
            prompts = shipped_prompts()
        # What can be checked without the model is checked before torch is even imported.
        if isinstance(prompts, str | Path) and not launch.ray:
            prompts = read_prompts(prompts, settings.prompt_set)
        self._check_depth(model, settings.layers)
        from actwh.ingest.worker import ingest

        if launch.ray:
            return self._ingest_with_ray(model, prompts, settings, launch)
        source = str(model) if isinstance(model, Path) else model
        where = self._store or self.root
        return ingest(
            where, source, prompts, settings, shard=launch.shard, catalog=self._catalog_url
        )

    def _check_depth(self, model: ModelRef, layers) -> None:
        """``layers`` against the model's depth where it is known without loading it: a
        registered model's catalog row, or the config.json of a shipped or local model."""
        from actwh.arguments import parse_layers
        from actwh.models.shipped import check_source_name, n_layers_of

        if not isinstance(model, str | Path):
            return
        row = self._store.catalog.get("models", name=str(model)) if self._store else None
        if row is None and isinstance(model, str):
            check_source_name(model)  # a typo is said before torch is imported
        n_layers = row["n_layers"] if row is not None else n_layers_of(str(model))
        if n_layers is not None:
            parse_layers(layers, n_layers)

    def _ingest_with_ray(self, model, prompts, settings, launch: LaunchOptions) -> RunSummary:
        from actwh.ingest.ray_launcher import ingest_with_ray

        if launch.shard:
            raise BadInput(f"{arg('ray')} assigns the shards itself; do not pass {arg('shard')}")
        if not isinstance(prompts, str | Path | None) or not isinstance(model, str):
            raise BadInput(f"{arg('ray')} takes the model and the prompts as names or paths")
        return ingest_with_ray(
            str(self.root),
            model,
            None if prompts is None else str(prompts),
            settings,
            workers=launch.workers,
            address=launch.ray_address,
        )

    @write
    @commits
    @takes_options(IndexOptions)
    def index_vectors(
        self, model: ModelRef, options: IndexOptions | None = None, **overrides
    ) -> dict:
        """Store every MLP value vector of ``model`` (rows of W_out) with its norm, index them
        with FAISS (``index``: ``flat`` is exact; ``ivf``, ``hnsw`` approximate), and store the
        readout that turns a vector into the tokens it promotes (``index/MODEL.readout.npy`` and
        the ``vocabulary`` table; queries read tokens through it with ``vector_tokens``).
        ``unembed``: read tokens from W_U·v (``raw``) or through the final norm's gain
        (``final_norm``); default raw for GPT-2, final_norm for gated models. Returns the
        ``vector_indexes`` row.

        >>> wh.index_vectors("embedded")
        """
        from actwh.ingest.value_index import store_value_vectors

        settings = IndexOptions.given(options, overrides)
        return store_value_vectors(self.store, self._model(model, settings.device), settings)

    # ---- directions -------------------------------------------------------------------------

    @write
    @takes_options(ProbeOptions)
    def train_probe(
        self, model: ModelRef, options: ProbeOptions | None = None, **overrides
    ) -> dict:
        """Train the linear toxicity probe (logistic regression on the mean over tokens of
        ``site`` at ``layer``, default the last; 90:10 split) on ``data`` (Jigsaw-style CSV or
        JSONL; default the shipped corpus) and register it as direction ``name``. Returns the
        direction's row; its ``meta`` holds the accuracies.

        >>> wh.train_probe("embedded")["meta"]
        """
        from actwh.train.probe import train_probe

        settings = ProbeOptions.given(options, overrides)
        return train_probe(self.store, self._registered(model, settings.device), settings)

    @write
    @takes_options(DirectionOptions)
    def add_direction(
        self, name: str, options: DirectionOptions | None = None, **overrides
    ) -> dict | list[dict]:
        """Register direction ``name`` of ``model`` from exactly one source, and return its row
        (δx: a row per layer):

        - ``vector``: an array ``[d_model]``, or a ``.npy``/``.npz``/``.pt``/``.txt`` file;
        - ``value_vector=(layer, neuron)`` (or ``"19:770"``): the value vector MLP.v_neuron^layer
          (stored by :meth:`index_vectors`);
        - ``svd_of=DIRECTION``: the ``component``-th left singular vector of the ``k`` value
          vectors nearest it (each layer's best ``per_layer`` first: the paper's code, 100),
          oriented toward it;
        - ``delta=(BASE_RUN, TUNED_RUN)``: δx per layer — the mean over paired tokens of
          ``tuned − base`` at ``site`` (default: the site the MLP reads, resid_mid; resid_pre
          for GPT-NeoX) and ``layers`` (default: every layer both runs store) over the prompts
          of ``arm`` (plain, an encoding such as rot13, chat, or all) — as directions
          ``NAME.LAYER`` of ``model`` (default: the base run's model). The runs must hold the
          same tokens (a teacher-forced pair) and store ``site``'s vectors;
        - ``random=True``: a random Gaussian direction (``seed``), a baseline.

        >>> wh.add_direction("probe", model="smollm2-135m-instruct", vector="probe.npy")
        >>> wh.add_direction("dx", delta=("base", "dpo"))
        """
        o = DirectionOptions.given(options, overrides)
        source = exactly_one(
            vector=o.vector,
            value_vector=o.value_vector,
            svd_of=o.svd_of,
            delta=o.delta,
            random=o.random or None,
        )
        if o.delta is not None:
            return self._delta_directions(name, *o.delta, o)
        if o.svd_of is not None:
            return self._svd_direction(name, o.svd_of, o)
        if o.model is None:
            raise BadInput(f"{arg(source)} needs {arg('model')}")
        if o.value_vector is not None:
            from actwh.warehouse.search import value_vectors

            layer, neuron = layer_neuron(o.value_vector, "value_vector")
            found = value_vectors(self.snapshot, o.model, [(layer, neuron)])[0]
            meta: dict = {"layer": layer, "neuron": neuron}
            return self._add_vector(name, found, o.model, "value_vector", meta, o.replace)
        if o.random:
            from actwh.warehouse.registry import model_row

            d_model = model_row(self.store.catalog, o.model)["d_model"]
            drawn = np.random.default_rng(o.seed).standard_normal(d_model).astype(np.float32)
            return self._add_vector(name, drawn, o.model, "random", {"seed": o.seed}, o.replace)
        if isinstance(o.vector, str | Path):
            from actwh.ingest.vector_files import read_vector

            meta = {"file": str(o.vector)}
            return self._add_vector(name, read_vector(o.vector), o.model, "file", meta, o.replace)
        return self._add_vector(name, o.vector, o.model, "vector", None, o.replace)

    def _add_vector(self, name, vector, model, kind, meta, replace) -> dict:
        from actwh.warehouse.directions import add_direction

        return add_direction(self.store, model, name, vector, kind=kind, meta=meta, replace=replace)

    def _svd_direction(self, name: str, svd_of: str, o: DirectionOptions) -> dict:
        from actwh.warehouse.directions import svd_from_index
        from actwh.warehouse.search import load_index

        owner, source = self.resolve_direction(svd_of, o.model)
        vector, meta = svd_from_index(
            self.snapshot,
            load_index(self.snapshot, owner),
            owner,
            source,
            top=o.k,
            component=o.component,
            per_layer=o.per_layer,
        )
        meta["source"] = svd_of
        return self._add_vector(name, vector, owner, "svd", meta, o.replace)

    def _delta_directions(
        self, name: str, base_run: str, tuned_run: str, o: DirectionOptions
    ) -> list[dict]:
        from actwh.arguments import parse_layers
        from actwh.warehouse.directions import DeltaMeta, add_direction, delta_directions
        from actwh.warehouse.registry import model_row

        owner = (
            o.model
            or self.sql("select any_value(model) from runs where name = $r", {"r": base_run}).item()
        )
        chosen = None
        if o.layers is not None:
            n_layers = model_row(self.store.catalog, owner)["n_layers"] if owner else 0
            chosen = parse_layers(o.layers, n_layers)
        site = o.site or self.sql("select mlp_input($r)", {"r": base_run}).item()
        deltas = delta_directions(self.snapshot, base_run, tuned_run, site, chosen, o.arm)
        added = []
        for layer, vector in deltas.items():
            meta: DeltaMeta = {
                "base_run": base_run,
                "tuned_run": tuned_run,
                "site": site,
                "layer": layer,
                "arm": o.arm,
            }
            added.append(
                add_direction(
                    self.store,
                    owner,
                    f"{name}.{layer}",
                    vector,
                    kind="delta",
                    meta=meta,
                    replace=o.replace,
                )
            )
        return added

    def direction_tokens(
        self, name: str, *, model: str | None = None, k: int = 10
    ) -> tuple[list[str], str]:
        """The ``k`` vocabulary tokens direction ``name`` promotes most, read as the model's
        value vectors were (``raw``, or through the ``final_norm``), and which of the two. From
        the stored readout when the model's vectors are indexed (no torch, no model), else from
        the model."""
        from actwh.arguments import check_range

        check_range("k", k, {"at_least": 1})
        owner, vector = self.resolve_direction(name, model)
        stored = self.store.catalog.get("vector_indexes", model=owner)
        if stored is not None and stored["readout"]:
            found = self.sql(
                f"select vector_tokens($m, $v::FLOAT[{len(vector)}], 1, $k) as words",
                {"m": owner, "v": vector.tolist(), "k": k},
            )
            return list(found["words"][0]), stored["unembed"] or "raw"
        import torch

        from actwh.ingest.rows import TokenText
        from actwh.models.value_vectors import top_tokens

        loaded = self.load_model(owner)
        check_range("k", k, {"at_most": loaded.adapter.vocab_size})
        index = self.store.catalog.get("vector_indexes", model=owner)
        # As the model's value vectors were read (an index from before the choice: raw).
        unembed = (index["unembed"] or "raw") if index else loaded.adapter.default_unembed
        best, _ = top_tokens(loaded.adapter, torch.tensor(vector)[None], k, unembed)
        return TokenText(loaded.tokenizer)(best[0].tolist()), unembed

    # ---- preference pairs, DPO --------------------------------------------------------------

    @takes_options(PairOptions)
    def make_pairs(
        self, model: ModelRef, out: str | Path, options: PairOptions | None = None, **overrides
    ) -> PairStats:
        """Write DPO preference pairs to ``out`` (JSONL): the greedy continuation (preferred)
        against one sampled while ``direction`` is added to layer ``layer``'s output
        (dispreferred; strength ``alpha``, default ``relative_alpha`` × the median residual
        norm there), kept where ``scorer`` rates the steered one more toxic by at least
        ``min_margin``. Returns the counts and the margins of the kept pairs. An existing
        ``out`` is replaced only with ``force``."""
        from actwh.ingest.prompts import read_prompts, shipped_prompts
        from actwh.train.pairs import make_pairs, write_pairs
        from actwh.train.scorers import get_scorer
        from actwh.warehouse.layout import output_file

        o = PairOptions.given(options, overrides)
        output_file(out, "out", force=o.force)
        prompt_set = read_prompts(o.prompts or shipped_prompts())
        loaded = self._model(model, o.device)
        vector = self.resolve_direction(o.direction, loaded.name)[1]
        texts = [p.text for p in prompt_set.prompts]
        kept, stats = make_pairs(loaded, texts, vector, get_scorer(o.scorer), o)
        write_pairs(kept, out)
        return stats

    @takes_options(DPOOptions)
    def train_dpo(
        self,
        base: ModelRef,
        pairs: str | Path,
        out: str | Path,
        options: DPOOptions | None = None,
        **overrides,
    ) -> dict:
        """Fine-tune ``base`` with DPO (TRL) on the pairs file, save it to ``out`` and register
        it as ``name`` (default: ``out``'s directory name), role ``dpo``, parent ``base``.
        ``options`` default to the paper's Table 8. Returns the training metrics, with the
        registered ``model`` and its ``parent``.

        >>> wh.train_dpo("embedded", "pairs.jsonl", "dpo-model", name="dpo",
        ...              learning_rate=1e-5, epochs=2)
        """
        from actwh.train.dpo import train_dpo
        from actwh.train.pairs import read_pairs
        from actwh.warehouse.layout import check_name, outside

        o = DPOOptions.given(options, overrides)
        outside(out, "out")
        loaded_pairs = read_pairs(pairs)
        name = check_name("model", o.name or Path(out).resolve().name)
        if self._store is not None and self._store.catalog.get("models", name=name) is not None:
            raise AlreadyExists(
                f"a model named {name!r} already exists in {self.root}; pass {arg('name')}"
            )
        loaded = self._model(base, o.device)
        metrics = train_dpo(loaded, loaded_pairs, out, o)
        self.register_dpo(out, name=name, base=loaded, device=o.device)
        return {**metrics, "model": name, "parent": loaded.name}

    @write
    def register_dpo(
        self, out: str | Path, *, name: str, base: ModelRef, device: str = "auto"
    ) -> dict:
        """Register a model saved by DPO training (its ``actwh_dpo.json`` records how) as
        ``name``, role ``dpo``, parent ``base``."""
        from actwh.models.loading import load_model

        record = json.loads((Path(out) / "actwh_dpo.json").read_text())
        base = self._registered(base, device)
        tuned = load_model(str(Path(out).resolve()), device=device, name=name)
        self._registered(tuned, role="dpo", parent=base.name, config=record)
        return self.store.catalog.get("models", name=name)

    # ---- variants ---------------------------------------------------------------------------

    @write
    @takes_options(VariantOptions)
    def variant(
        self,
        name: str,
        base: ModelRef | None = None,
        options: VariantOptions | None = None,
        **overrides,
    ) -> dict:
        """Register a derived model ``name`` — an intervention the rest of actwh treats like any
        model — from exactly one recipe:

        - ``subtract=DIRECTION``: ``base`` with ``scale`` × the direction subtracted from layer
          ``layer``'s MLP output (default the last; paper §3.3);
        - ``unalign=DIRECTION``: ``base`` with the key vectors of ``k`` neurons scaled by
          ``scale`` (paper §6). ``keys="cosine"``: the neurons whose write points most along
          the direction — by the cosine of each neuron's mean write m̄·v in ``run`` (needed for
          gated MLPs, whose coefficients are signed), without a run by the cosine of v (the
          paper's rule, GELU; each layer's best ``per_layer`` first); ``keys=
          "selectivity:LABELS"``: the neurons of ``run`` that write the direction most
          selectively on toxic contexts (the ``selectivity`` query's largest t, labels e.g.
          ``score:profanity``). ``one_sided``: scale m_i only at the tokens where it writes
          toward the direction (sign(m_i) = sign⟨v_i, d⟩);
        - ``control_of=VARIANT``: a control for an un-aligned variant — as many keys, in the
          same layers, chosen at random (``seed``), the same base (``base``, when given, must
          be it), scaled by the same factor (``match="scale"``) or by a factor per layer that
          adds as much write as the edit does there (``match="write"``: mean |m|·‖v‖ of each
          key in the run the edit chose its keys in, times s − 1). A one-sided edit's control
          is one-sided.

        >>> wh.variant("unaligned", base="dpo", unalign="toxic_probe", scale=10, run="dpo")
        >>> wh.variant("unaligned-control", control_of="unaligned", match="write")
        """
        o = VariantOptions.given(options, overrides)
        recipe = exactly_one(subtract=o.subtract, unalign=o.unalign, control_of=o.control_of)
        o.check_applies(recipe)
        if o.control_of is not None:
            return self._control_variant(name, o.control_of, base, o)
        if base is None or o.scale is None:
            raise BadInput(f"{arg(recipe)} needs {arg('base')} MODEL and {arg('scale')}")
        if o.subtract is not None:
            return self._subtract_variant(name, base, o.subtract, o.scale, o)
        return self._unalign_variant(name, base, cast(str, o.unalign), o.scale, o)

    def _subtract_variant(self, name, base, direction, scale, o: VariantOptions) -> dict:
        from actwh.ingest.registry import register_variant
        from actwh.models.interventions import subtract_recipe

        loaded, layer = self._model(base, o.device), o.layer
        vector = self.resolve_direction(direction, loaded.name)[1]
        n_layers = loaded.adapter.n_layers
        layer = n_layers - 1 if layer is None else layer
        if not 0 <= layer < n_layers:
            raise ActwhError(f"{arg('layer')} {layer}: the model has {n_layers} layers")
        edit = subtract_recipe(direction, vector, layer, scale)
        return register_variant(self.store, name, loaded, edit)

    def _unalign_variant(self, name, base, direction, scale, o: VariantOptions) -> dict:
        from actwh.ingest.registry import register_variant
        from actwh.models.interventions import key_signs, unalign_keys, unalign_recipe

        loaded, keys, run = self._model(base, o.device), o.keys, o.run
        vector = self.resolve_direction(direction, loaded.name)[1]
        if keys == "cosine":
            try:
                chosen = unalign_keys(
                    self.store, loaded, vector, o.k, per_layer=o.per_layer, run=run
                )
            except ActwhError as error:
                raise ActwhError(f"{arg('unalign')} {direction}: {error.template}") from None
        elif keys.startswith("selectivity:"):
            chosen = self._selective_keys(run, direction, keys.partition(":")[2], o.k)
        else:
            raise ActwhError(f"{arg('keys')} {keys!r}: expected cosine or selectivity:LABELS")
        signs = key_signs(loaded, chosen, vector) if o.one_sided else None
        edit = unalign_recipe(direction, chosen, scale, run, chosen_by=keys, signs=signs)
        return register_variant(self.store, name, loaded, edit)

    def _selective_keys(self, run: str | None, direction: str, labels: str, k: int) -> list:
        """The ``k`` neurons of ``run`` with the largest selectivity t toward ``direction``
        (only those with t > 0)."""
        import polars as pl

        if run is None:
            raise ActwhError(
                f"{arg('keys')} selectivity:{labels} needs the run whose neurons are compared "
                "(--run RUN: a run with tracked neurons or captured mlp_post, and its labels)"
            )
        ranked = self.query(
            "selectivity", run=run, direction=direction, labels=labels, permutations=0
        )
        top = ranked.filter(pl.col("t") > 0).head(k)
        if top.height < k:
            raise ActwhError(
                f"{arg('keys')} selectivity:{labels}: run {run!r} has {top.height} neurons that "
                f"write {direction} more on toxic contexts, fewer than {arg('k')} {k}"
            )
        return [(int(l), int(n)) for l, n in top.select("layer", "neuron").iter_rows()]

    def _control_variant(self, name: str, of: str, base, o: VariantOptions) -> dict:
        from actwh.ingest.registry import register_variant
        from actwh.models.interventions import control_recipe, key_signs, unaligning

        original = self.store.catalog.get("models", name=of)
        if original is None:
            raise NotFound(f"{arg('control_of')} {of}: no such model")
        edit = unaligning(json.loads(original["config"] or "{}").get("edit"), of)
        if base is not None and getattr(base, "name", base) != original["parent"]:
            raise BadInput(f"{arg('control_of')} {of}: its base is {original['parent']}")
        loaded = self._model(original["parent"], o.device)
        sizes = self._write_sizes(loaded, edit) if o.match == "write" else None

        def signs_of(keys):
            vector = self.resolve_direction(edit["direction"], loaded.name)[1]
            return key_signs(loaded, keys, vector)

        edit = control_recipe(edit, of, original["d_mlp"], o.seed, sizes, signs_of)
        return register_variant(self.store, name, loaded, edit, role="control")

    def _write_sizes(self, loaded, edit: Edit | None) -> tuple:
        """Two ``[n_layers, d_mlp]`` arrays: each neuron's mean max(m, 0) and mean max(−m, 0) in
        the run the edit chose its keys in, times the norm of what it writes (0 where it never
        fired)."""
        import torch

        from actwh.warehouse.search import mean_sides

        run = edit.get("run") if edit else None
        if not run:
            raise ActwhError(
                f"{arg('match')} write needs the run the un-aligned variant chose its keys in "
                "(actwh variant --unalign ... --run RUN)"
            )
        a = loaded.adapter
        with torch.no_grad():
            norms = np.stack(
                [a.write_vectors(l).float().norm(dim=1).cpu().numpy() for l in range(a.n_layers)]
            )
        sides = mean_sides(self.snapshot, run, a.n_layers, a.d_mlp)
        return tuple(np.nan_to_num(side) * norms for side in sides)

    # ---- measuring --------------------------------------------------------------------------

    @write
    @commits
    @takes_options(EvaluateOptions)
    def evaluate(
        self, model: ModelRef, options: EvaluateOptions | None = None, **overrides
    ) -> list[dict]:
        """Toxicity of ``model``'s continuations of ``prompts`` (default the shipped set,
        registered as ``prompt_set``, default the file's stem) by each ``scorer``
        (``"profanity"``, ``["profanity", "wordlist"]`` or ``"profanity,wordlist"``),
        perplexity on ``ppl_text`` and F1 on ``f1_data`` (paper Tables 2 and 4); one row per
        scorer in ``evaluations``, returned. Intervals: the query ``toxicity_table``."""
        from actwh.ingest.prompts import read_prompts, shipped_prompts
        from actwh.train.evaluate import evaluate

        o = EvaluateOptions.given(options, overrides)
        chosen = read_prompts(o.prompts or shipped_prompts(), o.prompt_set)
        return evaluate(self.store, self._model(model, o.device), chosen, o)

    @write
    @commits
    @takes_options(ScoreOptions)
    def score(self, run: str, options: ScoreOptions | None = None, **overrides) -> float:
        """Score run ``run``'s continuations into ``scores``; returns their mean."""
        from actwh.train.evaluate import score_run

        return score_run(self.store, run, ScoreOptions.given(options, overrides).scorer)

    @write
    @commits
    @takes_options(DiffOptions)
    def diff(
        self, base: ModelRef, tuned: ModelRef, options: DiffOptions | None = None, **overrides
    ) -> dict:
        """Store per-parameter (``weight_diffs``) and per-value-vector (``value_vector_diffs``:
        cosine, δv) differences of ``tuned`` from ``base`` (paper §5.1, Figure 5's input).
        Returns ``n_parameters``, ``min_cosine``, ``max_norm_diff``, and the two models'
        names."""
        from actwh.ingest.diff import store_weight_diffs

        device = DiffOptions.given(options, overrides).device
        base, tuned = self._model(base, device), self._model(tuned, device)
        params = store_weight_diffs(self.store, base, tuned)
        cosine = [c for c in params.column("cosine").to_pylist() if c is not None]
        return {
            "base": base.name,
            "tuned": tuned.name,
            "n_parameters": params.num_rows,
            "min_cosine": min(cosine),
            "max_norm_diff": max(params.column("norm_diff").to_pylist()),
        }

    # ---- keeping it whole -------------------------------------------------------------------

    @write
    @takes_options(CheckOptions)
    def check(self, options: CheckOptions | None = None, **overrides) -> CheckReport:
        """Verify every committed file against the catalog (exists, rows, sha256), find
        orphans, and check each table's Spark log. ``repair`` deletes orphans and unfinished
        files older than ``grace`` seconds, drops damaged files for the next ingest to redo,
        writes stale Spark logs again and deletes retired files past their grace period; it
        refuses (unless ``force``) when files are missing rather than damaged or more than 3
        commits would go."""
        from actwh.warehouse.check import check

        o = CheckOptions.given(options, overrides)
        report = check(self.store, o)
        if o.repair:
            self._tidy()
        return report

    @write
    @takes_options(CompactOptions)
    def compact(self, options: CompactOptions | None = None, **overrides) -> CompactReport:
        """Merge each partition's small files (under half of ``target_mb``) into files of about
        ``target_mb``, one catalog transaction per partition; the merged files stay on disk for
        ``grace`` seconds for readers that started before. Every query answers as before.

        >>> wh.compact(tables="residuals", runs="base", target_mb=512)
        """
        from actwh.warehouse.compact import compact

        o = CompactOptions.given(options, overrides)
        report = compact(self.store, o)
        report.deleted = self._tidy(o.grace)
        return report

    def _tidy(self, grace: float | None = None) -> list[str]:
        """After a write that committed or retired files: publish the Spark logs that changed,
        delete the files retired longer ago than ``grace`` seconds (default: a day); returns
        those."""
        from actwh.warehouse.retired import RETIRED_GRACE, delete_retired
        from actwh.warehouse.spark_log import publish

        publish(self.store)
        return delete_retired(self.store, RETIRED_GRACE if grace is None else grace)

    @write
    @takes_options(RehomeOptions)
    def rehome(self, options: RehomeOptions | None = None, **overrides) -> str | None:
        """Make this directory the one its server catalog (PostgreSQL, ...) serves, after the
        warehouse was moved; returns the directory it served before, and writes the Spark logs
        again (they name files by where they are). A copy is refused (it needs a catalog of its
        own) unless ``force``."""
        before = self.store.rehome(force=RehomeOptions.given(options, overrides).force)
        self._tidy()
        return before
