"""Trained fusion models as MLflow models: 2 to 8 encoded images of any size in, one fused PNG out.

MLflow's default exports take one fixed-shape tensor; a fusion model takes two or more
images whose size is only known at call time. The pyfunc here takes a DataFrame with one
row per fusion and binary columns `image_0`, `image_1` (required) and `image_2` ...
`image_7` (optional, e.g. more exposures): encoded PNG/JPEG/... bytes, base64 in JSON when
served over REST (`mlflow models serve`). It returns a DataFrame with a binary column
`fused` (PNG). Gray models fuse the luminance and restore the colour source's chroma, as
`fusion fuse` does; more images than the model takes are fused pairwise.

A bad request (a missing column, bytes that are no image, images of different sizes, fewer
than two images) raises MlflowException(INVALID_PARAMETER_VALUE), which the scoring server
answers with 400 and the message, instead of its generic error with a server traceback.

The model folder holds the checkpoint under `artifacts/` and the `fusion` package under
`code/`, so loading it needs the libraries in its requirements, not a fusionflow checkout:

    model = mlflow.pyfunc.load_model("models:/fusionflow-multi-focus-ufa@champion")
    out = model.predict(pd.DataFrame({"image_0": [a_png_bytes], "image_1": [b_png_bytes]}))
"""

from __future__ import annotations

import importlib.metadata
import logging
import warnings
from pathlib import Path

import mlflow.pyfunc
import pandas as pd  # the predict type hint: MLflow reads it when it loads the model
from mlflow.pyfunc import PythonModel  # mlflow/__init__ lazy-loads `pyfunc`, hiding its classes from mypy

MAX_INPUTS = 8
ARTIFACT_PATH = "model"
_log = logging.getLogger(__name__)
_REQUIREMENTS = ("torch", "numpy", "opencv-python-headless", "pydantic", "pyyaml", "pandas")


class FusionModel(PythonModel):
    def load_context(self, context) -> None:
        import torch

        from fusion.checkpoint import model_from_checkpoint

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model, self.payload = model_from_checkpoint(context.artifacts["checkpoint"], self.device)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        # a DataFrame hint: MLflow validates inputs against the signature given at save (it
        # infers none from this hint) and stops asking for type hints on every load
        from fusion.errors import FusionError
        from fusion.inference import fuse
        from fusion.io import encode_png

        columns = [f"image_{k}" for k in range(MAX_INPUTS) if f"image_{k}" in model_input.columns]
        fused = []
        for row, values in enumerate(model_input[columns].itertuples(index=False)):
            images = _row_images(row, columns, values)
            try:
                fused.append(encode_png(fuse(self.model, images, self.device)))
            except FusionError as exc:  # about the inputs, in words fit for the caller
                raise bad_request(f"row {row}: {exc}") from None
            except Exception as exc:
                # the scoring server would send a traceback full of server paths; keep it in the log
                _log.exception("fusing row %d failed", row)
                raise _server_error(f"row {row}: the model failed ({type(exc).__name__}); see the server log") from None
        return pd.DataFrame({"fused": fused})


def bad_request(message: str):
    """What the scoring server answers with 400 and `message` (MLflow's INVALID_PARAMETER_VALUE)."""
    from mlflow.exceptions import MlflowException

    return MlflowException.invalid_parameter_value(message)


def _server_error(message: str):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR

    return MlflowException(message, error_code=INTERNAL_ERROR)


def _row_images(row: int, columns: list[str], values) -> list:
    """The row's decoded RGB images; a 400 naming the cell for anything that is not 2..8 images of one size."""
    import numpy as np

    images, names = [], []
    for name, data in zip(columns, values):
        if data is None or (isinstance(data, float) and np.isnan(data)):
            continue
        images.append(_decode(row, name, data))
        names.append(name)
    if len(images) < 2:
        given = ", ".join(names) or "none"
        raise bad_request(
            f"row {row}: {len(images)} image(s) ({given}); the model fuses 2 to {MAX_INPUTS} images "
            f"given as image_0, image_1, ... image_{MAX_INPUTS - 1}"
        )
    sizes = [f"{n} {img.shape[1]}x{img.shape[0]}" for n, img in zip(names, images)]
    if len({img.shape[:2] for img in images}) != 1:
        raise bad_request(
            f"row {row}: the images differ in size ({', '.join(sizes)}; width x height); "
            f"fusion needs registered images of one size"
        )
    return images


def _decode(row: int, name: str, data):
    import base64
    import binascii

    import cv2
    import numpy as np

    if isinstance(data, str):
        # JSON carries bytes as base64; MLflow decodes it for dataframe_split/records but the
        # `inputs` format hands the text through
        try:
            data = base64.b64decode("".join(data.split()), validate=True)
        except (binascii.Error, ValueError):
            raise bad_request(
                f"row {row}, {name}: text that is not base64; send the encoded image bytes (base64 in JSON)"
            ) from None
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise bad_request(f"row {row}, {name}: expected encoded image bytes, got {type(data).__name__}")
    buf = np.frombuffer(bytes(data), np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if img is None:
        raise bad_request(
            f"row {row}, {name}: cannot decode the image bytes ({buf.size} bytes; "
            f"expected PNG, JPEG, TIFF, BMP or another format OpenCV reads)"
        )
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = [ColSpec("binary", f"image_{k}", required=k < 2) for k in range(MAX_INPUTS)]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([ColSpec("binary", "fused")]))


def _requirements() -> list[str]:
    out = []
    for dist in _REQUIREMENTS:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        out.append(f"{dist}=={version.split('+')[0]}")  # a CUDA/CPU local tag is not on PyPI
    return out


def save(checkpoint: Path, dest: Path) -> Path:
    """The MLflow model folder for `checkpoint` at `dest` (which must not exist)."""
    import fusion

    with warnings.catch_warnings():
        # the signature is explicit; an input example would make MLflow load the checkpoint and
        # fuse during every save, to show a request of base64 PNG bytes (".*": the message
        # starts with terminal colour codes)
        warnings.filterwarnings("ignore", message=".*An input example was not provided", category=UserWarning)
        mlflow.pyfunc.save_model(
            path=str(dest),
            python_model=str(Path(__file__).with_name("model_code.py")),  # models from code: no pickle
            artifacts={"checkpoint": str(checkpoint)},
            code_paths=[str(Path(fusion.__file__).parent)],
            signature=signature(),
            pip_requirements=_requirements(),
            metadata={"task": "image fusion", "inputs": "2..8 encoded images of one size", "output": "PNG"},
        )
    return dest
