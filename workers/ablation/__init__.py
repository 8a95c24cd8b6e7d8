"""Neuron ablation (METHOD.md §5): `engine` (hooks), `live` (interactive session), `experiments` (A/B/C).

Nothing is imported here, so importing the package stays torch-free until a submodule is used.
"""
