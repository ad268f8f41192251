"""Keras HDF5 files: Keras 1/2/tf.keras and Keras 3 legacy ``.h5`` (full model or weights
only), the Keras 3 / tf-keras ``.weights.h5`` store (and tf.keras 2.13's variant).

Tensor names are ``<top-level layer>/<rest>`` with the real layer names; ``Checkpoint.groups``
maps each top-level layer that has weights to its tensors in Keras's ``layer.weights`` order.

* Legacy ``.h5``: the stored weight name without ``:0``; prefixed with the layer group when it
  does not start with it (``d_in/kernel:0`` in group ``inner`` -> ``inner/d_in/kernel``); an
  outer-model prefix before ``<layer>/`` is dropped (``seqm/dd/kernel`` -> ``dd/kernel``);
  Keras 1's ``dense_1_W`` -> ``dense_1/W``. Writers store a sub-model's weights
  trainable-first; they are regrouped per sub-layer, sub-models in config order (without a
  config: by first appearance, which misplaces a frozen sub-layer).
* ``.weights.h5``: the real names (each ``vars`` group's ``name`` attribute, Keras >= 3.6, else
  the class-counter walk over the config) joined like Keras 3's ``Variable.path``
  (``bilstm/forward_lstm/lstm_cell/kernel``), each ``vars/i`` named by the layer class
  (``kernel``, ``bias``, ``gamma`` ...) where the config determines it, else ``vars/i``.
  Without config or ``name`` attributes the stored group names (``dense_1``) stand in.

``read(path, architecture=...)`` (a config dict, a Checkpoint, or a JSON / ``.keras`` path)
supplies the config a weights-only file lacks.
"""
from __future__ import annotations

import os

from ..checkpoint import Checkpoint
from . import keras_json, keras_zip
from .keras_store import arch_dict, layout, opener_for, read_store

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _magic_at(head: bytes) -> bool:
    off = 0
    while off + 8 <= len(head):
        if head[off:off + 8] == HDF5_MAGIC:
            return True
        off = 512 if off == 0 else off * 2
    return False


def sniff(head: bytes, path: str) -> bool:
    if not _magic_at(head):
        return False
    try:
        import h5py
        with h5py.File(path, "r", locking=False) as f:
            return layout(f) is not None
    except Exception:  # noqa: BLE001 - a sniff never raises
        return False


def read(path, *, architecture=None, **options) -> Checkpoint:
    """Open a Keras HDF5 file lazily. ``architecture=`` (a config dict or a JSON path)
    supplies the model config for a weights-only file."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    return read_store(opener_for(path), path, file_size=size, mmap_path=path,
                      architecture=architecture_option(architecture, path), fmt="keras-h5")


def architecture_option(architecture, path):
    """``architecture=``: a config dict, a Checkpoint that has one, or a JSON / .keras path."""
    if architecture is None or isinstance(architecture, dict) or hasattr(architecture, "architecture"):
        return arch_dict(architecture, path)
    with open(architecture, "rb") as fh:
        zipped = fh.read(4) == b"PK\x03\x04"
    return (keras_zip if zipped else keras_json).read(architecture).architecture
