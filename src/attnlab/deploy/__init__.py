"""Deploying trained runs: one file (ONNX or a torch.export program) that holds the model and
everything its predictor needs, and the predictor rebuilt from that file alone."""

from attnlab.deploy.export import export
from attnlab.deploy.exported import load_exported

__all__ = ["export", "load_exported"]
