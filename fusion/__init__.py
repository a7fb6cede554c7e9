"""fusionflow: train, evaluate and ship deep image-fusion models."""

__version__ = "0.1.0"
