"""What a :class:`~actwh.api.warehouse.Warehouse` writes: the study's steps as typed methods.

Each method checks its input, does its work through the layer that owns it (``ingest`` runs
models, ``train`` trains and scores, ``warehouse`` owns the bytes and the catalog) and refreshes
the warehouse's snapshot, so the object shows what it wrote. Errors name the method's arguments
(``teacher_force``); the CLI shows them as its flags (``--teacher-force``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Union

import numpy as np

from actwh.api.reads import Layers, Reads
from actwh.arguments import checks_arguments, exactly_one, takes_options
from actwh.errors import ActwhError, AlreadyExists, NotFound, arg
from actwh.ingest.options import IngestOptions
from actwh.ingest.prompts import PromptSet
from actwh.warehouse.compact import CompactOptions
from actwh.warehouse.layout import PROBE
from actwh.warehouse.store import Store

if TYPE_CHECKING:  # the heavy types, for annotations only
    from actwh.ingest.batches import RunSummary
    from actwh.models.loading import LoadedModel
    from actwh.report.build import Written
    from actwh.train.options import DPOOptions
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
    @takes_options(IngestOptions, exclude=("catalog",))
    def ingest(
        self,
        model: ModelRef,
        prompts: str | Path | PromptSet | None = None,
        *,
        shard: str | tuple[int, int] | None = None,
        ray: bool = False,
        workers: int | None = None,
        ray_address: str | None = None,
        **options,
    ) -> RunSummary:
        """Run ``model`` over ``prompts`` (a JSONL/text file or a PromptSet; default the shipped
        set) or replay run ``teacher_force``'s tokens, and store what happens inside it.

        The keywords are the fields of :class:`~actwh.ingest.options.IngestOptions` (the same
        as ``actwh ingest``'s flags), in Python spellings: ``capture=["resid_mid", "mlp_post"]``
        (sites whose full vectors are stored), ``layers=range(10, 20)``,
        ``track_neurons=[(19, 770)]`` or ``"toxic_probe:64"``, ``logit_lens=5`` ... An
        unfinished run of the same name is resumed; a new warehouse is made only once the input
        is checked. ``shard=(i, N)`` takes every N-th batch (run N workers at once);
        ``ray=True`` launches one worker per GPU of a Ray cluster (``workers`` CPU workers if
        it has none) at ``ray_address`` (default: a local Ray).

        >>> wh.ingest("embedded", name="base", capture=["resid_mid"], logit_lens=5)
        >>> wh.ingest("./dpo", name="dpo", teacher_force="base", capture=["resid_mid"])
        """
        from actwh.ingest.prompts import shipped_prompts
        from actwh.ingest.worker import ingest

        if prompts is None and not options.get("teacher_force"):
            prompts = shipped_prompts()
        settings = IngestOptions(catalog=self._catalog_url, **options)
        if ray:
            summary = self._ingest_with_ray(model, prompts, settings, shard, workers, ray_address)
        else:
            source = str(model) if isinstance(model, Path) else model
            summary = ingest(self._store or self.root, source, prompts, settings, shard=shard)
        return summary

    def _ingest_with_ray(self, model, prompts, settings, shard, workers, address) -> RunSummary:
        from actwh.ingest.ray_launcher import ingest_with_ray

        if shard:
            raise ActwhError(f"{arg('ray')} assigns the shards itself; do not pass {arg('shard')}")
        if not isinstance(prompts, str | Path | None) or not isinstance(model, str):
            raise ActwhError(f"{arg('ray')} takes the model and the prompts as names or paths")
        return ingest_with_ray(
            str(self.root),
            model,
            None if prompts is None else str(prompts),
            settings,
            workers=workers,
            address=address,
        )

    @write
    @commits
    def index_vectors(
        self,
        model: ModelRef,
        *,
        index: str = "flat",
        unembed: str | None = None,
        replace: bool = False,
        device: str = "auto",
        progress: bool = True,
    ) -> dict:
        """Store every MLP value vector of ``model`` (rows of W_out) with its norm, index them
        with FAISS (``flat`` is exact; ``ivf``, ``hnsw`` approximate), and store the readout
        that turns a vector into the tokens it promotes (``index/MODEL.readout.npy`` and the
        ``vocabulary`` table; queries read tokens through it with ``vector_tokens``).
        ``unembed``: read tokens from W_U·v (``raw``) or through the final norm's gain
        (``final_norm``); default raw for GPT-2, final_norm for gated models. Returns the
        ``vector_indexes`` row.

        >>> wh.index_vectors("embedded")
        """
        from actwh.ingest.value_index import store_value_vectors

        loaded = self._model(model, device)
        row = store_value_vectors(
            self.store,
            loaded,
            kind=index,
            unembed=unembed,
            replace=replace,
            progress=progress,
        )
        return row

    # ---- directions -------------------------------------------------------------------------

    @write
    def train_probe(
        self,
        model: ModelRef,
        *,
        data: str | Path | None = None,
        site: str = "resid_post",
        layer: int | None = None,
        name: str = PROBE,
        replace: bool = False,
        batch_size: int = 16,
        seed: int = 0,
        device: str = "auto",
        progress: bool = True,
    ) -> dict:
        """Train the linear toxicity probe (logistic regression on the mean over tokens of
        ``site`` at ``layer``, default the last; 90:10 split) on ``data`` (Jigsaw-style CSV or
        JSONL; default the shipped corpus) and register it as direction ``name``. Returns the
        direction's row; its ``meta`` holds the accuracies.

        >>> wh.train_probe("embedded")["meta"]
        """
        from actwh.train.probe import train_probe

        loaded = self._registered(model, device)
        row = train_probe(
            self.store,
            loaded,
            data=data,
            site=site,
            layer=layer,
            name=name,
            replace=replace,
            batch_size=batch_size,
            seed=seed,
            progress=progress,
        )
        return row

    @write
    def add_direction(
        self,
        name: str,
        *,
        model: str | None = None,
        vector: np.ndarray | str | Path | None = None,
        value_vector: tuple[int, int] | None = None,
        svd_of: str | None = None,
        delta: tuple[str, str] | None = None,
        random: bool = False,
        top: int = 128,
        component: int = 0,
        per_layer: int | None = None,
        site: str | None = None,
        layers: Layers = None,
        arm: str = "plain",
        seed: int = 0,
        replace: bool = False,
    ) -> dict | list[dict]:
        """Register direction ``name`` of ``model`` from exactly one source, and return its row
        (δx: a row per layer):

        - ``vector``: an array ``[d_model]``, or a ``.npy``/``.npz``/``.pt``/``.txt`` file;
        - ``value_vector=(layer, neuron)``: the value vector MLP.v_neuron^layer (stored by
          :meth:`index_vectors`);
        - ``svd_of=DIRECTION``: the ``component``-th left singular vector of the ``top`` value
          vectors nearest it (each layer's best ``per_layer`` first: the paper's code, 100),
          oriented toward it;
        - ``delta=(BASE_RUN, TUNED_RUN)``: δx per layer — the mean over paired tokens of
          ``tuned − base`` at ``site`` (default: the site the MLP reads, resid_mid; resid_pre
          for GPT-NeoX) and ``layers`` (default: every layer both runs store) over the prompts
          of ``arm`` (plain, an encoding such as rot13, chat, or
          all) — as directions ``NAME.LAYER`` of ``model`` (default: the base run's model). The
          runs must hold the same tokens (a teacher-forced pair) and store ``site``'s vectors;
        - ``random=True``: a random Gaussian direction (``seed``), a baseline.

        >>> wh.add_direction("probe", model="smollm2-135m-instruct", vector="probe.npy")
        >>> wh.add_direction("dx", delta=("base", "dpo"))
        """
        source = exactly_one(
            vector=vector,
            value_vector=value_vector,
            svd_of=svd_of,
            delta=delta,
            random=random or None,
        )
        if delta is not None:
            return self._delta_directions(name, *delta, model, site, layers, arm, replace)
        if svd_of is not None:
            return self._svd_direction(name, svd_of, model, top, component, per_layer, replace)
        if model is None:
            raise ActwhError(f"{arg(source)} needs {arg('model')}")
        if value_vector is not None:
            from actwh.warehouse.search import value_vectors

            layer, neuron = value_vector
            found = value_vectors(self.snapshot, model, [(layer, neuron)])[0]
            meta = {"layer": layer, "neuron": neuron}
            return self._add_vector(name, found, model, "value_vector", meta, replace)
        if random:
            from actwh.warehouse.registry import model_row

            d_model = model_row(self.store.catalog, model)["d_model"]
            drawn = np.random.default_rng(seed).standard_normal(d_model).astype(np.float32)
            return self._add_vector(name, drawn, model, "random", {"seed": seed}, replace)
        if isinstance(vector, str | Path):
            from actwh.ingest.vector_files import read_vector

            return self._add_vector(
                name, read_vector(vector), model, "file", {"file": str(vector)}, replace
            )
        return self._add_vector(name, vector, model, "vector", None, replace)

    def _add_vector(self, name, vector, model, kind, meta, replace) -> dict:
        from actwh.warehouse.directions import add_direction

        return add_direction(self.store, model, name, vector, kind=kind, meta=meta, replace=replace)

    def _svd_direction(self, name, of, model, top, component, per_layer, replace) -> dict:
        from actwh.warehouse.directions import svd_from_index
        from actwh.warehouse.search import load_index

        owner, source = self.resolve_direction(of, model)
        vector, meta = svd_from_index(
            self.snapshot,
            load_index(self.snapshot, owner),
            owner,
            source,
            top=top,
            component=component,
            per_layer=per_layer,
        )
        meta["source"] = of
        return self._add_vector(name, vector, owner, "svd", meta, replace)

    def _delta_directions(
        self, name, base_run, tuned_run, model, site, layers, arm, replace
    ) -> list[dict]:
        from actwh.arguments import parse_layers
        from actwh.warehouse.directions import add_direction, delta_directions
        from actwh.warehouse.registry import model_row

        owner = (
            model
            or self.sql("select any_value(model) from runs where name = $r", {"r": base_run}).item()
        )
        chosen = None
        if layers is not None:
            n_layers = model_row(self.store.catalog, owner)["n_layers"] if owner else 0
            chosen = parse_layers(layers, n_layers)
        site = site or self.sql("select mlp_input($r)", {"r": base_run}).item()
        deltas = delta_directions(self.snapshot, base_run, tuned_run, site, chosen, arm)
        added = []
        for layer, vector in deltas.items():
            meta = {
                "base_run": base_run,
                "tuned_run": tuned_run,
                "site": site,
                "layer": layer,
                "arm": arm,
            }
            added.append(
                add_direction(
                    self.store,
                    owner,
                    f"{name}.{layer}",
                    vector,
                    kind="delta",
                    meta=meta,
                    replace=replace,
                )
            )
        return added

    def direction_tokens(
        self, name: str, *, model: str | None = None, k: int = 10
    ) -> tuple[list[str], str]:
        """The ``k`` vocabulary tokens direction ``name`` promotes most, read as the model's
        value vectors were (``raw``, or through the ``final_norm``), and which of the two.
        Loads the model."""
        import torch

        from actwh.ingest.rows import TokenText
        from actwh.models.value_vectors import top_tokens

        owner, vector = self.resolve_direction(name, model)
        loaded = self.load_model(owner)
        index = self.store.catalog.get("vector_indexes", model=owner)
        # As the model's value vectors were read (an index from before the choice: raw).
        unembed = (index["unembed"] or "raw") if index else loaded.adapter.default_unembed
        best, _ = top_tokens(loaded.adapter, torch.tensor(vector)[None], k, unembed)
        return TokenText(loaded.tokenizer)(best[0].tolist()), unembed

    # ---- preference pairs, DPO --------------------------------------------------------------

    def make_pairs(
        self,
        model: ModelRef,
        out: str | Path,
        *,
        prompts: str | Path | None = None,
        direction: str = PROBE,
        layer: int | None = None,
        alpha: float | None = None,
        relative_alpha: float = 0.3,
        scorer: str = "profanity",
        min_margin: float = 0.05,
        generate: int = 20,
        batch_size: int = 8,
        seed: int = 0,
        device: str = "auto",
        force: bool = False,
        progress: bool = True,
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

        output_file(out, "out", force=force)
        prompt_set = read_prompts(prompts or shipped_prompts())
        loaded = self._model(model, device)
        vector = self.resolve_direction(direction, loaded.name)[1]
        kept, stats = make_pairs(
            loaded,
            [p.text for p in prompt_set.prompts],
            vector,
            get_scorer(scorer),
            layer=layer,
            alpha=alpha,
            relative_alpha=relative_alpha,
            min_margin=min_margin,
            max_new_tokens=generate,
            batch_size=batch_size,
            seed=seed,
            progress=progress,
        )
        write_pairs(kept, out)
        return stats

    def train_dpo(
        self,
        base: ModelRef,
        pairs: str | Path,
        out: str | Path,
        *,
        name: str | None = None,
        options: DPOOptions | None = None,
        device: str = "auto",
        progress: bool = True,
    ) -> dict:
        """Fine-tune ``base`` with DPO (TRL) on the pairs file, save it to ``out`` and register
        it as ``name`` (default: ``out``'s directory name), role ``dpo``, parent ``base``.
        ``options`` default to the paper's Table 8. Returns the training metrics, with the
        registered ``model`` and its ``parent``.

        >>> wh.train_dpo("embedded", "pairs.jsonl", "dpo-model", name="dpo",
        ...              options=DPOOptions(learning_rate=1e-5, epochs=2))
        """
        from actwh.train.dpo import train_dpo
        from actwh.train.options import DPOOptions
        from actwh.train.pairs import read_pairs
        from actwh.warehouse.layout import check_name, outside

        outside(out, "out")
        loaded_pairs = read_pairs(pairs)
        name = check_name("model", name or Path(out).resolve().name)
        if self._store is not None and self._store.catalog.get("models", name=name) is not None:
            raise AlreadyExists(
                f"a model named {name!r} already exists in {self.root}; pass {arg('name')}"
            )
        loaded = self._model(base, device)
        options = options or DPOOptions()
        metrics = train_dpo(loaded, loaded_pairs, out, options, progress=progress)
        self.register_dpo(out, name=name, base=loaded, device=device)
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
    def variant(
        self,
        name: str,
        *,
        base: ModelRef | None = None,
        subtract: str | None = None,
        unalign: str | None = None,
        control_of: str | None = None,
        scale: float | None = None,
        layer: int | None = None,
        top_k: int = 7,
        per_layer: int | None = 100,
        run: str | None = None,
        keys: str = "cosine",
        one_sided: bool = False,
        seed: int = 0,
        match: Literal["scale", "write"] = "scale",
        device: str = "auto",
    ) -> dict:
        """Register a derived model ``name`` — an intervention the rest of actwh treats like any
        model — from exactly one recipe:

        - ``subtract=DIRECTION``: ``base`` with ``scale`` × the direction subtracted from layer
          ``layer``'s MLP output (default the last; paper §3.3);
        - ``unalign=DIRECTION``: ``base`` with the key vectors of ``top_k`` neurons scaled by
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
        recipe = exactly_one(subtract=subtract, unalign=unalign, control_of=control_of)
        if control_of is not None:
            return self._control_variant(name, control_of, seed, match, base, device)
        if base is None or scale is None:
            raise ActwhError(f"{arg(recipe)} needs {arg('base')} MODEL and {arg('scale')}")
        if subtract is not None:
            return self._subtract_variant(name, base, subtract, scale, layer, device)
        how = {"top_k": top_k, "per_layer": per_layer, "run": run, "keys": keys}
        return self._unalign_variant(name, base, unalign, scale, one_sided, device, **how)

    def _subtract_variant(self, name, base, direction, scale, layer, device) -> dict:
        from actwh.ingest.registry import register_variant
        from actwh.models.interventions import subtract_recipe

        loaded = self._model(base, device)
        vector = self.resolve_direction(direction, loaded.name)[1]
        n_layers = loaded.adapter.n_layers
        layer = n_layers - 1 if layer is None else layer
        if not 0 <= layer < n_layers:
            raise ActwhError(f"{arg('layer')} {layer}: the model has {n_layers} layers")
        edit = subtract_recipe(direction, vector, layer, scale)
        return register_variant(self.store, name, loaded, edit)

    def _unalign_variant(
        self, name, base, direction, scale, one_sided, device, *, top_k, per_layer, run, keys
    ) -> dict:
        from actwh.ingest.registry import register_variant
        from actwh.models.interventions import key_signs, unalign_keys, unalign_recipe

        loaded = self._model(base, device)
        vector = self.resolve_direction(direction, loaded.name)[1]
        if keys == "cosine":
            try:
                chosen = unalign_keys(
                    self.store, loaded, vector, top_k, per_layer=per_layer, run=run
                )
            except ActwhError as error:
                raise ActwhError(f"{arg('unalign')} {direction}: {error.template}") from None
        elif keys.startswith("selectivity:"):
            chosen = self._selective_keys(run, direction, keys.partition(":")[2], top_k)
        else:
            raise ActwhError(f"{arg('keys')} {keys!r}: expected cosine or selectivity:LABELS")
        signs = key_signs(loaded, chosen, vector) if one_sided else None
        edit = unalign_recipe(direction, chosen, scale, run, chosen_by=keys, signs=signs)
        return register_variant(self.store, name, loaded, edit)

    def _selective_keys(self, run: str | None, direction: str, labels: str, top_k: int) -> list:
        """The ``top_k`` neurons of ``run`` with the largest selectivity t toward ``direction``
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
        top = ranked.filter(pl.col("t") > 0).head(top_k)
        if top.height < top_k:
            raise ActwhError(
                f"{arg('keys')} selectivity:{labels}: run {run!r} has {top.height} neurons that "
                f"write {direction} more on toxic contexts, fewer than --top-k {top_k}"
            )
        return [(int(l), int(n)) for l, n in top.select("layer", "neuron").iter_rows()]

    def _control_variant(self, name, of, seed, match, base, device) -> dict:
        from actwh.ingest.registry import register_variant
        from actwh.models.interventions import control_recipe, key_signs, unaligning

        original = self.store.catalog.get("models", name=of)
        if original is None:
            raise NotFound(f"{arg('control_of')} {of}: no such model")
        if match not in ("scale", "write"):
            raise ActwhError(f"{arg('match')} {match!r}: expected scale or write")
        edit = unaligning(json.loads(original["config"] or "{}").get("edit"), of)
        if base is not None and getattr(base, "name", base) != original["parent"]:
            raise ActwhError(f"{arg('control_of')} {of}: its base is {original['parent']}")
        loaded = self._model(original["parent"], device)
        sizes = self._write_sizes(loaded, edit) if match == "write" else None

        def signs_of(keys):
            vector = self.resolve_direction(edit["direction"], loaded.name)[1]
            return key_signs(loaded, keys, vector)

        edit = control_recipe(edit, of, original["d_mlp"], seed, sizes, signs_of)
        return register_variant(self.store, name, loaded, edit, role="control")

    def _write_sizes(self, loaded, edit: dict | None) -> tuple:
        """Two ``[n_layers, d_mlp]`` arrays: each neuron's mean max(m, 0) and mean max(−m, 0) in
        the run the edit chose its keys in, times the norm of what it writes (0 where it never
        fired)."""
        import torch

        from actwh.warehouse.search import mean_sides

        if not edit or not edit.get("run"):
            raise ActwhError(
                f"{arg('match')} write needs the run the un-aligned variant chose its keys in "
                "(actwh variant --unalign ... --run RUN)"
            )
        a = loaded.adapter
        with torch.no_grad():
            norms = np.stack(
                [a.write_vectors(l).float().norm(dim=1).cpu().numpy() for l in range(a.n_layers)]
            )
        sides = mean_sides(self.snapshot, edit["run"], a.n_layers, a.d_mlp)
        return tuple(np.nan_to_num(side) * norms for side in sides)

    # ---- measuring --------------------------------------------------------------------------

    @write
    @commits
    def evaluate(
        self,
        model: ModelRef,
        *,
        prompts: str | Path | None = None,
        prompt_set: str | None = None,
        scorer: str | Iterable[str] = "profanity",
        generate: int = 20,
        max_prompt_tokens: int = 32,
        ppl_text: str | Path | None = None,
        f1_data: str | Path | None = None,
        n_f1: int = 200,
        batch_size: int = 16,
        device: str = "auto",
        progress: bool = True,
    ) -> list[dict]:
        """Toxicity of ``model``'s continuations of ``prompts`` (default the shipped set,
        registered as ``prompt_set``, default the file's stem) by each ``scorer``
        (``"profanity"``, ``["profanity", "wordlist"]`` or ``"profanity,wordlist"``),
        perplexity on ``ppl_text`` and F1 on ``f1_data`` (paper Tables 2 and 4); one row per
        scorer in ``evaluations``, returned. Intervals: the query ``toxicity_table``."""
        from actwh.arguments import names
        from actwh.ingest.prompts import read_prompts, shipped_prompts
        from actwh.train.evaluate import evaluate

        chosen = read_prompts(prompts or shipped_prompts(), prompt_set)
        rows = evaluate(
            self.store,
            self._model(model, device),
            chosen,
            scorers=names(scorer),
            generate=generate,
            max_prompt_tokens=max_prompt_tokens,
            batch_size=batch_size,
            ppl_text=ppl_text,
            f1_data=f1_data,
            n_f1=n_f1,
            progress=progress,
        )
        return rows

    @write
    @commits
    def score(self, run: str, *, scorer: str = "profanity") -> float:
        """Score run ``run``'s continuations into ``scores``; returns their mean."""
        from actwh.train.evaluate import score_run

        return score_run(self.store, run, scorer)

    @write
    @commits
    def diff(self, base: ModelRef, tuned: ModelRef, *, device: str = "auto") -> dict:
        """Store per-parameter (``weight_diffs``) and per-value-vector (``value_vector_diffs``:
        cosine, δv) differences of ``tuned`` from ``base`` (paper §5.1, Figure 5's input).
        Returns ``n_parameters``, ``min_cosine``, ``max_norm_diff``."""
        from actwh.ingest.diff import store_weight_diffs

        params = store_weight_diffs(
            self.store, self._model(base, device), self._model(tuned, device)
        )
        cosine = [c for c in params.column("cosine").to_pylist() if c is not None]
        summary = {
            "n_parameters": params.num_rows,
            "min_cosine": min(cosine),
            "max_norm_diff": max(params.column("norm_diff").to_pylist()),
        }
        return summary

    # ---- keeping it whole -------------------------------------------------------------------

    @write
    def check(
        self, *, repair: bool = False, grace: float = 600.0, force: bool = False
    ) -> CheckReport:
        """Verify every committed file against the catalog (exists, rows, sha256), find
        orphans, and check each table's Spark log. ``repair`` deletes orphans and unfinished
        files older than ``grace`` seconds, drops damaged files for the next ingest to redo,
        writes stale Spark logs again and deletes retired files past their grace period; it
        refuses (unless ``force``) when files are missing rather than damaged or more than 3
        commits would go."""
        from actwh.warehouse.check import check

        report = check(self.store, repair=repair, grace=grace, force=force)
        if repair:
            self._tidy()
        return report

    @write
    @takes_options(CompactOptions)
    def compact(self, *, progress: bool = True, **options) -> CompactReport:
        """Merge each partition's small files (under half of ``target_mb``) into files of about
        ``target_mb``, one catalog transaction per partition; the merged files stay on disk for
        ``grace`` seconds for readers that started before. Every query answers as before.

        >>> wh.compact(tables="residuals", runs="base", target_mb=512)
        """
        from actwh.warehouse.compact import compact

        chosen = CompactOptions(**options)
        report = compact(self.store, chosen, progress=progress)
        report.deleted = self._tidy(chosen.grace)
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
    def rehome(self, *, force: bool = False) -> str | None:
        """Make this directory the one its server catalog (PostgreSQL, ...) serves, after the
        warehouse was moved; returns the directory it served before, and writes the Spark logs
        again (they name files by where they are). A copy is refused (it needs a catalog of its
        own) unless ``force``."""
        before = self.store.rehome(force=force)
        self._tidy()
        return before

    def report(
        self,
        out: str | Path,
        *,
        base_run: str | None = None,
        tuned_run: str | None = None,
        direction: str | None = None,
        token: str | None = None,
        layer: int | None = None,
        scorer: str = "profanity",
        neurons: Iterable[tuple[int, int]] = (),
        prompts: Iterable[int] = (),
        force: bool = False,
        progress: bool = True,
    ) -> Written:
        """Write the paper's figures and tables as one offline HTML page (and a PNG per chart
        beside it), with a page per top value vector of the direction and a token-by-token
        view of the prompts tuning changed most; ``neurons`` (``[(19, 770)]``) and ``prompts``
        add more. Every value given must be in the warehouse. ``direction`` defaults to
        ``toxic_probe``; other defaults come from the warehouse: the first teacher-forced pair,
        the first logit-lens target token, the layer of the top toxic value vector. Returns
        the ``page``, the ``charts`` and the ``plan`` (what it chose). Anchors:
        ``#neuron-L19-770``, ``#prompt-12``. An existing file is replaced when it is an actwh
        report (and its charts), otherwise only with ``force``."""
        from actwh.report.build import make_plan, report_files, write_report

        report_files(out, force)
        plan = make_plan(
            self,
            base_run=base_run,
            tuned_run=tuned_run,
            direction=direction,
            token=token,
            layer=layer,
            scorer=scorer,
            neurons=list(neurons),
            prompts=list(prompts),
        )
        return write_report(self, out, plan, force, progress)
