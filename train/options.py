"""The options of the commands the training layer runs — ``make-pairs``, ``train-dpo`` (the
paper's Table 8 as defaults), ``train-probe``, ``evaluate``, ``score`` — each the one declaration
of its command's flags and its method's keywords (see ``Options`` in :mod:`actwh.arguments`).
Nothing here imports torch."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from actwh.arguments import Options, device_option, option, progress_option
from actwh.warehouse.layout import PROBE

SCORER_HELP = "profanity, wordlist, detoxify or perspective."
GENERATE_HELP = "Greedy tokens to generate per prompt."


@dataclass
class PairOptions(Options):
    """How ``actwh make-pairs`` makes DPO preference pairs (a cheap stand-in for PPLM)."""

    prompts: str | Path | None = option(None, "Prompt file (default: the shipped set).")
    direction: str = option(PROBE, "The direction steered toward.")
    layer: int | None = option(
        None, "Layer whose output is steered (default: 2/3 of the depth).", at_least=0
    )
    alpha: float | None = option(
        None, "Steering strength (default: --relative-alpha × median residual norm there)."
    )
    relative_alpha: float = option(0.3, "Steering strength relative to the residual norm.")
    scorer: str = option("profanity", SCORER_HELP)
    min_margin: float = option(
        0.05,
        "Keep a pair only if the steered continuation scores this much above the greedy one.",
        at_least=0,
    )
    generate: int = option(20, GENERATE_HELP, at_least=1)
    max_prompt_tokens: int = option(64, "Keep the first N prompt tokens.", at_least=1)
    batch_size: int = option(8, "Prompts per forward pass.", at_least=1)
    seed: int = option(0, "Random seed of the steered sampling.", at_least=0)
    device: str = device_option()
    force: bool = option(False, "Replace --out if it exists.")
    progress: bool = progress_option()


@dataclass
class DPOOptions(Options):
    """How ``actwh train-dpo`` tunes a model: the paper's Table 8."""

    beta: float = option(0.1, "DPO's β: how far the policy may move from the reference.", above=0)
    learning_rate: float = option(1e-6, "Learning rate.", aliases=("--lr",), above=0)
    optimizer: str = option("rmsprop", "Any optimizer name transformers' Trainer accepts.")
    batch_size: int = option(4, "Pairs per step.", at_least=1)
    gradient_accumulation_steps: int = option(1, "Batches per optimizer step.", at_least=1)
    max_grad_norm: float = option(10.0, "Gradient clipping norm.", above=0)
    val_fraction: float = option(
        0.1, "Share of the pairs held out for validation.", at_least=0, at_most=0.9
    )
    patience: int = option(
        10, "Evaluations without a better validation loss before stopping.", at_least=1
    )
    eval_every: int = option(25, "Steps between validation evaluations.", at_least=1)
    epochs: float = option(1.0, "Passes over the training pairs.", above=0)
    max_steps: int | None = option(
        None, "Stop after this many steps (overrides --epochs).", at_least=1
    )
    warmup_steps: int = option(0, "Steps of linear warm-up (the paper's code: 150).", at_least=0)
    max_length: int = option(128, "Prompt + completion tokens.", at_least=2)
    seed: int = option(
        42, "Random seed (the validation split, the pairs' order, training).", at_least=0
    )
    # TRL turns it on by default; for models that fit, it only costs time.
    gradient_checkpointing: bool = option(
        False, "Recompute activations in the backward pass (saves memory, costs time)."
    )
    name: str | None = option(
        None, "Name to register the tuned model under (default: the --out directory's name)."
    )
    device: str = device_option()
    progress: bool = progress_option()


@dataclass
class ProbeOptions(Options):
    """How ``actwh train-probe`` trains the linear toxicity probe."""

    data: str | Path | None = option(
        None,
        "Jigsaw-style CSV (comment_text, toxic) or JSONL (text, label); default: the shipped "
        "corpus.",
    )
    site: Literal["resid_pre", "resid_mid", "resid_post", "final"] = option(
        "resid_post", "final: after the final norm (HF hidden_states[-1])."
    )
    layer: int | None = option(None, "Default: the last layer.", at_least=0)
    name: str = option(PROBE, "Name of the direction to register.")
    replace: bool = option(False, "Overwrite a direction of that name.")
    batch_size: int = option(16, "Texts per forward pass.", at_least=1)
    seed: int = option(0, "Seed of the 90:10 split.", at_least=0)
    device: str = device_option()
    progress: bool = progress_option()


@dataclass
class EvaluateOptions(Options):
    """What ``actwh evaluate`` measures: toxicity, perplexity and F1 (paper Tables 2 and 4)."""

    prompts: str | Path | None = option(None, "Prompts for toxicity (default: the shipped set).")
    prompt_set: str | None = option(
        None, "Name to register the prompt set under (default: the file's stem)."
    )
    scorer: str | Iterable[str] = option(
        "profanity", SCORER_HELP + " With several, scores with each."
    )
    generate: int = option(20, GENERATE_HELP, at_least=1)
    max_prompt_tokens: int = option(
        32, "Keep the first N prompt tokens (the paper's code: 32).", at_least=1
    )
    ppl_text: str | Path | None = option(
        None,
        "Text for perplexity (default: the shipped encyclopedia text; Wikitext-2's test split "
        "for the paper's setting).",
    )
    f1_data: str | Path | None = option(
        None,
        "JSONL with prompt and gold, or a text (default: the shipped text, each sentence split "
        "in two).",
    )
    n_f1: int = option(200, "At most this many F1 samples.", at_least=1)
    batch_size: int = option(
        64,
        "Prompts (and F1 samples) per forward pass: decoding is faster in big batches.",
        at_least=1,
    )
    device: str = device_option()
    progress: bool = progress_option()


@dataclass
class ScoreOptions(Options):
    scorer: str = option("profanity", SCORER_HELP)
