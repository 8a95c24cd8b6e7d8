"""GPT-NeoX (Pythia): layers `layers`, ungated MLP (`mlp.dense_4h_to_h` input / `mlp.act` output).

No live fast path: with its default parallel residual the MLP reads the layer's input, not a residual after
attention, so the cached-prefix replay does not apply; the live session answers by full forwards.
"""

from __future__ import annotations

from workers.models.arch.base import ArchitectureSpec

__all__ = ["SPECS"]

SPECS = (
    ArchitectureSpec(
        family="gpt_neox", model_types=("gpt_neox",),
        layers_path="layers", down_proj_path="mlp.dense_4h_to_h", act_path="mlp.act",
        readout="last", head=("score",),
    ),
)
