"""The MLflow model's code ("models from code"): MLflow runs this file, shipped in the model
folder beside the `fusion` package, to build the model when it loads it, instead of
unpickling a Python object, so loading a fusionflow model unpickles no code (as
fusion.checkpoint loads weights with weights_only=True)."""

from mlflow.models import set_model

from fusion.tracking.model_flavor import FusionModel

set_model(FusionModel())
