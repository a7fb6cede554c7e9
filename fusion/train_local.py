"""`fusion train --out`: a plain local run, in this process, into one folder: no Ray, no MLflow.

The quickest loop for experimenting on the trainer itself; OUT/last.pt resumes it.
"""

from __future__ import annotations

from pathlib import Path

from fusion import pipeline
from fusion.checkpoint import BEST, LAST
from fusion.config import Config
from fusion.errors import FusionError
from fusion.train.loop import Trainer, TrainState


def train_into(workspace: Path, cfg: Config, out: Path, resume: str | None = None) -> TrainState:
    """Train `cfg` on the workspace's prepared data into `out`; `resume` is a checkpoint
    (OUT/last.pt) to continue from."""
    # before any work: never replace a finished run's checkpoints unasked
    held = [out / n for n in (LAST, BEST) if (out / n).exists()]
    if held and resume is None:
        raise FusionError(
            f"--out {out}: holds the checkpoints of an earlier run ({held[0].name}); continue it "
            f"with --resume {out / LAST} or train into another folder"
        )
    prepared = pipeline.prepare(workspace, cfg)
    created = not out.exists()
    try:
        return Trainer(cfg, prepared.root).fit(out, resume_from=Path(resume) if resume else None)
    except FusionError:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a folder this command made and could not fill (full disk, bad data)
        raise
