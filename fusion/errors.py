"""Errors users see. Each names the file or parameter at fault and what is wrong with it."""


class FusionError(Exception):
    """Base class: the CLI prints these as one clear line instead of a traceback."""


class ConfigError(FusionError, ValueError):
    """A parameter is missing, misspelt or out of range."""


class DataError(FusionError):
    """An input file is missing, unreadable, corrupt or inconsistent with its pair."""


class ReproducibilityError(FusionError):
    """A run cannot be pinned to (or rebuilt from) its code and data versions."""


class OutputError(FusionError):
    """An output cannot be written: the disk is full or read-only, or the folder is not ours."""


_FULL = {"ENOSPC", "EDQUOT", "EFBIG"}
_READ_ONLY = {"EROFS", "EACCES", "EPERM"}
DISK_ERRNOS = _FULL | _READ_ONLY


def output_error(path, exc: OSError | RuntimeError) -> OutputError:
    """One line for a failed write: the file, the system's reason, and what the user can do."""
    import errno

    name = errno.errorcode.get(getattr(exc, "errno", None) or 0, "")
    # torch.save's zip writer says only "unexpected pos N vs M" when a write comes up short
    reason = getattr(exc, "strerror", None) or "the write stopped part-way"
    if name in _FULL:
        hint = "the disk (or your quota) is full: free space or write somewhere else"
    elif name in _READ_ONLY:
        hint = "the location is read-only or not writable by you: write somewhere else"
    else:
        hint = "is the disk full or read-only?"
    return OutputError(f"{path}: cannot write ({reason}); {hint}")
