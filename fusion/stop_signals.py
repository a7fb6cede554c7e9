"""SIGTERM stops a command as Ctrl-C does.

`kill`, a scheduler's timeout, a node being drained and systemd stopping a unit all send
SIGTERM. Python's default is to die at once: the MLflow runs stay RUNNING, a sweep's rows are
never written and nothing says how to continue. Here it takes Ctrl-C's path instead (the
commands' KeyboardInterrupt handlers: runs marked KILLED, one line saying how to go on), and
the command exits 143 (128 + SIGTERM) rather than 130, as a scheduler expects.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

_received = signal.SIGINT  # the signal that stopped the command
_ignoring = False  # the stop's bookkeeping has begun


def stop_on_sigterm() -> None:
    """Install the handler: when a command starts, and again after `ray.init` (which installs
    a bare sys.exit, over Prefect's handler too in a flow run)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _as_ctrl_c)


def exit_status() -> int:
    """130 after Ctrl-C, 143 after SIGTERM."""
    return 128 + int(_received)


def is_stop(exc: BaseException | None) -> bool:
    """Whether `exc` is a command being stopped: Ctrl-C, or SIGTERM as this module raises it or
    as Prefect's flow engine does (its TerminationSignal, while a flow runs in this process)."""
    kind = type(exc)
    return isinstance(exc, KeyboardInterrupt) or (
        kind.__name__ == "TerminationSignal" and kind.__module__.startswith("prefect")
    )


def ignore_further() -> None:
    """The stop is being recorded: a second Ctrl-C or SIGTERM must not cut that short."""
    global _ignoring
    _ignoring = True
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _as_ctrl_c(signum: int, frame: FrameType | None) -> None:
    """Whatever Ctrl-C would do now: Python's KeyboardInterrupt, or the handler Ray Train puts in
    (it aborts the training; pipeline._ray_interrupts turns the exit that follows into one)."""
    global _received
    if _ignoring:
        return
    _received = signal.Signals(signum)
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
        return
    # SIGINT ignored (a command started with `&` or nohup) or at its default: stop all the same
    raise KeyboardInterrupt(f"stopped by {_received.name}")
