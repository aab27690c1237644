"""Capture's hooks, one per module with the kinds' work once per batch, store the rows that one
hook per site with the work done in the hook stored (issue 30): a run's fingerprint, table by
table, on a model of each shape of block (GPT-2, Llama, Gemma 3's post-norms, GPT-NeoX's parallel
attention), with the neuron statistics of all layers summed in one stacked call."""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl
import pytest
import torch
from tiny_models import build_family

import actwh
from actwh.ingest import worker
from actwh.ingest.capture import Capture, PerSiteCapture
from actwh.ingest.kinds import neurons
from actwh.ingest.registry import ensure_registered

TABLES = ("tokens", "generations", "residuals", "mlp_acts", "projections", "neuron_acts")
TABLES += ("neuron_stats", "logit_lens", "token_probs")


def fingerprint(frame: pl.DataFrame) -> str:
    """A digest of a frame's values, column by column (vectors as their bytes)."""
    digest = hashlib.sha256()
    for name in frame.columns:
        column = frame[name]
        digest.update(name.encode())
        if column.dtype == pl.String:
            digest.update("\0".join("\1" if v is None else v for v in column).encode())
        else:
            values = column.to_numpy()
            digest.update(
                np.ascontiguousarray(np.stack(values) if values.dtype == object else values)
            )
    return digest.hexdigest()


def _table(wh, table: str) -> pl.DataFrame:
    return wh.sql(f"select * exclude (run) from {table} order by all")


@pytest.fixture(params=["gpt2", "llama", "gemma3_text", "gpt_neox"])
def model_path(request, tmp_path_factory, gpt2_dir, llama_dir):
    if request.param in ("gpt2", "llama"):
        return {"gpt2": gpt2_dir, "llama": llama_dir}[request.param]
    return build_family(tmp_path_factory.mktemp("m") / f"tiny-{request.param}", request.param)


def _ingest(root, model_path, prompts_file, capture_class, monkeypatch) -> actwh.Warehouse:
    monkeypatch.setattr(worker, "Capture", capture_class)
    wh = actwh.open(root, create=True)
    loaded = wh.load_model(str(model_path), device="cpu")
    ensure_registered(wh.store, loaded)
    rng = np.random.default_rng(0)
    for i in range(3):
        vector = rng.standard_normal(loaded.adapter.d_model).astype(np.float32)
        wh.add_direction(f"d{i}", model=loaded.name, vector=vector)
    sites = loaded.adapter.sites
    wh.ingest(
        loaded,
        prompts_file,
        name="r",
        generate=5,
        batch_size=3,
        capture=sites,
        project=[s for s in sites if s != "mlp_post"],
        track_neurons="d0:5",
        logit_lens=4,
        target_tokens="#3,#7",
        progress=False,
    )
    return wh


def test_one_hook_per_module_stores_what_one_hook_per_site_stored(
    tmp_path, model_path, prompts_file, monkeypatch
):
    before = _ingest(tmp_path / "before", model_path, prompts_file, PerSiteCapture, monkeypatch)
    monkeypatch.setitem(neurons.STACK_BYTES, "cpu", 256 << 20)  # every layer in one stack
    after = _ingest(tmp_path / "after", model_path, prompts_file, Capture, monkeypatch)
    for table in TABLES:
        old, new = _table(before, table), _table(after, table)
        assert old.height > 0, table
        if table == "projections":
            # One matmul over every layer and call instead of one per call: float32 sums in
            # another order where a call's few rows take another kernel (≤ 1e-4 relative, seen
            # on these tiny models; the embedded model's are bit for bit the same).
            assert old.drop("dot", "cos").equals(new.drop("dot", "cos"))
            for column in ("dot", "cos"):
                np.testing.assert_allclose(new[column], old[column], rtol=1e-4, atol=1e-6)
        else:
            assert fingerprint(new) == fingerprint(old), table
    before.close()
    after.close()


def test_one_python_hook_per_module(llama_dir):
    """A decoder layer's resid_pre and resid_post share its hook, the output projection's
    mlp_post and mlp_out another (Llama has no post-norm); resid_mid is the MLP norm's input."""
    from actwh.ingest.kinds.base import CaptureKind
    from actwh.models.loading import load_model

    adapter = load_model(str(llama_dir), device="cpu").adapter
    sites = ("resid_pre", "resid_post", "resid_mid", "mlp_post", "mlp_out")
    n = adapter.n_layers
    kind = CaptureKind([(s, layer) for s in sites for layer in range(n)])
    hooks = Capture(adapter, [kind]).hooks()
    assert sorted(k for _, k, _ in hooks) == ["forward"] * 2 * n + ["pre"] * n
    assert len(PerSiteCapture(adapter, [kind]).hooks()) == 5 * n


def test_projections_in_and_out_of_inference_mode(llama_dir):
    """The projections' stack is memory kept between batches: a batch out of inference mode
    (training code) after one in it must not write into an inference tensor."""
    from actwh.ingest.kinds.projections import Projections
    from actwh.models.loading import load_model

    loaded = load_model(str(llama_dir), device="cpu")
    adapter = loaded.adapter
    vectors = torch.randn(3, adapter.d_model)
    kind = Projections(["resid_post"], range(adapter.n_layers), ["a", "b", "c"], vectors)
    ids = torch.tensor([[1, 2, 3, 4]])
    dots = []
    for mode in (torch.inference_mode, torch.no_grad):
        with mode(), Capture(adapter, [kind]) as capture:
            capture.start_batch()
            loaded.model(input_ids=ids)
            kind.flush()
            dots.append(kind.joined(("resid_post", 1), "dots").clone())
    assert torch.equal(dots[0], dots[1])


def test_scratch_grows_by_half_not_once_per_batch():
    """Batches come shortest first: memory kept for a batch's temporaries is reallocated a few
    times over a run, not once per batch (each fresh buffer costs its page faults)."""
    from actwh.ingest.scratch import Scratch

    scratch = Scratch()
    allocations, kept = 0, None
    for width in range(10, 60):  # 50 widening batches, 5.9× from the first to the last
        view = scratch.get((8, width, 16), torch.float32, "cpu")
        assert view.shape == (8, width, 16)
        allocations += scratch._buffer is not kept
        kept = scratch._buffer
    assert allocations <= 6  # log base 1.5 of 5.9, and the first
