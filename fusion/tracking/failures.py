"""Which tracking failures are the server's absence rather than a rejected request.

One classifier for the two callers that must tell them apart: the spool (keep training,
deliver later) and the nightly's retry policy (retry the stage). A request the server
answered with a real error (a missing run, a bad value) is neither and must raise.
"""

from __future__ import annotations

# MLflow's error codes for "try again": the server is overloaded, restarting or failing inside
RETRY_CODES = ("TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR", "REQUEST_LIMIT_EXCEEDED")


def is_mlflow_error(exc: BaseException) -> bool:
    """An MlflowException, recognised without importing MLflow (the core runs without it)."""
    return any(c.__name__ == "MlflowException" for c in type(exc).__mro__)


def unreachable(exc: BaseException) -> bool:
    """The tracking server could not be reached, or answered "try again later"."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if not is_mlflow_error(exc):
        return False
    text = str(exc)
    return (
        getattr(exc, "error_code", "") in RETRY_CODES
        or "failed with exception" in text
        or "Max retries exceeded" in text
        or "status code 50" in text
    )


def mlflow_error() -> type[Exception]:
    """MLflow's exception class, for `except mlflow_error():` (the expression runs only when
    an exception reaches the clause, so the module needs no MLflow to import)."""
    from mlflow.exceptions import MlflowException

    return MlflowException
