"""Each option is declared once, as a field of its options dataclass; the CLI's flag, the
method's keyword and the resume check follow from that field."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields
from typing import Literal

import click
import pytest
from click.testing import CliRunner

from actwh.api.warehouse import Warehouse
from actwh.arguments import checks_arguments, option, resume_keys, takes_options
from actwh.cli import main
from actwh.cli.flags import options_of
from actwh.errors import ActwhError
from actwh.ingest.kinds.options import (
    LensOptions,
    NeuronOptions,
    ProjectionOptions,
    VectorOptions,
)
from actwh.ingest.options import RESUME_KEYS, IngestOptions, RunOptions
from actwh.train.options import DPOOptions


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _commands_and_callables() -> dict:
    """What each command calls, and the options dataclass it is made from."""
    from actwh import report
    from actwh.ingest.options import DiffOptions, IndexOptions
    from actwh.models.options import VariantOptions
    from actwh.report.options import ReportOptions
    from actwh.study.demo import demo
    from actwh.study.options import DemoOptions
    from actwh.train.options import EvaluateOptions, PairOptions, ProbeOptions, ScoreOptions
    from actwh.warehouse import options as w

    return {
        "ingest": (Warehouse.ingest, IngestOptions),
        "index-vectors": (Warehouse.index_vectors, IndexOptions),
        "files": (Warehouse.files, w.FilesOptions),
        "export": (Warehouse.export, w.ExportOptions),
        "export-dataset": (Warehouse.export_dataset, w.DatasetOptions),
        "search": (Warehouse.search, w.SearchOptions),
        "directions add": (Warehouse.add_direction, w.DirectionOptions),
        "diff": (Warehouse.diff, DiffOptions),
        "variant": (Warehouse.variant, VariantOptions),
        "evaluate": (Warehouse.evaluate, EvaluateOptions),
        "score": (Warehouse.score, ScoreOptions),
        "check": (Warehouse.check, w.CheckOptions),
        "compact": (Warehouse.compact, w.CompactOptions),
        "rehome": (Warehouse.rehome, w.RehomeOptions),
        "train-probe": (Warehouse.train_probe, ProbeOptions),
        "make-pairs": (Warehouse.make_pairs, PairOptions),
        "train-dpo": (Warehouse.train_dpo, DPOOptions),
        "report": (report.write, ReportOptions),
        "demo": (demo, DemoOptions),
    }


def test_every_field_is_a_flag_and_a_keyword_with_one_default():
    """For every command made from an options dataclass: each field is a flag (its help shown,
    its default the field's) and a keyword of what the command calls, with the same default."""
    for path, (method, options) in _commands_and_callables().items():
        command = _command(path)
        flags = {p.name: p for p in command.params}
        shown = " ".join(CliRunner().invoke(main, [*path.split(), "--help"]).output.split())
        keywords = inspect.signature(method).parameters
        for f in fields(options):
            assert f.name in keywords, f"{method.__qualname__}: no keyword {f.name}"
            assert keywords[f.name].default == f.default, (method.__qualname__, f.name)
            if not f.metadata["cli"]:  # a knob for tests and benchmarks only
                continue
            assert f.name in flags, f"actwh {path}: no flag for {f.name}"
            assert f.metadata["help"].split()[0] in shown, f"actwh {path}: {f.name}'s help"
            flag = flags[f.name]
            given = flag.callback(None, flag, ()) if flag.multiple else flag.default
            assert given == f.default or (given is None and f.default == ()), (path, f.name)


def test_a_flag_is_named_as_its_keyword():
    """--progress/--no-progress where a method takes progress; no --quiet, no renamed flags."""
    for path, (method, _) in _commands_and_callables().items():
        for param in _command(path).params:
            if not isinstance(param, click.Option) or param.name in ("fmt", "parquet", "force"):
                continue
            long = [o for o in param.opts if o.startswith("--")][0]
            assert long == _flag(param.name), f"actwh {path}: {long} sets {param.name}"
        if "progress" in inspect.signature(method).parameters:
            switches = [p.secondary_opts for p in _command(path).params]
            assert ["--no-progress"] in switches, path


@pytest.mark.parametrize(
    "command, module, name, engine, extra",
    [
        ("check", "actwh.warehouse.options", "CheckOptions", "actwh.warehouse.check.check", []),
        (
            "compact",
            "actwh.warehouse.options",
            "CompactOptions",
            "actwh.warehouse.compact.compact",
            [],
        ),
        (
            "index-vectors",
            "actwh.ingest.options",
            "IndexOptions",
            "actwh.ingest.value_index.store_value_vectors",
            ["--model", "MODEL"],
        ),
    ],
)
def test_a_new_option_is_one_edit(
    command, module, name, engine, extra, gpt2_dir, tmp_path, monkeypatch
):
    """A throwaway field added to a command's options dataclass — and nothing else — is a flag
    of the command whose value reaches the engine, through the Warehouse method unchanged."""
    import dataclasses
    import importlib

    import actwh.cli.writing

    holder = importlib.import_module(module)
    extended = dataclasses.make_dataclass(
        name, [("throwaway", int, option(3, "A new option."))], bases=(getattr(holder, name),)
    )
    seen = {}

    def stub(*args):
        seen["options"] = args[-1]
        raise ActwhError("stopped in the engine")

    engine_module, engine_name = engine.rsplit(".", 1)
    monkeypatch.setattr(holder, name, extended)
    monkeypatch.setattr(importlib.import_module(engine_module), engine_name, stub)
    try:
        importlib.reload(actwh.cli.writing)  # the CLI made again from the options as they are
        assert CliRunner().invoke(main, ["init", str(tmp_path / "wh")]).exit_code == 0
        args = [command, str(tmp_path / "wh"), "--throwaway", "7", *extra]
        args = [str(gpt2_dir) if a == "MODEL" else a for a in args]
        result = CliRunner().invoke(main, args)
        assert "stopped in the engine" in result.output, result.output
        assert isinstance(seen["options"], extended) and seen["options"].throwaway == 7
    finally:
        monkeypatch.undo()
        importlib.reload(actwh.cli.writing)


def test_the_resume_check_reads_the_fields():
    marked = [f.name for f in fields(IngestOptions) if f.metadata.get("resume")]
    assert RESUME_KEYS == (*marked, "directions")
    assert "generate" in RESUME_KEYS and "device" not in RESUME_KEYS


def test_a_new_field_becomes_a_flag_a_keyword_and_a_resume_key():
    """A throwaway field added to a capture kind's options (here the logit lens's) is, with
    nothing else written: a flag with its choices, default and help; a keyword of the method,
    checked against its annotation; and a key a resumed run must match."""

    @dataclass
    class Lens(LensOptions):
        window: Literal["left", "right"] = option("left", "Which side to read.", resume=True)

    @dataclass
    class Extended(Lens, NeuronOptions, ProjectionOptions, VectorOptions, RunOptions):
        pass

    got = {}

    @click.command()
    @options_of(Extended)
    def command(**options):
        got.update(options)

    result = CliRunner().invoke(command, ["--help"], terminal_width=200)
    assert "--window [left|right]" in result.output and "Which side to read." in result.output
    CliRunner().invoke(command, ["--window", "right", "--generate", "3"], catch_exceptions=False)
    assert Extended(**got).window == "right" and got["generate"] == 3
    assert CliRunner().invoke(command, ["--window", "up"]).exit_code == 2

    @checks_arguments
    class Facade:
        @takes_options(Extended, exclude=("device",))
        def run(self, model: str, options: Extended | None = None, **overrides) -> Extended:
            return Extended.given(options, overrides)

    assert "window" in inspect.signature(Facade.run).parameters
    assert Facade().run("m", window="right").window == "right"
    with pytest.raises(ActwhError, match="window"):
        Facade().run("m", window="up")
    with pytest.raises(ActwhError, match="device"):
        Facade().run("m", device="cpu")
    assert "window" in resume_keys(Extended)


def test_every_kind_owns_its_options():
    """IngestOptions is the run's options plus each kind's, and nothing else."""
    kinds = (RunOptions, VectorOptions, ProjectionOptions, NeuronOptions, LensOptions)
    owned = [f.name for kind in kinds for f in fields(kind)]
    assert sorted(owned) == sorted(f.name for f in fields(IngestOptions))
    assert len(owned) == len(set(owned))


def test_a_wrong_keyword_or_choice_is_refused_by_name(tmp_path):
    wh = Warehouse(tmp_path / "wh", create=True)
    with pytest.raises(ActwhError, match="genrate"):
        wh.ingest("embedded", genrate=3)
    with pytest.raises(ActwhError, match="lens_at"):
        wh.ingest("embedded", lens_at="middle")


# Commands that are not a Warehouse method of their own name, and what they call instead.
NOT_A_METHOD = {
    "init": "Warehouse(path, create=True)",
    "demo": "actwh.study.demo.demo",
    "report": "actwh.report.write",
    "serve": "actwh.serve.serve (an application over the warehouse)",
    "prompts transform": "actwh.ingest.transforms (no warehouse)",
    "directions add": "add_direction",
    "directions list": "directions",
    "directions show": "direction",
}


def _commands(group: click.Group, prefix: str = "") -> list[str]:
    found = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix}{name} ")
        else:
            found.append(prefix + name)
    return found


