"""Compute plane: every model, tensor and dataset operation. Never imports `app`.

Its code version (the hash of these sources in every result key) is `workers.contract.version`.
"""
