"""The ``actwh`` group: how an error is shown (one line naming the flag, exit status 2), and
what every command shares (the WAREHOUSE argument, opening it)."""

from __future__ import annotations

import os
import signal
import sys
import threading

import click

from actwh.errors import ActwhError, Terminated, from_os_error, missing_extra


def flag(argument: str) -> str:
    """How the CLI names a library argument in an error message: its flag — ``--`` and the name
    with dashes, unless the command says otherwise (``context.meta["flags"]``)."""
    context = click.get_current_context(silent=True)
    if context and context.meta.get("query_params"):  # actwh query/sql: every argument is -p K=V
        return f"-p {argument}"
    overrides = context.meta.get("flags", {}) if context else {}
    return overrides.get(argument, "--" + argument.replace("_", "-"))


def named(**arguments: str) -> None:
    """Say how this command spells library arguments that are not ``--flags`` (``out="OUT"``)."""
    click.get_current_context().meta["flags"] = arguments


class _Group(click.Group):
    """Prints an :class:`ActwhError`, or an I/O failure, as one line and exits with status 2;
    the arguments an error names are shown as this CLI's flags."""

    def invoke(self, ctx):
        main_thread = threading.current_thread() is threading.main_thread()  # (signals' rule)
        handlers = {s: signal.signal(s, _terminate) for s in TERMINATING} if main_thread else {}
        try:
            return super().invoke(ctx)
        except Terminated as error:  # the run, if any, is marked failed: the same command resumes
            click.echo(f"error: {error}", err=True)
            sys.exit(128 + error.signum)
        except ActwhError as error:
            click.echo(f"error: {error.render(flag)}", err=True)
            sys.exit(2)
        except ModuleNotFoundError as error:  # a command whose extra is not installed
            if (missing := missing_extra(error, f"actwh {ctx.invoked_subcommand}")) is None:
                raise
            click.echo(f"error: {missing}", err=True)
            sys.exit(2)
        except BrokenPipeError:  # the reader left (actwh sql ... | head): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except OSError as error:  # an I/O failure anywhere else: one line, not a traceback
            click.echo(f"error: {from_os_error(error)}", err=True)
            sys.exit(2)
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)


# What kill, timeout, Slurm and Docker send (SIGTERM) and what a closed terminal sends (SIGHUP).
TERMINATING = (signal.SIGTERM, signal.SIGHUP)


def _terminate(signum, frame) -> None:
    """Raise :class:`Terminated` where the command is; a second signal while it cleans up is
    ignored, so the cleanup finishes."""
    for other in TERMINATING:
        signal.signal(other, signal.SIG_IGN)
    raise Terminated(signum)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="actwh")
def main():
    """actwh: an activation warehouse for mechanistic interpretability of alignment.

    Run a base model and its DPO-tuned sibling over the same prompts, keep what happens inside
    them token by token and layer by layer, and ask questions of it in SQL.

    \b
    Example:
      actwh ingest wh --model embedded --generate 20 --capture resid_mid,mlp_post
      actwh sql wh "select layer, count(*) from residuals group by layer order by layer"
    """


warehouse_argument = click.argument("warehouse", type=click.Path(file_okay=False))

MODEL_HELP = "A registered model name, or a source (embedded, hub id, path, .gguf)."


def model_option(name: str = "--model", help: str = MODEL_HELP, required: bool = True):
    return click.option(name, required=required, help=help)


def open_warehouse(path: str, **kwargs):
    """The warehouse at ``path`` (``create=True``: made when missing)."""
    from actwh.api.warehouse import Warehouse

    return Warehouse(path, **kwargs)
