"""The base of every configuration section: unknown keys, mutation and inf/nan are refused."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    # inf/nan pass gt=0 checks (train.lr=inf would only fail at the first step)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
