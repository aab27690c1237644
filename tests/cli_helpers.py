"""Running the ``actwh`` CLI in-process, as the tests do."""

from __future__ import annotations

from click.testing import CliRunner

from actwh.cli import main


def cli(*args):
    """Run ``actwh ARGS``; it must succeed. Returns click's result (``.stdout``, ``.stderr``)."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def cli_error(*args) -> str:
    """Run ``actwh ARGS``; it must fail with a user error. Returns what it printed to stderr."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    return result.stderr
