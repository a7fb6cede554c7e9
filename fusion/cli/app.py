"""`fusion`: one command per workload. Every subcommand has --help.

Errors users can fix (bad parameter, missing or corrupt file) print one clear line and
exit with status 2; anything else is a bug and keeps its traceback. That happens here, once,
around every command (`_one_line_errors`); a command catches a FusionError itself only to
clean up or to carry on with the rest of its work. Ctrl-C (and SIGTERM, which takes its path)
exits 130 (143) with one line rather than click's "Aborted!" and status 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperGroup, TyperOption

from fusion.cli.data import data_app
from fusion.cli.evaluate import evaluate
from fusion.cli.fuse import fuse
from fusion.cli.models import import_weights, models
from fusion.cli.nightly import run, schedule_app
from fusion.cli.output import console, setup_logging
from fusion.cli.runs import report, reproduce, sync
from fusion.cli.train import sweep, train
from fusion.cli.workspace import init
from fusion.errors import FusionError

if TYPE_CHECKING:
    # what TyperGroup and TyperOption take: typer (0.29) carries its own copy of click
    from typer._click import Context


def _flags_without_type() -> None:
    """Typer prints a value type beside every option; a flag takes no value, so its `<bool>`
    only widens the table (and wraps every help text at 80 columns)."""
    shown = TyperOption.display_type_rich

    def display_type(self: TyperOption, ctx: Context) -> str | None:
        # "<int range> [x>=1]" says the range twice and sets the column's width for every row
        return None if self.is_flag else (shown(self, ctx) or "").replace(" range>", ">") or None

    TyperOption.display_type_rich = display_type  # type: ignore[method-assign]


_flags_without_type()

# a core install (the GPU check's wheels) lacks the orchestration stack: say which part
_STACK = {"ray": "Ray", "mlflow": "MLflow", "prefect": "Prefect", "dvc": "DVC"}


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """A FusionError, a missing part of the orchestration stack, or an OSError of a full or
    read-only disk that no command turned into a FusionError (a library writing its own files):
    one line and exit 2, not a traceback."""
    from fusion.errors import DISK_ERRNOS, output_error

    try:
        yield
    except FusionError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in _STACK:
            raise
        console.print(
            f"[bold red]error:[/] this command needs {_STACK[top]} ({top} is not installed); the core "
            "commands (fuse, evaluate, train --out, models) run without it: pip install fusionflow "
            "with its dependencies for the rest"
        )
        raise typer.Exit(2) from None
    except OSError as exc:
        import errno

        if errno.errorcode.get(exc.errno or 0) not in DISK_ERRNOS:
            raise
        console.print(f"[bold red]error:[/] {escape(str(output_error(exc.filename or 'output', exc)))}")
        raise typer.Exit(2) from None


class _EntryPoint(TyperGroup):
    """The `fusion` group: every command runs inside its invoke. The handler sits here and not in
    Typer.__call__ because typer's CliRunner (the tests) calls this group directly."""

    def invoke(self, ctx: Context) -> Any:
        from fusion.stop_signals import exit_status

        try:
            with _one_line_errors():
                return super().invoke(ctx)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM in a command that keeps no runs (the others say more)
            console.print("[bold yellow]interrupted[/]")
            raise typer.Exit(exit_status()) from None


app = typer.Typer(
    cls=_EntryPoint,
    help="fusionflow: train, evaluate and ship deep image-fusion models "
    "(prepare data with DVC, train with Ray, track with MLflow, orchestrate with Prefect).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")
app.add_typer(schedule_app, name="schedule")


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging")] = False) -> None:
    from fusion.stop_signals import stop_on_sigterm

    setup_logging(verbose)
    stop_on_sigterm()


# the order of `fusion --help`
app.command()(init)
app.command()(run)
app.command()(train)
app.command()(sweep)
app.command()(evaluate)
app.command()(report)
app.command()(fuse)
app.command()(reproduce)
app.command()(sync)
app.command()(models)
app.command("import-weights")(import_weights)
