"""Trained models as MLflow models: two or more images of any size in, the same fused image
as `fusion fuse` out; logged to a run, loaded back by URI, and refused on bad bytes."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from fusion import tracking
from fusion.checkpoint import untrained_checkpoint
from fusion.errors import DataError
from fusion.inference import fuse, load_model
from fusion.tracking import model_flavor as mlflow_model


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


@pytest.fixture
def images(shared_data):
    """Odd-sized crops (37 x 53) of a real Lytro triple: near, mid and far focus."""
    out = []
    for letter in "ABC":
        img = cv2.imread(str(shared_data / f"mf/Lytro20/triples/lytro-01-{letter}.jpg"))
        out.append(cv2.cvtColor(img[100:137, 200:253], cv2.COLOR_BGR2RGB))
    return out


def test_logged_model_fuses_two_or_three_images_like_fusion_fuse(tmp_path, images):
    ckpt = untrained_checkpoint(tmp_path / "best.pt", "ufa", "UFA")
    target = tracking.TrackingTarget(f"sqlite:///{tmp_path / 'mlflow.db'}", "t", (tmp_path / "artifacts").as_uri())
    run_id = tracking.client(target).create_run(tracking.experiment_id(target)).info.run_id
    # logged as the pipeline logs it: the saved folder as the run's model/ artifact
    tracking.log_artifacts(target, run_id, mlflow_model.save(ckpt, tmp_path / "model"), mlflow_model.ARTIFACT_PATH)
    uri = f"runs:/{run_id}/{mlflow_model.ARTIFACT_PATH}"

    import mlflow.pyfunc

    mlflow.set_tracking_uri(target.uri)
    try:
        loaded = mlflow.pyfunc.load_model(uri)
    finally:
        mlflow.set_tracking_uri(None)
    names = [c.name for c in loaded.metadata.get_input_schema().inputs]
    assert names[:3] == ["image_0", "image_1", "image_2"] and len(names) == mlflow_model.MAX_INPUTS
    frame = pd.DataFrame(
        {
            "image_0": [_png(images[0]), _png(images[0])],
            "image_1": [_png(images[1]), _png(images[1])],
            "image_2": [None, _png(images[2])],
        }
    )
    out = loaded.predict(frame)
    model, _ = load_model(ckpt)
    for row, sources in enumerate((images[:2], images)):
        fused = cv2.cvtColor(
            cv2.imdecode(np.frombuffer(out["fused"][row], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
        )
        assert fused.shape == (37, 53, 3)
        assert np.array_equal(fused, fuse(model, sources, "cpu"))  # the same as `fusion fuse`

    with pytest.raises(Exception, match=r"row 0, image_1: cannot decode"):
        loaded.predict(pd.DataFrame({"image_0": [_png(images[0])], "image_1": [b"not an image"]}))
    with pytest.raises(Exception, match="image_1"):  # the signature requires two images
        loaded.predict(pd.DataFrame({"image_0": [_png(images[0])]}))


def test_the_model_folder_is_self_contained(tmp_path):
    folder = mlflow_model.save(untrained_checkpoint(tmp_path / "best.pt", "ufa", "UFA"), tmp_path / "m")
    assert (folder / "MLmodel").is_file() and (folder / "code" / "fusion" / "inference.py").is_file()
    # a model from code: MLflow builds it by running model_code.py when it loads it, no pickle
    flavor = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["model_code_path"].endswith("model_code.py") and "python_model" not in flavor
    assert not list(folder.rglob("*.pkl"))
    requirements = (folder / "requirements.txt").read_text()
    assert "torch==" in requirements and "+cpu" not in requirements
    from fusion.checkpoint import resolve_checkpoint

    assert resolve_checkpoint(folder).name == "best.pt"  # `fusion fuse --model` accepts the folder too
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no checkpoint .* its checkpoints/ or artifacts/"):
        resolve_checkpoint(tmp_path / "empty")
