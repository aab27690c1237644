"""The linear toxicity probe W_Toxic (paper §2): logistic regression on a model's residual stream.

Features are the mean over tokens of one residual site at one layer — by default ``resid_post`` of
the last layer, before the final norm (TransformerLens ``blocks.{L-1}.hook_resid_post``); ``final``
reads after the final norm instead (HF ``hidden_states[-1]``, what a PPLM-style discriminator
uses). Padding never enters the mean. A 90:10 split (seeded) gives the validation accuracy.

The classifier is scikit-learn's logistic regression on the raw features (as in the third-party
re-implementation the paper's authors point to; no standardisation), so the registered direction
``w`` satisfies ``P(toxic | x̄) = σ(w · x̄ + b)``: positive means toxic, and ``w`` is what
interventions subtract and searches compare against.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from actwh.errors import BadInput, arg
from actwh.ingest.capture import Capture
from actwh.ingest.generate import Batch, teacher_forced
from actwh.ingest.kinds.vectors import FullVectors
from actwh.ingest.prompts import jsonl_records, read_text_file
from actwh.models.loading import LoadedModel
from actwh.train.options import ProbeOptions
from actwh.warehouse.store import Store

PROBE_SITES = ("resid_pre", "resid_mid", "resid_post", "final")


def read_labeled(path: str | Path) -> tuple[list[str], list[int]]:
    """Texts and 0/1 labels from a Jigsaw-style CSV (``comment_text``, ``toxic``) or JSONL
    (``text``, ``label``). Errors name the file and line."""
    path = Path(path)
    content = read_text_file(path)
    texts, labels = [], []
    if path.suffix.lower() == ".csv":
        # A file object, not a list of lines: a quoted field may span lines (Jigsaw has many).
        reader = csv.DictReader(io.StringIO(content, newline=""))
        missing = {"comment_text", "toxic"} - set(reader.fieldnames or [])
        if missing:
            raise BadInput(
                f"{path}: CSV needs columns comment_text and toxic (missing {sorted(missing)})"
            )
        rows = _csv_rows(path, reader)
    else:
        records = jsonl_records(path, content, fields=("text", "label"))
        rows = ((where, record["text"], record["label"]) for where, record in records)
    for where, text, label in rows:
        try:
            value = int(float(label))
        except (TypeError, ValueError):
            value = -1
        if value not in (0, 1):
            raise BadInput(f"{where}: label must be 0 or 1, got {label!r}")
        if not isinstance(text, str) or not text.strip():
            raise BadInput(f"{where}: empty text")
        texts.append(text)
        labels.append(value)
    if len(set(labels)) < 2:
        raise BadInput(f"{path}: needs examples of both labels (0 and 1)")
    return texts, labels


def _csv_rows(path: Path, reader: csv.DictReader):
    """``(where, text, label)`` per record, ``where`` naming the line the record starts on."""
    start = reader.line_num + 1
    try:
        for row in reader:
            yield f"{path}:{start}", row["comment_text"], row["toxic"]
            start = reader.line_num + 1
    except csv.Error as error:
        raise BadInput(f"{path}:{start}: malformed CSV ({error})") from None


@torch.no_grad()
def mean_features(
    loaded: LoadedModel,
    texts: list[str],
    *,
    site: str = "resid_post",
    layer: int | None = None,
    batch_size: int = 16,
    max_tokens: int = 128,
    progress: bool = False,
) -> np.ndarray:
    """Mean over each text's tokens of ``site`` at ``layer`` (default: the last) → ``[n, d]``."""
    adapter = loaded.adapter
    layer = adapter.n_layers - 1 if layer is None else layer
    if site not in PROBE_SITES:
        raise BadInput(f"{arg('site')} {site}: expected one of {', '.join(PROBE_SITES)}")
    if not 0 <= layer < adapter.n_layers:
        raise BadInput(f"{arg('layer')} {layer}: the model has {adapter.n_layers} layers")
    final = site == "final"
    if final:
        site, layer = "resid_post", adapter.n_layers - 1
    encoded = loaded.tokenizer(texts, truncation=True, max_length=max_tokens)["input_ids"]
    features = []
    vectors = FullVectors([site], [layer])
    with Capture(adapter, [vectors]) as capture:
        for start in tqdm(range(0, len(texts), batch_size), desc="features", disable=not progress):
            batch = Batch.left_padded(
                encoded[start : start + batch_size], loaded.tokenizer.pad_token_id, loaded.device
            )
            capture.start_batch()
            teacher_forced(loaded.model, batch)
            x = vectors.collect()[(site, layer)].float()
            if final:
                x = adapter.final_norm(x)
            mask = batch.mask[..., None].float()
            features.append(((x * mask).sum(1) / mask.sum(1)).cpu().numpy())
    return np.concatenate(features)


@dataclass
class Probe:
    direction: np.ndarray  # [d_model], raw residual space; positive = toxic
    bias: float
    val_accuracy: float
    train_accuracy: float
    n_train: int
    n_val: int


def fit_probe(X: np.ndarray, y: list[int], *, seed: int = 0, val_fraction: float = 0.1) -> Probe:
    """Logistic regression on a stratified ``1 - val_fraction : val_fraction`` split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    labels = np.asarray(y)
    X_train, X_val, y_train, y_val = train_test_split(
        X, labels, test_size=val_fraction, random_state=seed, stratify=labels
    )
    classifier = LogisticRegression(max_iter=5000).fit(X_train, y_train)
    return Probe(
        direction=classifier.coef_[0].astype(np.float32),  # for class 1: positive = toxic
        bias=float(classifier.intercept_[0]),
        val_accuracy=float(classifier.score(X_val, y_val)),
        train_accuracy=float(classifier.score(X_train, y_train)),
        n_train=len(y_train),
        n_val=len(y_val),
    )


def train_probe(store: Store, loaded: LoadedModel, options: ProbeOptions) -> dict:
    """Fit the probe on ``data`` (default: the shipped corpus) and register it as direction
    ``name`` of ``loaded``; returns the direction's row (``meta`` has the accuracies)."""
    from actwh.warehouse.directions import add_direction

    data, site, layer = options.data or shipped_corpus(), options.site, options.layer
    texts, labels = read_labeled(data)
    features = mean_features(
        loaded,
        texts,
        site=site,
        layer=layer,
        batch_size=options.batch_size,
        progress=options.progress,
    )
    result = fit_probe(features, labels, seed=options.seed)
    meta = {
        "data": str(data),
        "site": site,
        "layer": layer if layer is not None else loaded.adapter.n_layers - 1,
        "bias": result.bias,
        "val_accuracy": result.val_accuracy,
        "train_accuracy": result.train_accuracy,
        "n_train": result.n_train,
        "n_val": result.n_val,
    }
    return add_direction(
        store,
        loaded.name,
        options.name,
        result.direction,
        kind="probe",
        meta=meta,
        replace=options.replace,
    )


def shipped_corpus() -> Path:
    """The labeled toxicity corpus that ships with actwh (see data/PROVENANCE.md)."""
    from importlib.resources import files

    return Path(str(files("actwh.data") / "toxicity.jsonl"))
