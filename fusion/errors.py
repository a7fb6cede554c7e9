"""Errors users see. Each names the file or parameter at fault and what is wrong with it."""


class FusionError(Exception):
    """Base class: the CLI prints these as one clear line instead of a traceback."""


class ConfigError(FusionError, ValueError):
    """A parameter is missing, misspelt or out of range."""


class DataError(FusionError):
    """An input file is missing, unreadable, corrupt or inconsistent with its pair."""


class ReproducibilityError(FusionError):
    """A run cannot be pinned to (or rebuilt from) its code and data versions."""
