"""The options of the commands the warehouse layer runs (``files``, ``export``,
``export-dataset``, ``search``, ``directions add``, ``check``, ``compact``, ``rehome``), each
the one declaration of its command's flags and its method's keywords (see ``Options`` in
:mod:`actwh.arguments`). Light: nothing here reads a file or imports an engine."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from actwh.arguments import Options, option, progress_option
from actwh.warehouse.layout import RETIRED_GRACE

Layers = str | int | Iterable[int] | None  # all, 19, 10-20, a list or range of layers

LAYERS_HELP = "Only these layers: 19 or 10-20."


@dataclass
class FilesOptions(Options):
    """Which committed files of a table ``actwh files`` lists."""

    runs: str | Iterable[str] | None = option(None, "Only these runs' files.")
    layers: Layers = option(None, LAYERS_HELP)
    models: str | Iterable[str] | None = option(None, "Only these models' files.")


@dataclass
class ExportOptions(Options):
    """Which rows of a table ``actwh export`` writes."""

    runs: str | Iterable[str] | None = option(None, "Only these runs' rows.")
    layers: Layers = option(None, LAYERS_HELP)
    sites: str | Iterable[str] | None = option(None, "Only these sites' rows.")
    models: str | Iterable[str] | None = option(None, "Only these models' rows.")
    progress: bool = progress_option()


@dataclass
class DatasetOptions(Options):
    """What ``actwh export-dataset`` writes: one run's vectors as a Hugging Face dataset."""

    run: str | None = option(None, "The run whose vectors are exported.", required=True)
    sites: str | Iterable[str] | None = option(
        None, "Captured sites: resid_mid, mlp_post, ...", required=True
    )
    layers: Layers = option(None, "19, 10-20, or all.", required=True)
    layout: Literal["tokens", "saelens"] = option(
        "tokens",
        "tokens: a row per token (run, prompt, pos, token_id, a vector per hook); saelens: "
        "rows of --context-size tokens, SAELens's cached-activation layout.",
    )
    context_size: int = option(128, "--layout saelens: tokens a row.", at_least=1)
    progress: bool = progress_option()


@dataclass
class SearchOptions(Options):
    """How ``actwh search`` ranks value vectors against a direction."""

    k: int = option(20, "How many neurons.", aliases=("-k",), at_least=1)
    model: str | None = option(None, "Whose value vectors (default: the direction's model).")
    layers: Layers = option(None, "Only these layers: 19 or 10-20 (default: all).")
    run: str | None = option(
        None,
        "Also show how each neuron fires in this run: share of tokens with m > 0, mean positive "
        "and negative parts of m, and its mean write along the direction.",
    )
    tokens: bool = option(
        True,
        "Show each neuron's norm and top tokens (--no-tokens: the index's ranking alone, without "
        "reading the value vectors: faster).",
    )


@dataclass
class DirectionOptions(Options):
    """Where ``actwh directions add`` takes a direction from: exactly one source."""

    model: str | None = option(None, "The model whose residual space it lives in.")
    vector: np.ndarray | str | Path | None = option(
        None, "One vector: a .npy, .npz, .pt or .txt file (an array, from Python).", metavar="FILE"
    )
    value_vector: tuple[int, int] | str | None = option(
        None, "The value vector MLP.v_NEURON^LAYER.", metavar="LAYER:NEURON"
    )
    svd_of: str | None = option(
        None, "SVD of the value vectors nearest this direction.", metavar="DIRECTION"
    )
    delta: tuple[str, str] | None = option(
        None,
        "δx per layer: mean tuned − base over paired tokens; adds NAME.LAYER for each layer.",
        metavar="BASE_RUN TUNED_RUN",
        nargs=2,
    )
    random: bool = option(False, "A random Gaussian direction (a baseline).")
    k: int = option(128, "--svd-of: how many value vectors.", aliases=("-k",), at_least=1)
    component: int = option(0, "--svd-of: which left singular vector.", at_least=0)
    per_layer: int | None = option(
        None,
        "--svd-of: keep each layer's best K first (the paper's code: 100).",
        at_least=1,
    )
    site: str | None = option(
        None,
        "--delta: the residual site (default: what the MLP reads, resid_mid; resid_pre for "
        "GPT-NeoX).",
    )
    layers: Layers = option(None, "--delta: layers (default: every layer both runs store).")
    arm: str = option(
        "plain",
        "--delta: the prompts averaged over: plain, an encoding (rot13, base64, leet), chat, "
        "or all.",
    )
    seed: int = option(0, "--random: seed.", at_least=0)
    replace: bool = option(False, "Overwrite a direction of the same name.")


@dataclass
class CheckOptions(Options):
    """What ``actwh check`` does beyond verifying."""

    repair: bool = option(
        False, "Delete orphans and unfinished files; drop damaged commits; rewrite stale logs."
    )
    grace: float = option(
        600.0,
        "--repair leaves files younger than this (seconds): a writer may be committing them.",
        at_least=0,
    )
    force: bool = option(
        False,
        "--repair even when files are missing rather than damaged, or more than 3 commits "
        "would be dropped (otherwise it refuses and says what it would drop).",
    )


@dataclass
class CompactOptions(Options):
    """What ``actwh compact`` merges, and into what."""

    tables: str | Iterable[str] | None = option(
        None, "Tables to compact (default: every fact table).", metavar="TABLE,..."
    )
    runs: str | Iterable[str] | None = option(
        None,
        "Only these runs' files (default: every run's, and the models' tables).",
        metavar="RUN,...",
    )
    target_mb: int = option(
        256, "Size of the merged files, MB; files under half of it are merged.", at_least=1
    )
    grace: float = option(
        RETIRED_GRACE,
        "Merged files stay on disk this long (seconds) after they leave the warehouse: a "
        "reader that started before (a notebook's snapshot, a Spark job) may still read them.",
        at_least=0,
    )
    progress: bool = progress_option()


@dataclass
class RehomeOptions(Options):
    force: bool = option(False, "Even if the old directory still holds the warehouse.")


@dataclass
class CatalogOptions(Options):
    """The catalog a new warehouse gets (``actwh init``, and any command that creates one)."""

    catalog: str | None = option(
        None,
        "Catalog database when creating the warehouse: any SQLAlchemy URL (e.g. "
        "postgresql+psycopg://user@host/db); default an embedded DuckDB file.",
        metavar="URL",
    )
