"""``actwh demo``: the whole study of the paper, offline, on the embedded SmolLM2-135M-Instruct.

Every step is a library call a user could make (or an ``actwh`` command); each is skipped when
its result is already in the warehouse, so a rerun resumes where the last one stopped:

 1. the model (the embedded GGUF, converted once to safetensors)
 2. the toxicity probe on the shipped labeled corpus → direction ``toxic_probe``
 3. every value vector and the FAISS index; the top toxic value vectors (Table 1)
 4. prompts: the shipped set split in two — ``train`` for preference pairs, ``test`` for
    everything else — plus ROT13/Base64/leet variants of some test prompts and a few multi-turn
    chats (``analysis``)
 5. preference pairs from the train prompts (greedy vs probe-steered)
 6. DPO, sized for a CPU (2 epochs; learning rate 1e-5 for SmolLM2, the paper's 1e-6 for Gemma;
    the paper's Table 8 otherwise)
 7. a base run over the analysis prompts (resid_mid and resid_post, projections, tracked
    neurons, the logit lens on the tokens the base model says first when it is toxic — it is
    evaluated first for that), the DPO model teacher-forced on the same tokens, and the base
    model teacher-forced again to store every neuron of its last layer (for selectivity)
 8. δx per layer, weight differences, the un-aligned variants of the DPO model — the keys of the 7
    neurons whose mean write in the DPO run points most along the probe, ×10 (the paper's), and
    the same keys at ×2 and ×5 (the sweep; --sweep); the 7 last-layer neurons most selective for
    toxic continuations, ×10 where they write toward the probe (one-sided) — each with its
    control (7 keys in the same layers chosen at random, scaled to add as much write per layer)
 9. evaluation of base, DPO, the un-aligned variants and controls: toxicity, perplexity, F1
10. the named analyses, the findings with their controls (study/findings.py), and the report
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from actwh import arguments, report
from actwh.arguments import takes_options
from actwh.errors import ActwhError, BadInput, arg
from actwh.ingest.prompts import shipped_chats, shipped_prompts
from actwh.study.findings import CAVEAT_KEY, FINDINGS_SECTION, print_findings
from actwh.study.names import DIRECTION, LAYER_RUN, SELECTIVE, seed_names, unaligned_names
from actwh.study.options import DemoOptions
from actwh.study.timing import expected, shown, speed
from actwh.train.options import DPOOptions
from actwh.warehouse.layout import outside, replace_file

STEPS = 10


@dataclass
class StudySettings:
    model: str = "embedded"
    generate: int = 20
    batch_size: int = 32  # runs and pairs; evaluations take 4× as many prompts a batch
    relative_alpha: float = 0.3
    dpo: DPOOptions = field(
        default_factory=lambda: DPOOptions(learning_rate=1e-5, epochs=2, eval_every=10, patience=5)
    )
    track: int = 64
    lens_k: int = 5
    # the logit lens's target tokens; None: those the base model says first in its continuations
    # scored toxic (its evaluation runs first), so that Figure 1 tracks what it says: the rule of
    # ingest/targets.py, which any run with --logit-lens and no --target-tokens follows
    target_tokens: str | None = None
    transforms: tuple[str, ...] = ("rot13", "base64", "leet")
    n_transformed: int = 20
    unalign_top_k: int = 7
    unalign_scale: float = 10.0  # the paper's: variants unaligned and unaligned-control
    unalign_sweep: tuple[float, ...] = (2.0, 5.0)  # more scales, each with its control
    # keys chosen by selectivity (the last layer's neurons, labels score:SCORER), scaled on
    # their toward side only (one-sided), at the paper's scale; with its control
    selective_keys: bool = True
    scorer: str = "profanity"  # chooses the preference pairs
    eval_scorers: tuple[str, ...] = ("profanity", "wordlist")  # the second is independent
    seeds: int = 1  # pairs → DPO → evaluation repeated with this many seeds (0 is the study's)
    n_prompts: int | None = None  # only the first N shipped prompts (None: all of them)
    n_f1: int = 200  # the F1 items of each evaluation
    progress: bool = True


# DPO's learning rate where StudySettings' (1e-5, ten times the paper's: it makes SmolLM2's small
# change visible in 2 epochs of ~50 pairs) overshoots: on the pretrained Gemma 3 270M validation
# loss was ~0 by step 10 and perplexity +10.8, so Gemma trains at the paper's 1e-6.
DPO_LEARNING_RATE = {"gemma3-270m": 1e-6}


def study_settings(model: str = "embedded", **more) -> StudySettings:
    """The demo's settings for a shipped ``model`` (DPO's learning rate sized for it)."""
    settings = StudySettings(model=model, **more)
    if model in DPO_LEARNING_RATE:
        settings.dpo = replace(settings.dpo, learning_rate=DPO_LEARNING_RATE[model])
    return settings


def quick_settings(model: str = "embedded", **more) -> StudySettings:
    """``actwh demo --quick``: the whole study, small — the first 48 shipped prompts, 8 tokens
    each, 4 DPO steps, the paper's un-aligning scale only (no sweep, no keys by selectivity) — so
    that every table and every report section has something in it within minutes. Its numbers
    show the machinery, not findings."""
    quick = {
        "n_prompts": 48,
        "selective_keys": False,
        "generate": 8,
        "n_transformed": 4,
        "track": 16,
        "dpo": DPOOptions(learning_rate=1e-5, max_steps=4, eval_every=2, patience=5),
        "unalign_sweep": (),
        "n_f1": 20,
    }
    return study_settings(model, **(quick | more))


def _length(dpo: DPOOptions) -> str:
    """How long DPO trains: ``2 epochs``, or ``4 steps`` where max_steps stops it first."""
    return f"{dpo.max_steps} steps" if dpo.max_steps else f"{dpo.epochs:g} epochs"


def split_prompts(
    source: Path,
    out: Path,
    n_transformed: int,
    transforms,
    chats: Path | None = None,
    limit: int | None = None,
) -> tuple[Path, Path, Path]:
    """Even prompts → train (pairs), odd → test (evaluation); the analysis set is the test set
    plus encoded variants of its first ``n_transformed`` non-neutral prompts, linked to them,
    and the multi-turn ``chats`` (if given)."""
    from actwh.ingest.prompts import read_prompts, write_prompts
    from actwh.ingest.transforms import transformed

    shipped = read_prompts(source).prompts[:limit]
    train, test = shipped[0::2], shipped[1::2]
    chosen = [i for i, p in enumerate(test) if p.meta.get("category") != "neutral"][:n_transformed]
    variants = [transformed(test[i], name, i) for name in transforms for i in chosen]
    extra = read_prompts(chats).prompts if chats else []
    paths = out / "prompts-train.jsonl", out / "prompts-test.jsonl", out / "prompts-analysis.jsonl"
    for prompts, path in zip((train, test, test + variants + extra), paths, strict=True):
        write_prompts(prompts, path)
    return paths


class Study:
    """The study's steps, in order, as calls of the :class:`~actwh.api.warehouse.Warehouse`;
    each skipped when its result is already there."""

    def __init__(self, out: Path, settings: StudySettings, echo: Callable):
        import actwh

        self.out, self.s, self.echo = out, settings, echo
        out.mkdir(parents=True, exist_ok=True)
        self.wh = actwh.open(out / "wh", create=True)
        self.started = time.monotonic()

    def step(self, number: int, text: str, count: int = 1) -> None:
        """Say step ``number`` starts: the time so far, and how long it should take (its
        reference time for ``count`` models or variants, study/timing.py) once the model is
        loaded and timed."""
        ahead = ""
        if number > 1:
            ahead = "; " + shown(self._expected(number, count))
        self.echo(f"[{number}/{STEPS}] {text}  ({time.monotonic() - self.started:,.0f}s{ahead})")

    def _expected(self, number: int, count: int) -> float:
        quick = self.s.n_prompts is not None
        if number == 9:  # per model, and each more seed: its pairs, DPO and evaluation
            seeds = sum(expected(k, quick, self.speed) for k in (5, 6, "per_model"))
            return expected("per_model", quick, self.speed, count) + (self.s.seeds - 1) * seeds
        return expected(number, quick, self.speed, count)

    def has(self, query: str, **params) -> bool:
        return self.wh.sql(f"select count(*) > 0 from {query}", params).item()

    def probe_and_vectors(self) -> None:
        wh, s = self.wh, self.s
        self.step(1, f"model: {s.model}")
        self.base = wh.load_model(s.model)
        self.speed = speed(self.base)  # how much slower than the reference (study/timing.py)
        studied = wh.sql("select model from runs where name = 'base'")
        if studied.height and studied.item() != self.base.name:
            raise ActwhError(
                f"{self.out} holds the study of {studied.item()}, not of {self.base.name}; "
                "give the demo another --out"
            )
        self.step(2, "toxicity probe on the shipped labeled corpus")
        if not self.has("directions where model = $m and name = $d", m=self.base.name, d=DIRECTION):
            wh.train_probe(self.base, name=DIRECTION, progress=s.progress)
        probe = wh.sql("select meta from directions where name = $d", {"d": DIRECTION}).item()
        self.echo(f"      validation accuracy {json.loads(probe)['val_accuracy']:.3f}")
        self.step(3, "value vectors, FAISS index, the top toxic value vectors (Table 1)")
        wh.index_vectors(self.base, progress=s.progress)
        table1 = wh.query("top_toxic_vectors", model=self.base.name, k=8)
        self.echo("      (cos: of v with the probe; writes toward it when m > 0 (+) or m < 0 (-))")
        for row in table1.iter_rows(named=True):
            tokens = ", ".join(t.strip() or repr(t) for t in row["top_tokens"][:6])
            self.echo(
                f"      L{row['layer']:>2} #{row['neuron']:<5} cos {row['cosine']:+.3f} "
                f"({'+' if row['sign'] > 0 else '-'})  {tokens}"
            )

    def pairs_and_dpo(self) -> None:
        wh, s, out = self.wh, self.s, self.out
        self.step(4, "prompts: train (pairs) / test (analysis and evaluation) split, with variants")
        chats = shipped_chats() if self.base.tokenizer.chat_template else None
        if chats is None:
            self.echo("      (no chat template: the multi-turn chats are left out)")
        self.train, self.test, self.analysis = split_prompts(
            shipped_prompts(), out, s.n_transformed, s.transforms, chats, s.n_prompts
        )
        self.step(5, "preference pairs (greedy vs toxic-steered) from the train prompts")
        pairs = self._pairs(0)
        n_pairs = sum(1 for line in pairs.read_text().splitlines() if line.strip())
        self.step(6, f"DPO on {n_pairs} pairs (lr {s.dpo.learning_rate:g}, {_length(s.dpo)})")
        self._dpo(0, pairs)
        self.tuned = wh.load_model("dpo")

    def _pairs(self, seed: int) -> Path:
        """Preference pairs sampled with ``seed`` (0: the study's own ``pairs.jsonl``)."""
        wh, s = self.wh, self.s
        pairs = self.out / seed_names(seed)["pairs"]
        if not pairs.exists():
            stats = wh.make_pairs(
                self.base,
                pairs,
                prompts=self.train,
                scorer=s.scorer,
                relative_alpha=s.relative_alpha,
                generate=s.generate,
                batch_size=s.batch_size,
                seed=seed,
                progress=s.progress,
            )
            self.echo(f"      {stats.summary(s.scorer)}")
        return pairs

    def _dpo(self, seed: int, pairs: Path) -> str:
        """DPO on ``pairs`` with seed ``dpo.seed + seed``; returns the model's name (``dpo`` for
        seed 0, the study's own; ``dpo.seed1``, ... otherwise)."""
        wh, s = self.wh, self.s
        name, dpo_dir = seed_names(seed)["model"], self.out / seed_names(seed)["dir"]
        if not self.has("models where name = $m", m=name):
            if dpo_dir.exists():  # trained by an earlier run that stopped before registering it
                wh.register_dpo(dpo_dir, name=name, base=self.base)
            else:
                options = replace(s.dpo, seed=s.dpo.seed + seed)
                metrics = wh.train_dpo(
                    self.base, pairs, dpo_dir, name=name, options=options, progress=s.progress
                )
                self.echo(
                    f"      {name}: {metrics['steps']} steps, best validation loss "
                    f"{metrics.get('best_eval_loss', float('nan')):.4f}"
                )
        return name

    def paired_runs(self) -> None:
        self.step(
            7,
            "base run over the test prompts, DPO teacher-forced on the same tokens, and every "
            "neuron of the last layer on them (for selectivity)",
        )
        if self.s.target_tokens is None:  # the lens's targets come from it (ingest/targets.py)
            self._evaluate(self.base)
        self._run("base", self.base, prompts=self.analysis, prompt_set="analysis")
        self._run("dpo", self.tuned, teacher_force="base", generate=0)
        last = self.base.adapter.n_layers - 1
        self._run(
            LAYER_RUN,
            self.base,
            teacher_force="base",
            generate=0,
            capture=["mlp_post"],
            layers=[last],
            track_neurons="",
            logit_lens=0,
            target_tokens="",
        )

    def _run(self, name: str, model, **how) -> None:
        """Ingest run ``name`` of ``model`` with the study's capture (or ``how``'s), unless it is
        complete."""
        s = self.s
        if self.has("runs where name = $r and status = 'complete'", r=name):
            return
        study = {
            "generate": s.generate,
            "capture": ["resid_mid", "resid_post"],  # resid_post: δx's decomposition
            "track_neurons": f"{DIRECTION}:{s.track}",
            "logit_lens": s.lens_k,
            "target_tokens": s.target_tokens or "",  # none: chosen as ingest/targets.py says
        }
        summary = self.wh.ingest(
            model,
            name=name,
            **(study | how),
            batch_size=s.batch_size,
            progress=s.progress,
        )
        for notice in summary.notices:
            self.echo(f"      {notice}")
        self.echo(
            f"      {name}: {summary.n_prompts} prompts, {summary.n_tokens:,} tokens, "
            f"{summary.speed}"
        )

    def offset_and_variants(self) -> None:
        wh = self.wh
        self.step(
            8,
            "δx per layer, weight differences, the un-aligned variants and controls",
            2 * len(self.variants()),
        )
        if not self.has("directions where kind = 'delta'"):
            wh.add_direction("dx", delta=("base", "dpo"), model=self.base.name)
        if not self.has("weight_diffs where model = 'dpo'"):
            wh.diff(self.base, self.tuned)
        for name, control, how in self.variants():
            self._variant(name, control, how)

    def variants(self) -> list[tuple[str, str, dict]]:
        """The un-aligned variants, their controls and how each edit is made (``variant``
        keywords), in the order they are evaluated: the sweep over scales with the paper's
        keys, then keys chosen by selectivity."""
        s = self.s
        found = [
            (*unaligned_names(x, s.unalign_scale), {"scale": x, "run": "dpo"})
            for x in sorted({*s.unalign_sweep, s.unalign_scale})
        ]
        if s.selective_keys:
            how = {
                "scale": s.unalign_scale,
                "run": LAYER_RUN,
                "keys": f"selectivity:score:{s.scorer}",
                "one_sided": True,
            }
            found.append((*unaligned_names(s.unalign_scale, s.unalign_scale, SELECTIVE), how))
        return found

    def _variant(self, name: str, control: str, how: dict) -> None:
        """Register un-aligned variant ``name`` of the DPO model (``how``: its scale, run, keys)
        and its control: random keys in the same layers, scaled to add as much write as the
        edit there (and one-sided where it is)."""
        wh, s = self.wh, self.s
        if not self.has("models where name = $m", m=name):
            if "keys" in how and not self.has(
                "scores where run = 'base' and scorer = $s", s=s.scorer
            ):
                wh.score("base", scorer=s.scorer)  # the labels of selectivity
            try:
                wh.variant(name, base=self.tuned, unalign=DIRECTION, k=s.unalign_top_k, **how)
            except ActwhError as error:  # e.g. too few continuations scored toxic to rank by
                if "keys" not in how:
                    raise
                self.echo(f"      {name}: not made: {error}")
                return
        if not self.has("models where name = $m", m=control):
            wh.variant(control, control_of=name, seed=0, match="write")
        from actwh.models.interventions import scaling

        for model in (name, control):
            config = wh.sql("select config from models where name = $m", {"m": model}).item()
            edit = json.loads(config)["edit"]
            keys = ", ".join(f"{l}:{n}" for l, n in edit["keys"])
            self.echo(f"      {model}: keys {keys} {scaling(edit)}")

    def evaluations(self) -> None:
        s = self.s
        self.step(
            9,
            "evaluation: toxicity, perplexity, F1 of base, DPO, the un-aligned and controls",
            1 + 2 * len(self.variants()),  # (base: evaluated in step 7)
        )
        self._evaluate(self.base)
        self._evaluate(self.tuned)
        for name, control, _ in self.variants():
            if self.has("models where name = $m", m=name):  # made (step 8)
                self._evaluate(name)
                self._evaluate(control)
        if s.seeds > 1:
            self.echo(
                f"      {s.seeds - 1} more seeds: pairs → DPO → evaluation, and the DPO model "
                "teacher-forced on the base run (its δx and tracked neurons)"
            )
        for seed in range(1, s.seeds):
            tuned = self.wh.load_model(self._dpo(seed, self._pairs(seed)))
            self._evaluate(tuned)
            self._mechanism(seed, tuned)

    def _mechanism(self, seed: int, tuned) -> None:
        """Seed ``seed``'s DPO model as step 7 and 8 treat ``dpo``: teacher-forced on the base
        run, its weight differences, its δx — so the mechanism's numbers have a spread too."""
        names = seed_names(seed)
        self._run(names["model"], tuned, teacher_force="base", generate=0)
        if not self.has("weight_diffs where model = $m", m=tuned.name):
            self.wh.diff(self.base, tuned)
        if not self.has("directions where kind = 'delta' and name like $p", p=names["dx"] + ".%"):
            self.wh.add_direction(names["dx"], delta=("base", tuned.name), model=self.base.name)

    def _evaluate(self, model) -> None:
        s = self.s
        name = model if isinstance(model, str) else model.name
        done = "evaluations where model = $m and prompt_set = 'test'"
        if not all(self.has(f"{done} and scorer = $s", m=name, s=x) for x in s.eval_scorers):
            self.wh.evaluate(
                model,
                prompts=self.test,
                prompt_set="test",
                scorer=s.eval_scorers,
                generate=s.generate,
                batch_size=s.batch_size * 4,
                n_f1=s.n_f1,
                progress=s.progress,
            )

    def caveat(self) -> str | None:
        """What a quick study's numbers are (None for the whole study)."""
        s = self.s
        if s.n_prompts is None:
            return None
        return (
            f"A quick study (--quick): the first {s.n_prompts} shipped prompts, {s.generate} "
            "tokens each; its numbers show the machinery, not findings."
        )

    def findings(self) -> dict:
        self.step(10, "named analyses and the report")
        if not self.has("scores where run = 'base' and scorer = $s", s=self.s.scorer):
            self.wh.score("base", scorer=self.s.scorer)  # labels for selectivity
        # the report's findings section says it too (warehouse_info key CAVEAT_KEY)
        self.wh.store.catalog.set_info(CAVEAT_KEY, self.caveat() or "")
        written = report.write(
            self.wh,
            out=self.out / "report.html",
            scorer=self.s.scorer,
            progress=self.s.progress,
            first=[FINDINGS_SECTION],
        )
        findings = written.data("findings")  # computed once, for the report's section
        findings["report"] = str(written.page)
        findings["seconds"] = time.monotonic() - self.started
        printed = ["\nFindings"] + ([f"  {self.caveat()}"] if self.caveat() else [])
        print_findings(findings, printed.append)
        printed.append(f"  report: {written.page} ({len(written.charts)} charts as PNG beside it)")
        printed.append(f"  total time {findings['seconds'] / 60:.1f} min")
        for line in printed:
            self.echo(line)
        self._write_findings(printed)
        return findings

    def _write_findings(self, printed: list[str]) -> None:
        """OUT/FINDINGS.md: what the findings printed, verbatim, under the study's settings."""
        s = self.s
        sweep = ", ".join(f"×{x:g}" for x in sorted({how["scale"] for *_, how in self.variants()}))
        header = (
            f"# Findings: actwh demo --model {s.model}\n\n"
            f"What `actwh demo` printed at the end (the model {self.base.name}; DPO at learning "
            f"rate {s.dpo.learning_rate:g}, {_length(s.dpo)}; {s.seeds} seed(s); "
            f"un-aligning at {sweep}). Written by the demo: do not edit by hand.\n\n"
        )
        text = header + "```\n" + "\n".join(printed).strip("\n") + "\n```\n"
        replace_file(self.out / "FINDINGS.md", text)  # whole or absent


def run_study(out: Path, settings: StudySettings | None = None, echo: Callable = print) -> dict:
    """Run (or resume) the study into ``out``; returns the findings."""
    study = Study(out, settings or study_settings(), echo)
    with study.wh:
        study.probe_and_vectors()
        study.pairs_and_dpo()
        study.paired_runs()
        study.offset_and_variants()
        study.evaluations()
        return study.findings()


@takes_options(DemoOptions)
def demo(options: DemoOptions | None = None, echo: Callable = print, **overrides) -> dict:
    """``actwh demo``: the study as ``options`` say, into ``options.out`` (default demo-out,
    demo-quick with ``quick``, and -MODEL for another model); returns the findings."""
    o = DemoOptions.given(options, overrides)
    if o.seeds < 1:
        raise BadInput(f"{arg('seeds')} {o.seeds}: at least 1")
    try:
        scales = None if o.sweep is None else tuple(float(x) for x in arguments.names(o.sweep))
    except ValueError:
        raise BadInput(f"{arg('sweep')} {o.sweep!r}: expected scales such as 2,5") from None
    if any(not x > 0 for x in scales or ()):
        raise BadInput(f"{arg('sweep')} {o.sweep!r}: scales must be positive")
    stem = "demo-quick" if o.quick else "demo-out"
    out = o.out or (stem if o.model == "embedded" else f"{stem}-{o.model}")
    made = quick_settings if o.quick else study_settings
    more = {} if scales is None else {"unalign_sweep": scales}  # else: the settings' own
    settings = made(o.model, progress=o.progress, seeds=o.seeds, **more)
    return run_study(outside(out, "out"), settings, echo)  # (its own warehouse is out/wh)
