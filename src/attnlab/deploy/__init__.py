"""Deploying a trained run: export it to a file (ONNX, torch.export) and serve it over HTTP."""
