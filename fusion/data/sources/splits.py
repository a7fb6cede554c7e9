"""Leakage-free train/test splits of source records by their `group`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fusion.errors import ConfigError


def split_by_group(pairs: Sequence, test_fraction: float, seed: int = 0) -> tuple[list, list]:
    """Train/test split by `group` (KAIST sequence, medical case...): no group on both sides.

    round(test_fraction * groups) groups go to test, at least 1 and at most groups - 1;
    which ones depends only on the sorted group names and the seed.
    """
    if not (isinstance(test_fraction, (int, float)) and 0.0 < test_fraction < 1.0):
        raise ConfigError(f"test_fraction: must be strictly between 0 and 1, got {test_fraction!r}")
    groups = sorted({p.group for p in pairs})
    if len(groups) < 2:
        raise ConfigError(
            f"test_fraction={test_fraction}: a split by group needs >= 2 groups, but the {len(pairs)} pair(s) "
            f"have {len(groups)} ({', '.join(groups) or 'none'}); add data or evaluate on another source"
        )
    n_test = min(len(groups) - 1, max(1, round(test_fraction * len(groups))))
    order = np.random.default_rng(seed).permutation(len(groups))
    test_groups = {groups[i] for i in order[:n_test]}
    train = [p for p in pairs if p.group not in test_groups]
    test = [p for p in pairs if p.group in test_groups]
    return train, test