def test_each_command_is_the_method_of_its_name():
    """`actwh index-vectors` is `wh.index_vectors`: a command's method is its name with
    underscores, except the few listed with what they call."""
    for command in _commands(main):
        target = NOT_A_METHOD.get(command, command.replace("-", "_"))
        if command in NOT_A_METHOD and not target.isidentifier():
            continue
        assert callable(getattr(Warehouse, target, None)), f"actwh {command}: no wh.{target}"
    writes = {n for n in dir(Warehouse) if getattr(getattr(Warehouse, n), "__write__", False)}
    assert {"ingest", "add_direction", "variant", "train_probe", "check"} <= writes


def _command(path: str) -> click.Command:
    command: click.Command = main
    for name in path.split():
        command = command.commands[name]  # type: ignore[attr-defined]
    return command


# The flags that take several values, by what they list; each is a comma list or repeated.
LISTS = {"runs", "models", "sites", "layers", "neurons", "capture", "project", "track_neurons"}


def test_one_convention_for_flags_that_take_several_values():
    """A flag that takes several values accepts a comma list and repeats (a repeated flag used
    to keep only its last value); -p NAME=VALUE is the one repeated flag that is not a list."""
    seen = set()
    for path in _commands(main):
        for param in _command(path).params:
            if not isinstance(param, click.Option) or param.name == "params":
                continue
            if param.name in LISTS or param.multiple:
                seen.add(param.name)
                assert param.multiple, f"actwh {path} {param.opts}: not repeatable"
                assert "A comma list, or repeat the flag." in (param.help or ""), (path, param.opts)
    assert LISTS <= seen


