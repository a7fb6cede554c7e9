"""SIGTERM takes Ctrl-C's path (fusion/stop_signals.py): each case in a fresh interpreter, since
signal handlers are process-wide."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO


def _python(body: str) -> str:
    script = textwrap.dedent(
        """
        import os, signal, time
        from fusion import stop_signals
        """
    ) + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


STOPPED = """
stop_signals.stop_on_sigterm()
try:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)
    print("still running")
except KeyboardInterrupt as exc:
    print("KeyboardInterrupt", stop_signals.exit_status())
"""


@pytest.mark.parametrize(
    "sigint",
    [
        "signal.default_int_handler",  # a command started from a terminal
        "signal.SIG_IGN",  # started with `&` or nohup: Ctrl-C cannot reach it, SIGTERM must
        "signal.SIG_DFL",
    ],
)
def test_sigterm_raises_keyboard_interrupt_and_the_exit_status_is_143(sigint):
    assert _python(f"signal.signal(signal.SIGINT, {sigint})\n" + STOPPED) == "KeyboardInterrupt 143"


def test_the_exit_status_is_130_until_a_sigterm_arrives():
    assert _python("print(stop_signals.exit_status())") == "130"


def test_sigterm_calls_the_sigint_handler_a_library_put_in_instead():
    """Ray Train's handler aborts its training on Ctrl-C; SIGTERM must do the same, not bypass it."""
    out = _python(
        """
        signal.signal(signal.SIGINT, lambda s, f: print("library handler, signal", s))
        stop_signals.stop_on_sigterm()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
        print("exit", stop_signals.exit_status())
        """
    )
    assert out.splitlines() == ["library handler, signal 2", "exit 143"]


def test_once_the_stop_is_being_recorded_further_signals_are_ignored():
    out = _python(
        """
        stop_signals.stop_on_sigterm()
        stop_signals.ignore_further()
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        print("bookkeeping finished", stop_signals.exit_status())
        """
    )
    assert out == "bookkeeping finished 130"


@pytest.mark.parametrize(("how", "status"), [("ctrl-c", 130), ("sigterm", 143)])
def test_a_command_that_keeps_no_runs_prints_one_line_and_exits_130_or_143(how, status):
    """Not click's "Aborted!" and status 1: a scheduler reads the status as the signal's."""
    script = textwrap.dedent(
        """
        import os, signal, sys, time
        import typer
        from fusion.cli.app import _EntryPoint
        from fusion.stop_signals import stop_on_sigterm

        app = typer.Typer(cls=_EntryPoint)

        @app.command()
        def work(how: str) -> None:
            stop_on_sigterm()
            if how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(10)
            raise KeyboardInterrupt

        @app.command()
        def other() -> None:
            pass

        app(["work", sys.argv[1]])
        """
    )
    proc = subprocess.run([sys.executable, "-c", script, how], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == status, proc.stderr
    assert proc.stderr.strip() == "interrupted" and proc.stdout == ""
