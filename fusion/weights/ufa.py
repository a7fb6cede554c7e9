"""UFA-Fuse: the authors' `AF` state dict (`torch.save(model.state_dict())`, their key names).

The released model (fusion/models/ufa_released.py) uses the authors' module names, so the
import is key for key; the layout check is what stops another model's file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fusion.weights.importers import Imported, check_layout, load_torch_state_dict, register_importer


def expected_layout() -> dict[str, list[int]]:
    from fusion.models.ufa_released import ReleasedUFAFuse

    return {k: list(v.shape) for k, v in ReleasedUFAFuse().state_dict().items()}


@register_importer("ufa", ("FILE",), help="the state dict of the authors' AF network (455,111 parameters, RGB)")
def read_ufa(files: Sequence[Path]) -> Imported:
    (path,) = files
    state = load_torch_state_dict(path)
    check_layout(path, state, expected_layout(), "UFA-Fuse (released AF)")
    return Imported(
        variant="UFA",
        state_dict=dict(state),
        model_options={"released": True},
        task="multi-focus",
        notes=["the authors' AF network, spatial-softmax bug kept (train.options.fix_spatial_softmax=true fixes it)"],
    )
