"""Bad requests to the MLflow model raise MlflowException(INVALID_PARAMETER_VALUE), which the
scoring server turns into a 400 carrying the message (not its generic error and traceback)."""

from __future__ import annotations

import base64
import re

import cv2
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from fusion.checkpoint import untrained_checkpoint
from fusion.tracking import model_flavor as mlflow_model


def _png(h: int, w: int, seed: int = 0) -> bytes:
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    import mlflow.pyfunc

    tmp = tmp_path_factory.mktemp("pyfunc")
    untrained_checkpoint(tmp / "best.pt", "ufa", "UFA")
    return mlflow.pyfunc.load_model(str(mlflow_model.save(tmp / "best.pt", tmp / "model")))


def _refused(loaded, frame: pd.DataFrame) -> str:
    with pytest.raises(MlflowException) as info:
        loaded.predict(frame)
    assert info.value.error_code == "INVALID_PARAMETER_VALUE" and info.value.get_http_status_code() == 400
    return info.value.message


@pytest.mark.parametrize(
    "frame, expected",
    [
        (
            {"image_0": [_png(20, 30)], "image_1": [b"not an image"]},
            r"row 0, image_1: cannot decode the image bytes \(12 bytes",
        ),
        ({"image_0": [_png(20, 30)], "image_1": [b""]}, r"row 0, image_1: cannot decode the image bytes \(0 bytes"),
        (
            {"image_0": [_png(20, 30)], "image_1": [_png(21, 30)]},
            r"row 0: the images differ in size \(image_0 30x20, image_1 30x21; width x height\)",
        ),
        (
            {"image_0": [_png(20, 30), _png(20, 30)], "image_1": [_png(20, 30), None]},
            r"row 1: 1 image\(s\) \(image_0\); the model fuses 2 to 8 images",
        ),
        ({"image_0": [_png(20, 30)], "image_1": ["%%% not base64"]}, r"row 0, image_1: text that is not base64"),
    ],
    ids=["undecodable", "empty", "sizes", "single", "text"],
)
def test_a_bad_request_is_an_invalid_parameter_naming_the_row_and_column(loaded, frame, expected):
    message = _refused(loaded, pd.DataFrame(frame))
    assert re.search(expected, message), message
    assert "Traceback" not in message and "/" not in message.replace("width x height", "")


def test_a_missing_column_is_refused_by_the_signature_with_its_name(loaded):
    message = _refused(loaded, pd.DataFrame({"img_a": [_png(20, 30)], "img_b": [_png(20, 30)]}))
    assert "missing inputs ['image_0', 'image_1']" in message


def test_base64_text_as_the_inputs_format_sends_it_is_decoded(loaded):
    text = {k: [base64.b64encode(_png(20, 30, seed=k)).decode()] for k in (0, 1)}
    out = loaded.predict(pd.DataFrame({"image_0": text[0], "image_1": text[1]}))
    fused = cv2.imdecode(np.frombuffer(out["fused"][0], np.uint8), cv2.IMREAD_COLOR)
    assert fused.shape == (20, 30, 3)
