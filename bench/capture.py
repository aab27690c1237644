"""(b) Full-vector capture: actwh vs nnsight + torch.save (what a researcher would do by hand).

Both capture ``resid_mid`` and ``mlp_post`` at every layer for every token of prompt and
continuation (20 greedy tokens) of the same prompts:

* by hand — ``model.generate`` per batch, then an nnsight trace over the finished sequences
  (``post_attention_layernorm.input`` and ``mlp.down_proj.input`` of every layer, read in
  execution order), saved per batch with ``torch.save`` as float32 padded tensors plus the mask;
* actwh — ``actwh ingest --capture resid_mid,mlp_post`` (float16 Parquet, zstd, padding dropped,
  plus tokens, generations and projections on one direction).

Tokens/s is tokens of prompt + continuation over wall time (generation included in both);
bytes are what lands on disk. Run: ``python -m bench.capture`` (needs ``pip install nnsight``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from actwh.ingest.options import IngestOptions
from actwh.ingest.prompts import PromptSet, read_prompts, shipped_prompts
from actwh.ingest.worker import ingest
from actwh.models.loading import load_model
from bench.ingest import generated_batches
from bench.report import record, table


def by_hand(
    loaded, prompts: PromptSet, out: Path, generate: int, batch_size: int
) -> tuple[float, int]:
    from nnsight import LanguageModel

    lm = LanguageModel(loaded.model, tokenizer=loaded.tokenizer)
    pad = loaded.tokenizer.pad_token_id
    layers = loaded.model.model.layers
    tokens = 0
    started = time.perf_counter()
    batches = generated_batches(loaded, prompts, generate, batch_size)
    for index, (padded, ids) in enumerate(batches):
        mask = torch.cat([padded.mask, (ids[:, padded.ids.shape[1] :] != pad).long()], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        mids, posts = [], []
        with (
            torch.inference_mode(),
            lm.trace(input_ids=ids, attention_mask=mask, position_ids=positions),
        ):
            for layer in range(len(layers)):
                mids.append(lm.model.layers[layer].post_attention_layernorm.input.save())
                posts.append(lm.model.layers[layer].mlp.down_proj.input.save())
        torch.save(
            {
                "input_ids": ids,
                "attention_mask": mask,
                "resid_mid": torch.stack([m.float() for m in mids]),
                "mlp_post": torch.stack([p.float() for p in posts]),
            },
            out / f"batch{index:04d}.pt",
        )
        tokens += int(mask.sum())
    return time.perf_counter() - started, tokens


def size(path: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in path.rglob(pattern))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    loaded = load_model(args.model, device=args.device)
    shipped = read_prompts(shipped_prompts())
    prompts = PromptSet("bench", shipped.source, shipped.prompts[: args.prompts])
    hand_times, ours_times = [], []
    for _ in range(args.repeats):  # alternate the two, so drift hits both alike
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "pt").mkdir()
            seconds, hand_tokens = by_hand(loaded, prompts, tmp / "pt", 20, 8)
            hand_times.append(seconds)
            hand_bytes = size(tmp / "pt", "*.pt")
            started = time.perf_counter()
            options = IngestOptions(
                name="full", generate=20, capture="resid_mid,mlp_post", progress=False
            )
            summary = ingest(str(tmp / "wh"), loaded, prompts, options)
            ours_times.append(time.perf_counter() - started)
            vector_bytes = size(tmp / "wh" / "data" / "residuals", "*.parquet") + size(
                tmp / "wh" / "data" / "mlp_acts", "*.parquet"
            )
            all_bytes = size(tmp / "wh", "*")
    hand_seconds, ours_seconds = statistics.median(hand_times), statistics.median(ours_times)
    per = lambda b, n: f"{b / n / 1024:.1f}"  # noqa: E731
    rows = [
        {
            "method": "by hand: generate + nnsight trace + torch.save (fp32, padded)",
            "tokens": f"{hand_tokens:,}",
            "tokens/s": f"{hand_tokens / hand_seconds:,.0f}",
            "MiB on disk": f"{hand_bytes / 2**20:,.0f}",
            "KiB / token": per(hand_bytes, hand_tokens),
        },
        {
            "method": "actwh ingest --capture resid_mid,mlp_post (fp16 Parquet)",
            "tokens": f"{summary.n_tokens:,}",
            "tokens/s": f"{summary.n_tokens / ours_seconds:,.0f}",
            "MiB on disk": f"{vector_bytes / 2**20:,.0f} (vectors); {all_bytes / 2**20:,.0f} (whole warehouse)",
            "KiB / token": per(vector_bytes, summary.n_tokens),
        },
    ]
    speed = (summary.n_tokens / ours_seconds) / (hand_tokens / hand_seconds)
    body = (
        f"{args.model} on {loaded.device}, {len(prompts.prompts)} shipped prompts × 20 greedy tokens, batch 8, "
        f"resid_mid and mlp_post at all {loaded.adapter.n_layers} layers "
        f"(d_model {loaded.adapter.d_model}, d_mlp {loaded.adapter.d_mlp}). "
        f"Median of {args.repeats} alternating runs each (by hand {', '.join(f'{x:.1f}' for x in hand_times)} s; "
        f"actwh {', '.join(f'{x:.1f}' for x in ours_times)} s). The by-hand token count excludes padding; "
        "its files hold padding too. Both count an EOS token the same way except that the by-hand mask "
        "drops a generated EOS, which equals the pad id here.\n\n"
        + table(rows)
        + f"\n\nactwh captures at {speed:.2f}× the by-hand rate and stores {hand_bytes / vector_bytes:.1f}× fewer bytes, "
        "queryable in SQL without loading a file into memory."
    )
    record(
        f"capture-{loaded.device.type}",
        f"(b) Full-vector capture vs nnsight + torch.save ({loaded.device.type})",
        body,
    )


if __name__ == "__main__":
    main()
