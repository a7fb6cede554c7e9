"""`fusion import-weights ... --register NAME`: the authors' weights as an MLflow model version.

One run (tagged `source=authors`) holds the imported checkpoint under `checkpoints/best.pt`
(so `runs:/RUN_ID` works with `fusion fuse`/`fusion evaluate --model`) and the MLflow model
folder under `model/`; the version of NAME points at that folder and carries the same tag,
so the UI and `fusion report` can put nightly models beside the authors' weights.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from fusion import tracking
from fusion.config import load_config
from fusion.weights import SOURCE_TAG


def register_authors(workspace: Path, checkpoint: Path, name: str) -> tuple[str, str]:
    """(run id, model version) of the registered import."""
    import shutil

    from fusion.checkpoint import load_checkpoint
    from fusion.tracking import model_flavor as mlflow_model

    payload = load_checkpoint(checkpoint)
    t = tracking.target(load_config(workspace), workspace)
    c = tracking.client(t)
    tags = {
        "source": SOURCE_TAG,
        "model": payload["model"],
        "variant": payload["variant"],
        "task": payload.get("task", ""),
        "stage": payload.get("stage", "single"),
    }
    run = c.create_run(
        tracking.experiment_id(t),
        run_name=f"authors-{payload['model']}",
        tags={**tags, "mlflow.runName": f"authors-{payload['model']}", **tracking.environment_tags()},
    )
    run_id = run.info.run_id
    try:
        for key, value in [
            ("model", payload["model"]),
            ("variant", payload["variant"]),
            ("model_options", json.dumps(payload["model_options"], sort_keys=True)),
            ("num_parameters", payload["num_parameters"]),
        ]:
            c.log_param(run_id, key, tracking.param_value(value))
        with tempfile.TemporaryDirectory() as tmp:
            staged = Path(tmp) / "best.pt"
            shutil.copyfile(checkpoint, staged)
            tracking.log_artifact(t, run_id, staged, "checkpoints")
            info = Path(tmp) / "source_files.json"
            info.write_text(
                json.dumps(
                    {
                        "source_files": payload.get("source_files", []),
                        "ignored_source_tensors": payload.get("ignored_source_tensors", []),
                        "notes": payload.get("import_notes", []),
                    },
                    indent=2,
                )
                + "\n"
            )
            tracking.log_artifact(t, run_id, info, "import")
            model_dir = mlflow_model.save(staged, Path(tmp) / mlflow_model.ARTIFACT_PATH)
            tracking.log_artifacts(t, run_id, model_dir, mlflow_model.ARTIFACT_PATH)
        tracking.ensure_registered_model(c, name, "fusion models imported from their authors' published weights")
        mv = c.create_model_version(
            name, source=f"runs:/{run_id}/{mlflow_model.ARTIFACT_PATH}", run_id=run_id, tags=tags
        )
    except BaseException:
        tracking.end_run(t, run_id, "FAILED")
        raise
    tracking.end_run(t, run_id)
    return run_id, str(mv.version)
