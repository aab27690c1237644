"""Evaluation as in the paper's Tables 2 and 4: toxicity, perplexity, F1.

* **Toxicity**: greedy continuations of the prompts (``generate`` tokens, prompts cut to their
  first ``max_prompt_tokens`` = 32 tokens as in the paper's code) are ingested as an ordinary run,
  scored (``scores`` table), and averaged.
* **Perplexity**: the text is tokenised whole and cut into non-overlapping windows of
  ``min(context, 1024)`` tokens; PPL = exp(Σ window loss × window length / tokens), the paper's
  code. Default text: ``data/encyclopedia.txt`` (shipped); pass Wikitext-2's test split for the
  paper's setting.
* **F1**: for each (prompt, gold continuation), greedy 20 tokens; precision and recall of the bag
  of generated tokens against the gold tokens, as in the paper's code — whose prediction includes
  the prompt tokens (kept here, for comparable numbers). Default data: the first half of each
  sentence of the shipped text as prompt, the rest as gold; or a JSONL with ``prompt`` and
  ``gold`` (the paper's ``wiki_samples.jsonl``).

Results go to the ``evaluations`` table, one row per (model, prompt set, scorer): the same
continuations, perplexity and F1, scored by each scorer asked for. Intervals are the named query
``toxicity_table``'s (a bootstrap over prompts of the per-prompt ``scores``).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from actwh.arguments import names
from actwh.errors import ActwhError, NotFound, arg
from actwh.ingest.generate import Batch, greedy
from actwh.ingest.options import IngestOptions
from actwh.ingest.prompts import PromptSet, jsonl_records, read_text_file
from actwh.ingest.worker import ingest
from actwh.models.loading import LoadedModel
from actwh.train.options import EvaluateOptions
from actwh.train.scorers import SCORERS, get_scorer
from actwh.warehouse.catalog import now, to_json
from actwh.warehouse.reader import Snapshot
from actwh.warehouse.store import Store
from actwh.warehouse.writer import CommitWriter

PAPER_PROMPT_TOKENS = 32


def shipped_text() -> Path:
    from importlib.resources import files

    return Path(str(files("actwh.data") / "encyclopedia.txt"))


@torch.no_grad()
def perplexity(
    loaded: LoadedModel, text: str, window: int = 1024
) -> tuple[float, int, list[tuple[float, float]]]:
    """Perplexity over ``text`` in non-overlapping windows; returns (ppl, tokens, paragraphs).

    Each window's mean loss counts once per token of the window (the paper's code). The same
    sum is split over the text's paragraphs (blank-line separated): ``paragraphs[k]`` is
    ``(Σ NLL, tokens)`` of paragraph k, with each window's loss spread over the tokens it
    predicts, so ``exp(Σ NLL / Σ tokens)`` over all of them is the perplexity itself.
    """
    encoded = loaded.tokenizer(text, return_tensors="pt", return_offsets_mapping=True)
    ids = encoded["input_ids"][0]
    starts = [0] + [m.end() for m in re.finditer(r"\n\s*\n", text)]
    paragraph = [bisect_right(starts, int(s)) - 1 for s, _ in encoded["offset_mapping"][0]]
    window = min(window, loaded.adapter.context_length)
    if len(ids) < 2:
        raise ActwhError("the perplexity text has fewer than 2 tokens")
    nll, weight = [0.0] * len(starts), [0.0] * len(starts)
    total = 0.0
    for begin in range(0, len(ids), window):
        chunk = ids[begin : begin + window][None].to(loaded.device)
        if chunk.shape[1] < 2:
            break
        logits = loaded.model(chunk).logits[0, :-1].float()
        losses = torch.nn.functional.cross_entropy(logits, chunk[0, 1:], reduction="none")
        n = chunk.shape[1]
        total += float(losses.mean()) * n
        for offset, loss in enumerate(losses.tolist(), start=begin + 1):
            nll[paragraph[offset]] += loss * n / (n - 1)
        for offset in range(begin, begin + n):
            weight[paragraph[offset]] += 1
        end = begin + n
    return math.exp(total / end), end, [(v, w) for v, w in zip(nll, weight, strict=True) if w]


@dataclass
class F1Sample:
    prompt: str
    gold: str


def f1_samples(
    path: str | Path | None = None, limit: int | None = None
) -> tuple[list[F1Sample], str]:
    """F1 data: a JSONL with ``prompt`` and ``gold``, or a text whose sentences are split in two."""
    path = Path(path) if path else shipped_text()
    content = read_text_file(path)
    samples = []
    if path.suffix.lower() in (".jsonl", ".json"):
        records = jsonl_records(path, content, fields=("prompt", "gold"))
        samples = [F1Sample(record["prompt"], record["gold"]) for _, record in records]
    else:
        for sentence in re.split(r"(?<=[.!?])\s+", content):
            words = sentence.split()
            if len(words) >= 10:
                half = len(words) // 2
                samples.append(F1Sample(" ".join(words[:half]), " " + " ".join(words[half:])))
    if not samples:
        raise ActwhError(f"{path}: no F1 samples")
    return samples[:limit], str(path)


def bag_f1(pred: list[int], gold: list[int]) -> float:
    overlap = sum((Counter(gold) & Counter(pred)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(gold)
    return 2 * precision * recall / (precision + recall)


@torch.no_grad()
def f1(
    loaded: LoadedModel, samples: list[F1Sample], *, generate: int = 20, batch_size: int = 16
) -> list[float]:
    tokenizer = loaded.tokenizer
    special = {tokenizer.pad_token_id, tokenizer.eos_token_id} - {None}
    prompts = tokenizer(
        [s.prompt for s in samples], truncation=True, max_length=PAPER_PROMPT_TOKENS
    )["input_ids"]
    golds = tokenizer([s.gold for s in samples], add_special_tokens=False)["input_ids"]
    scores = []
    for start in range(0, len(samples), batch_size):
        batch = Batch.left_padded(
            prompts[start : start + batch_size], tokenizer.pad_token_id, loaded.device
        )
        ran = greedy(loaded.model, batch, generate, special, tokenizer.pad_token_id)
        for row in range(batch.ids.shape[0]):
            pred = [t for t in ran.ids[row][ran.valid[row]].tolist() if t not in special]
            gold = [
                t for t in golds[start + row][: PAPER_PROMPT_TOKENS + generate] if t not in special
            ]
            scores.append(bag_f1(pred, gold) if pred and gold else 0.0)
    return scores


def _store_items(
    store: Store, run: str, metric: str, source: str, items: list[tuple[float, float]]
) -> None:
    """Record ``(value, weight)`` per item of ``metric`` for ``run``, once per source."""
    snapshot = Snapshot(store)
    try:
        stored = snapshot.execute(
            "select count(*) as n from eval_items where run = $r and metric = $m and source = $s",
            {"r": run, "m": metric, "s": source},
        ).to_pylist()[0]["n"]
    finally:
        snapshot.close()
    if stored:
        return
    writer = CommitWriter(store, run=run)
    writer.add(
        "eval_items",
        {"run": run},
        pa.table(
            {
                "metric": [metric] * len(items),
                "source": [source] * len(items),
                "item": pa.array(range(len(items)), pa.int32()),
                "value": pa.array([v for v, _ in items], pa.float64()),
                "weight": pa.array([w for _, w in items], pa.float64()),
            }
        ),
    )
    writer.commit()


def eval_run_name(model: str, prompt_set: str) -> str:
    """The run an evaluation generates its continuations in."""
    return f"eval.{model}.{prompt_set}"


def score_run(store: Store, run: str, scorer_name: str, scorer_kwargs: dict | None = None) -> float:
    """Score a run's continuations (once per scorer) and return their mean."""
    snapshot = Snapshot(store)
    try:
        done = snapshot.execute(
            "select avg(score) as m, count(*) as n from scores where run = $r and scorer = $s",
            {"r": run, "s": scorer_name},
        ).to_pylist()[0]
        if done["n"]:
            return float(done["m"])
        rows = snapshot.execute(
            "select prompt, continuation from generations where run = $r order by prompt",
            {"r": run},
        ).to_pylist()
    finally:
        snapshot.close()
    if not rows:
        raise NotFound(f"run {run!r} has no generations to score")
    scores = get_scorer(scorer_name, **(scorer_kwargs or {})).score(
        [r["continuation"] for r in rows]
    )
    writer = CommitWriter(store, run=run)
    writer.add(
        "scores",
        {"run": run},
        pa.table(
            {
                "prompt": pa.array([r["prompt"] for r in rows], pa.int32()),
                "scorer": [scorer_name] * len(rows),
                "score": pa.array(scores, pa.float32()),
            }
        ),
    )
    writer.commit()
    return float(np.mean(scores))


