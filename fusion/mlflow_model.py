"""Trained fusion models as MLflow models: 2 to 8 encoded images of any size in, one fused PNG out.

MLflow's default exports take one fixed-shape tensor; a fusion model takes two or more
images whose size is only known at call time. The pyfunc here takes a DataFrame with one
row per fusion and binary columns `image_0`, `image_1` (required) and `image_2` ...
`image_7` (optional, e.g. more exposures): encoded PNG/JPEG/... bytes, base64 in JSON when
served over REST (`mlflow models serve`). It returns a DataFrame with a binary column
`fused` (PNG). Gray models fuse the luminance and restore the colour source's chroma, as
`fusion fuse` does; more images than the model takes are fused pairwise.

The model folder holds the checkpoint under `artifacts/` and the `fusion` package under
`code/`, so loading it needs the libraries in its requirements, not a fusionflow checkout:

    model = mlflow.pyfunc.load_model("models:/fusionflow-multi-focus-ufa@champion")
    out = model.predict(pd.DataFrame({"image_0": [a_png_bytes], "image_1": [b_png_bytes]}))
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import mlflow.pyfunc

MAX_INPUTS = 8
ARTIFACT_PATH = "model"
_REQUIREMENTS = ("torch", "numpy", "opencv-python-headless", "pydantic", "pyyaml", "pandas")


class FusionModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        import torch

        from fusion.train.loop import model_from_checkpoint

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model, self.payload = model_from_checkpoint(context.artifacts["checkpoint"], self.device)

    def predict(self, context, model_input, params=None):
        import cv2
        import numpy as np
        import pandas as pd

        from fusion.errors import DataError
        from fusion.inference import fuse
        from fusion.io import encode_png

        columns = [f"image_{k}" for k in range(MAX_INPUTS) if f"image_{k}" in model_input.columns]
        fused = []
        for row, values in enumerate(model_input[columns].itertuples(index=False)):
            images = []
            for name, data in zip(columns, values):
                if data is None or (isinstance(data, float) and np.isnan(data)):
                    continue
                img = cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_COLOR)
                if img is None:
                    raise DataError(f"row {row}, {name}: cannot decode the image bytes")
                images.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
            fused.append(encode_png(fuse(self.model, images, self.device)))
        return pd.DataFrame({"fused": fused})


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

    mlflow.pyfunc.save_model(
        path=str(dest), python_model=FusionModel(), artifacts={"checkpoint": str(checkpoint)},
        code_paths=[str(Path(fusion.__file__).parent)], signature=signature(), pip_requirements=_requirements(),
        metadata={"task": "image fusion", "inputs": "2..8 encoded images of one size", "output": "PNG"},
    )
    return dest