def test_a_repeated_flag_adds_to_its_list():
    args = ["wh", "--model", "m", "--capture", "a,b", "--capture", "c", "--layers", "1"]
    ctx = _command("ingest").make_context("ingest", args)
    assert ctx.params["capture"] == "a,b,c" and ctx.params["layers"] == "1"
    assert ctx.params["project"] is None  # not given: the option's default


@pytest.mark.parametrize("spec", ["7", "0-9", "x", "3-1", [5], [1.5]])
def test_a_bad_layer_list_is_bad_input_naming_the_option(spec):
    """Layers out of range or malformed are the caller's input (BadInput), named by keyword."""
    from actwh.arguments import parse_layers
    from actwh.errors import BadInput

    with pytest.raises(BadInput, match="^layers[: ]"):
        parse_layers(spec, 3, "layers")


def test_the_demo_offers_every_shipped_model():
    """DemoOptions.model's choices are written out for type checkers; they are SHIPPED's names."""
    import typing

    from actwh.models.shipped import SHIPPED
    from actwh.study.options import DemoOptions

    hint = typing.get_type_hints(DemoOptions)["model"]
    assert set(typing.get_args(hint)) == set(SHIPPED)


def _options_classes() -> list[type]:
    import dataclasses
    import importlib

    from actwh.arguments import Options

    found = []
    for package in ("warehouse", "ingest", "train", "models", "report", "study"):
        module = importlib.import_module(f"actwh.{package}.options")
        found += [
            c
            for c in vars(module).values()
            if isinstance(c, type) and dataclasses.is_dataclass(c) and issubclass(c, Options)
        ]
    return list(dict.fromkeys(found))


# Numbers any finite value of which means something: a steering strength or a scale may be
# negative (steer away, flip).
ANY_FINITE = {"PairOptions.alpha", "PairOptions.relative_alpha", "VariantOptions.scale"}


def _numeric_fields():
    import typing

    from actwh.arguments import option_fields

    for cls in _options_classes():
        for f, hint in option_fields(cls):
            given = typing.get_args(hint) or (hint,)
            kinds = {h for h in given if h in (int, float)}
            if kinds and str not in given:  # a spec like layers' "10-20" is parsed on its own
                yield cls, f, kinds.pop()


def test_every_number_an_option_takes_has_a_declared_range():
    """One mechanism for every numeric option (issue 40): its range is declared with it, so a
    new number is checked before work begins; any number that is not finite is refused."""
    undeclared = [
        f"{cls.__name__}.{f.name}"
        for cls, f, _ in _numeric_fields()
        if not f.metadata.get("range") and f"{cls.__name__}.{f.name}" not in ANY_FINITE
    ]
    assert not undeclared, f"numeric options without a range: {undeclared}"


@pytest.mark.parametrize("bad", ["below", "nan", "inf", "-inf", "huge"])
def test_every_numeric_option_refuses_a_value_outside_its_range_by_name(bad):
    from actwh.errors import BadInput

    checked = 0
    for cls, f, kind in _numeric_fields():
        bounds = f.metadata.get("range", {})
        if bad == "below":
            if "at_least" in bounds:
                value = kind(bounds["at_least"] - 1)
            elif "above" in bounds:
                value = kind(bounds["above"])
            else:
                continue
        elif bad == "huge":
            value = 2**70 if kind is int else float("1e400")  # (a float this big is inf)
        elif kind is int:
            continue  # an int field takes no NaN (its type refuses a float)
        else:
            value = float(bad)
        required = {g.name: "x" for g in fields(cls) if g.metadata.get("required")}
        with pytest.raises(BadInput, match=f.name):
            cls(**{**required, f.name: value})
        checked += 1
    assert checked >= (30 if bad in ("below", "huge") else 5)