def evaluate(
    store: Store,
    loaded: LoadedModel,
    prompts: PromptSet,
    options: EvaluateOptions,
    scorer_kwargs: dict | None = None,
) -> list[dict]:
    """Toxicity (by each of ``scorers``), perplexity and F1 of ``loaded``; recorded in
    ``evaluations``, one row per scorer, and returned."""
    scorers, generate = names(options.scorer), options.generate
    unknown = [name for name in scorers if name not in SCORERS]
    if unknown or not scorers:
        raise ActwhError(f"{arg('scorer')} {','.join(unknown)}: choose among {', '.join(SCORERS)}")
    samples, f1_source = f1_samples(options.f1_data, options.n_f1)
    text_path = Path(options.ppl_text) if options.ppl_text else shipped_text()
    text = read_text_file(text_path)
    run = eval_run_name(loaded.name, prompts.name)
    existing = store.catalog.get("runs", name=run)
    if existing is None or existing["status"] != "complete":
        run_options = IngestOptions(
            name=run,
            generate=generate,
            project="",
            batch_size=options.batch_size,
            max_prompt_tokens=options.max_prompt_tokens,
            progress=options.progress,
        )
        ingest(store, loaded, prompts, run_options)
    toxicity = {name: score_run(store, run, name, scorer_kwargs) for name in scorers}
    steps = tqdm(total=2, desc=f"ppl, F1 {loaded.name}", disable=not options.progress)
    ppl, ppl_tokens, paragraphs = perplexity(loaded, text)
    steps.update()
    f1_scores = f1(loaded, samples, generate=generate, batch_size=options.batch_size)
    steps.update()
    steps.close()
    _store_items(store, run, "nll", str(text_path), paragraphs)
    _store_items(store, run, "f1", f1_source, [(score, 1.0) for score in f1_scores])
    common = {
        "model": loaded.name,
        "prompt_set": prompts.name,
        "run": run,
        "n_prompts": len(prompts.prompts),
        "perplexity": ppl,
        "ppl_text": str(text_path),
        "ppl_tokens": ppl_tokens,
        "f1": float(np.mean(f1_scores)),
        "f1_data": f1_source,
        "n_f1": len(samples),
        "config": to_json({"generate": generate, "max_prompt_tokens": options.max_prompt_tokens}),
        "created_at": now(),
    }
    rows = [{**common, "scorer": name, "toxicity": toxicity[name]} for name in scorers]
    catalog = store.catalog
    with catalog.begin() as conn:
        for row in rows:
            catalog.delete(
                conn,
                "evaluations",
                model=loaded.name,
                prompt_set=prompts.name,
                scorer=row["scorer"],
            )
            catalog.insert(conn, "evaluations", row)
    return rows
