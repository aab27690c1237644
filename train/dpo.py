"""DPO fine-tuning through TRL's ``DPOTrainer``, with the paper's Table 8 as defaults.

Table 8: β 0.1, learning rate 1e-6, RMSprop, batch 4, gradient accumulation 1, max grad norm 10,
early stopping on validation loss with patience 10. The validation split is 10% of the pairs
(the paper's answer to the PaperBench authors; its code used the last 64 pairs). Evaluation runs
every ``eval_every`` steps (the paper's code: every 100 examples, i.e. 25 steps of 4); training
stops after ``patience`` evaluations without a new best, and the best weights are kept — in
memory, so no checkpoint is written until the end. Known departures from the paper's code:
fp32 reference model (theirs was fp16), constant learning rate with ``warmup_steps`` (default 0;
theirs 150), pairs shuffled (theirs were not, a bug reported in their issue #4).
"""

from __future__ import annotations

import copy
import json
import random
import shutil
import uuid
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import ProgressCallback, TrainerCallback

from actwh.errors import ActwhError, AlreadyExists, arg
from actwh.models.loading import LoadedModel
from actwh.train.options import DPOOptions


class KeepBest(TrainerCallback):
    """Early stopping on ``eval_loss`` that keeps the best weights in memory."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best = float("inf")
        self.best_state: dict | None = None
        self.best_metrics: dict = {}
        self.stale = 0

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        loss = (metrics or {}).get("eval_loss")
        if loss is None:
            return
        if loss < self.best:
            self.best, self.stale = loss, 0
            kept = ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins")
            self.best_metrics = {k: metrics[k] for k in kept if k in metrics}
            self.best_metrics["step"] = state.global_step
            self.best_state = {
                k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            }
        else:
            self.stale += 1
            if self.stale >= self.patience:
                control.should_training_stop = True


class QuietProgress(ProgressCallback):
    """The progress bar, without the dict of metrics it prints at every log step."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


def split_pairs(pairs: list[dict], val_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    shuffled = list(pairs)
    random.Random(seed).shuffle(shuffled)
    n_val = int(round(len(shuffled) * val_fraction)) if len(shuffled) >= 2 else 0
    if val_fraction > 0 and n_val == 0 and len(shuffled) >= 2:
        n_val = 1
    return shuffled[n_val:], shuffled[:n_val]


def _dataset(pairs: list[dict]):
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": p["prompt_text"],
                "chosen": p["unpert_gen_text"],
                "rejected": p["pert_gen_text"],
            }
            for p in pairs
        ]
    )


def _config(options: DPOOptions, work: Path, base: LoadedModel, validate: bool, progress: bool):
    """TRL's ``DPOConfig`` for ``options`` (Table 8's defaults), with ``work`` as output dir."""
    from trl import DPOConfig

    return DPOConfig(
        output_dir=str(work / "trainer"),
        beta=options.beta,
        learning_rate=options.learning_rate,
        optim=options.optimizer,
        per_device_train_batch_size=options.batch_size,
        per_device_eval_batch_size=options.batch_size,
        gradient_accumulation_steps=options.gradient_accumulation_steps,
        max_grad_norm=options.max_grad_norm,
        num_train_epochs=options.epochs,
        max_steps=options.max_steps or -1,
        warmup_steps=options.warmup_steps,
        lr_scheduler_type="constant_with_warmup",
        eval_strategy="steps" if validate else "no",
        eval_steps=options.eval_every,
        save_strategy="no",
        logging_steps=max(1, min(options.eval_every, 10)),
        report_to="none",
        use_cpu=base.device.type == "cpu",
        seed=options.seed,
        max_length=options.max_length,
        gradient_checkpointing=options.gradient_checkpointing,
        disable_tqdm=not progress,
    )


def _save(trainer, base: LoadedModel, work: Path, out: Path, record: dict) -> None:
    """Save the tuned model, the base's tokenizer and ``actwh_dpo.json``; move it to ``out``."""
    trainer.model.eval()
    trainer.model.save_pretrained(work / "model")
    base.tokenizer.save_pretrained(work / "model")
    (work / "model" / "actwh_dpo.json").write_text(json.dumps(record, indent=2) + "\n")
    if out.exists():
        out.rmdir()
    (work / "model").rename(out)


def train_dpo(
    base: LoadedModel,
    pairs: list[dict],
    out: str | Path,
    options: DPOOptions | None = None,
) -> dict:
    """Train a DPO copy of ``base`` on ``pairs`` and save it as an HF directory at ``out``.

    Returns the metrics (best validation metrics, final training loss, steps).
    """
    import datasets
    from transformers import PrinterCallback
    from trl import DPOTrainer

    # Deprecation notices of transformers' and TRL's own internals: nothing a user can act on.
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers|trl")

    options = options or DPOOptions()
    progress = options.progress
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise AlreadyExists(f"{arg('out')} {out} exists and is not empty")
    train, val = split_pairs(pairs, options.val_fraction, options.seed)
    if not train:
        raise ActwhError("no training pairs left after the validation split")
    work = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    model = copy.deepcopy(base.model)
    model.requires_grad_(True)
    model.train()
    config = _config(options, work, base, bool(val), progress)
    keep_best = KeepBest(options.patience)
    bars_were_on = not datasets.are_progress_bars_disabled()
    # The trainer tokenizes the pairs as it is made, a bar per step of that ("Adding EOS",
    # "Tokenizing", ...): noise around the one bar that says how training goes.
    datasets.disable_progress_bars()
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=_dataset(train),
        eval_dataset=_dataset(val) if val else None,
        processing_class=base.tokenizer,
        callbacks=[keep_best],
    )
    if progress:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(QuietProgress)
    else:
        trainer.remove_callback(PrinterCallback)
    try:
        result = trainer.train()
        if val:
            final = trainer.evaluate()
            keep_best.on_evaluate(
                config, trainer.state, trainer.control, final, model=trainer.model
            )
        if keep_best.best_state is not None and trainer.model is not None:
            trainer.model.load_state_dict(keep_best.best_state)
        metrics = {
            "train_loss": float(result.training_loss),
            "steps": int(trainer.state.global_step),
            "n_train": len(train),
            "n_val": len(val),
            **{f"best_{k}": v for k, v in keep_best.best_metrics.items()},
        }
        record = {"base": base.name, "options": asdict(options), "metrics": metrics}
        _save(trainer, base, work, out, record)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if bars_were_on:
            datasets.enable_progress_bars()
        del trainer, model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return metrics


def train_only(base: str, pairs: str | Path, out: str | Path, options: DPOOptions) -> dict:
    """``actwh train-dpo`` without a warehouse: load ``base`` from its source, train on the
    pairs file, save to ``out``; nothing registered."""
    from actwh.models.loading import load_model
    from actwh.train.pairs import read_pairs
    from actwh.warehouse.layout import outside

    outside(out, "out")
    loaded_pairs = read_pairs(pairs)
    return train_dpo(load_model(base, device=options.device), loaded_pairs, out, options)
