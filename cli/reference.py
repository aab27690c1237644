"""The CLI reference, ``docs/cli.md``, generated from every command's ``--help``: run
``python -m actwh.cli.reference > docs/cli.md`` (``make docs``); a test fails when the file is
stale, so the reference is never older than the commands."""

from __future__ import annotations

import click

from actwh.cli import main

WIDTH = 100


def _commands(group: click.Group, ctx: click.Context) -> list[tuple[click.Context, click.Command]]:
    found = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub = command.make_context(name, ["--help"], parent=ctx, resilient_parsing=True)
        found.append((sub, command))
        if isinstance(command, click.Group):
            found += _commands(command, sub)
    return found


def cli_reference() -> str:
    """Markdown: a table of contents, then each command's help as it prints."""
    root = main.make_context(
        "actwh",
        ["--help"],
        resilient_parsing=True,
        terminal_width=WIDTH,
        max_content_width=WIDTH,
    )
    commands = _commands(main, root)
    lines = [
        "# The `actwh` command line",
        "",
        "Generated from `--help` by `make docs` (`python -m actwh.cli.reference`); "
        "`tests/test_docs.py` fails when it is stale. Every command is the `Warehouse` method "
        "of the same name with underscores (`actwh index-vectors` is `wh.index_vectors`), "
        "and its options are that method's keywords.",
        "",
        "Conventions, the same in every command:",
        "",
        "- The warehouse is the first argument (`actwh sql WH`); `make-pairs` (which needs one for "
        "its steering direction) and `train-dpo` (which also runs without one) take it as "
        "`--warehouse`.",
        "- A flag is named as the keyword it sets (`--runs` sets `runs=`).",
        "- A flag that takes several values takes a comma list, or is repeated: "
        "`--sites resid_mid,mlp_post` is `--sites resid_mid --sites mlp_post`. Layers are "
        "`19`, `10-20` or `all`, listed the same way.",
        "- Output: an aligned table by default; `--markdown`, `--csv`, `--json` (a line per "
        "row) or `--parquet FILE`.",
        "",
        'Shell completion (click\'s): add `eval "$(_ACTWH_COMPLETE=bash_source actwh)"` to '
        "`~/.bashrc` (`zsh_source` for `~/.zshrc`, `fish_source` for fish).",
        "",
    ]
    for ctx, _ in commands:
        path = ctx.command_path
        lines.append(f"- [`{path}`](#{path.replace(' ', '-')})")
    lines += ["", "## actwh", "", "```text", main.get_help(root), "```"]
    for ctx, command in commands:
        path = ctx.command_path
        lines += ["", f"## {path}", "", "```text", command.get_help(ctx), "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(cli_reference(), end="")
