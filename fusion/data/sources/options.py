"""The options a layout may take in params.yaml (`sources.<name>.<option>`), each with the
check validate_spec applies and the words its error uses for a valid value.

Layouts share these (both `msrs` and `duts` take `split`); a layout with an option of its
own defines it next to its reader and passes it to `@layout(..., options=)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeGuard

from fusion.data.sources.records import TASKS


@dataclass(frozen=True)
class Option:
    check: Callable[[object], bool]
    expected: str  # "expected <this>, got ..."
    required: bool = False


def required(option: Option) -> Option:
    """`option`, which the spec must give (the reader's keyword has no default)."""
    return dataclasses.replace(option, required=True)


def _str_list(v: object) -> TypeGuard[list[str] | tuple[str, ...]]:
    return isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)


def _set_list(v: object) -> bool:
    return isinstance(v, (list, tuple)) and all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v)


def _folder_list(v: object) -> bool:
    return _str_list(v) and len(v) >= 2


def _name(v: object) -> bool:
    return isinstance(v, str) and bool(v)


SKIP_BAD = Option(lambda v: isinstance(v, bool), "true or false")  # every layout takes it
TRIPLES = Option(lambda v: isinstance(v, bool), "true or false")
SETS = Option(_set_list, "a list of set names like [set00, set01]")
SUBSETS = Option(_str_list, "a list like [CT-MRI, PET-MRI]")
FOLDERS = Option(_folder_list, "a list of >= 2 folder names")
MODALITIES = Option(_str_list, "a list of names, one per folder")
ORDER = Option(lambda v: v in ("brightness", "name"), "brightness or name")
SPLIT = Option(_name, "a folder name such as train / test (msrs) or TR / TE (duts)")
GT = Option(_name, "a folder name")
TASK = Option(lambda v: v in TASKS, " | ".join(TASKS))
