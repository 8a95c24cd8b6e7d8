"""Compute plane: every model, tensor and dataset operation. Never imports `app`."""

CODE_VERSION = "0.1.0"
