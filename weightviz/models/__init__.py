"""torch modules from files, and running them.

``builders`` makes a ``torch.nn.Module`` from a Keras file (through :mod:`weightviz.keras`), a
TorchScript/whole-model file or NumPy weight lists (``build_mlp``); ``inference`` runs a model
on samples in eval mode, batched, for the prediction widgets and ``divergence``.
"""
