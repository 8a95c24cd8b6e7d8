"""Architecture families: one file each (layers, hook points, live fast path), one registry over them.

`from workers.models.arch import get_architecture, neuron_hook, ...`; see `registry` for how a family file
is found and `base` for what it declares.
"""

from __future__ import annotations

from workers.models.arch.base import (
    ArchitectureSpec,
    LiveOps,
    NeuronFn,
    Readout,
    UnsupportedArchitectureError,
)
from workers.models.arch.registry import (
    LiveFastPath,
    all_layers,
    architectures,
    get_architecture,
    live_fast_path,
    neuron_hook,
    register_architecture,
    spec_for_model_type,
    supported_model_types,
)

__all__ = [
    "ArchitectureSpec",
    "LiveFastPath",
    "LiveOps",
    "NeuronFn",
    "Readout",
    "UnsupportedArchitectureError",
    "all_layers",
    "architectures",
    "get_architecture",
    "live_fast_path",
    "neuron_hook",
    "register_architecture",
    "spec_for_model_type",
    "supported_model_types",
]
