"""Deploying trained runs: export one to a file (ONNX or a torch.export program) that holds the
model and everything its predictor needs, rebuild the predictor from that file alone, and serve
either over HTTP (attnlab.deploy.serve)."""

from attnlab.deploy.export import export
from attnlab.deploy.exported import load_exported

__all__ = ["export", "load_exported"]
