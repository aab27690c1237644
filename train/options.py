"""DPO's options, the paper's Table 8 as defaults: the one declaration of ``actwh train-dpo``'s
flags and of what ``Warehouse.train_dpo`` takes. Nothing here imports torch."""

from __future__ import annotations

from dataclasses import dataclass

from actwh.arguments import option


@dataclass
class DPOOptions:
    beta: float = option(0.1, "DPO's β: how far the policy may move from the reference.")
    learning_rate: float = option(1e-6, "Learning rate.", aliases=("--lr",))
    optimizer: str = option("rmsprop", "Any optimizer name transformers' Trainer accepts.")
    batch_size: int = option(4, "Pairs per step.")
    gradient_accumulation_steps: int = option(1, "Batches per optimizer step.")
    max_grad_norm: float = option(10.0, "Gradient clipping norm.")
    val_fraction: float = option(0.1, "Share of the pairs held out for validation.")
    patience: int = option(10, "Evaluations without a better validation loss before stopping.")
    eval_every: int = option(25, "Steps between validation evaluations.")
    epochs: float = option(1.0, "Passes over the training pairs.")
    max_steps: int | None = option(None, "Stop after this many steps (overrides --epochs).")
    warmup_steps: int = option(0, "Steps of linear warm-up (the paper's code: 150).")
    max_length: int = option(128, "Prompt + completion tokens.")
    seed: int = option(42, "Random seed (the validation split, the pairs' order, training).")
    # TRL turns it on by default; for models that fit, it only costs time.
    gradient_checkpointing: bool = option(
        False, "Recompute activations in the backward pass (saves memory, costs time)."
    )
