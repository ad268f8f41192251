"""Keras -> PyTorch: rebuild a Keras model from its JSON architecture as a torch module.

The architecture is read as plain data (never deserialised, Lambda bytecode never decoded).
The built module takes the same inputs as the Keras model (channels-last images, (N, T, F)
sequences; several inputs as positional arguments in the model's input order) and returns
what Keras returns (several outputs as a tuple). Keras layer names are submodule names.

Keras masks (``Embedding(mask_zero=True)``, ``Masking``) are reproduced for RNNs,
Bidirectional, GlobalAveragePooling1D, Attention and AdditiveAttention. Refused with
UnsupportedLayerError before anything is built, never silently approximated: layers without a
converter (``supported_layers()`` lists those with one), unknown activations, masks reaching
MultiHeadAttention / TimeDistributed / nested models, call options a converter does not model
(``use_causal_mask`` and ``return_attention_scores`` are modelled for the attention layers).
Lambda layers raise UnsafeCheckpointError unless ``custom_layers`` replaces them. Keras 2's
``CuDNNLSTM`` / ``CuDNNGRU`` become ordinary torch LSTM/GRU twins of the cuDNN cells;
``ConvLSTM1D/2D/3D`` run an explicit time loop of torch convolutions. Not
modelled: ``stateful`` RNNs keep no state between calls (each call starts from zeros, like a
freshly reset Keras model); RNNs run an explicit time loop (exact, not cuDNN-fast).
"""
from __future__ import annotations

from typing import Callable


def supported_layers() -> list[str]:
    """Keras class names with a torch converter."""
    from . import layers  # noqa: F401  (registers the converters)
    from .registry import CONVERTERS
    return sorted(set(CONVERTERS) | {"Sequential", "Functional", "Model"})


def _examples(spec, size: int) -> list:
    import torch
    from ..errors import UnsupportedLayerError, message
    out = []
    gen = torch.Generator().manual_seed(0)
    for s in spec.input_specs:
        if s.shape is None:
            raise UnsupportedLayerError(message(
                f"the input shape of Keras model {spec.name!r} is unknown",
                expected="an InputLayer / input_shape / build_input_shape in the config",
                fix="build the Keras model with an explicit input shape before saving it"))
        if not all(d is None or (type(d) is int and d > 0) for d in s.shape[1:]):
            from ..errors import CorruptFileError
            raise CorruptFileError(message(
                f"input {s.name!r} of Keras model {spec.name!r} has an invalid shape",
                expected="positive sizes or None", got=repr(s.shape)[:100]))
        shape = (1,) + tuple(size if d is None else int(d) for d in s.shape[1:])
        if "int" in s.dtype or "bool" in s.dtype:
            out.append(torch.zeros(shape, dtype=torch.int64))
        else:
            out.append(torch.randn(shape, generator=gen))
    return out


def build_model(architecture: dict, weights: Callable[[str], list] | None, *,
                custom_layers: dict | None = None, keras_version: str | None = None):
    """Build ``architecture`` (the top-level Keras model JSON as a dict) as an nn.Module.

    ``weights(layer_name)`` returns a top-level layer's arrays in Keras ``layer.weights``
    order (for a nested model / Bidirectional / TimeDistributed, all its weights); None keeps
    torch's initialisation. ``custom_layers`` maps a layer name (or 'outer/inner' path) to a
    torch module (or plain function) that replaces it (required for Lambda layers), or a Keras
    class name to a factory ``factory(layer_config) -> module`` used for every such layer
    (name and path entries win over class entries). Replacements get the layer's inputs in
    Keras layout; a replacement with a ``load_keras_weights(arrays)`` method is called with
    the layer's Keras arrays (float32 NumPy, ``layer.weights`` order) when there are any
    (without one, they are not loaded and a UserWarning says so).
    """
    from ..errors import CorruptFileError, WeightvizError, message
    from . import layers  # noqa: F401
    from .checks import scan
    from .config import keras_major, parse
    from .graph import build_graph
    from .registry import Context

    if not isinstance(architecture, dict):
        raise CorruptFileError(message("the Keras architecture is not a JSON object",
                                       expected='a dict with "class_name" and "config"',
                                       got=type(architecture).__name__))
    arch = dict(architecture)
    if keras_version is not None:
        arch["keras_version"] = keras_version
    ctx = Context(keras_major(arch), dict(custom_layers or {}))
    try:
        spec = parse(arch, ctx.major)
        scan(spec, ctx)                    # every refusal happens here, before building
    except WeightvizError:
        raise
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as e:
        raise CorruptFileError(message(
            "the Keras architecture is malformed", expected="a config written by Keras",
            fix="check that the JSON / model_config is complete and unedited",
            got=f"{type(e).__name__}: {str(e)[:200]}")) from None
    if weights is None:
        wfn = lambda name: None            # noqa: E731  keep torch's initialisation
    else:                                  # a layer missing from the source is an error later
        wfn = lambda name: (lambda ws: [] if ws is None else ws)(weights(name))  # noqa: E731
    last = None
    for size in (8, 32, 96):               # unknown (None) dims: try growing example sizes
        try:
            try:
                model = build_graph(spec, wfn, ctx, _examples(spec, size))
            except (KeyError, TypeError, AttributeError, IndexError) as e:
                raise CorruptFileError(message(
                    "the Keras architecture is inconsistent", expected="a config written by Keras",
                    fix="check that the JSON / model_config is complete and unedited",
                    got=f"{type(e).__name__}: {str(e)[:200]}")) from None
            break
        except CorruptFileError as e:      # maybe a dummy size too small for the conv stack
            last = e
            if not any(d is None for s in spec.input_specs for d in (s.shape or ())[1:]):
                raise
    else:
        raise last
    model.keras_version = arch.get("keras_version")
    model.eval()
    if any(d is None for s in spec.input_specs for d in (s.shape or ())[1:]):
        from .summary import record_alt_shapes
        try:
            record_alt_shapes(model, _examples(spec, size + 5))
        except RuntimeError:
            pass
    return model


def build_from_checkpoint(ckpt, weights_ckpt=None, custom_layers: dict | None = None):
    """Build from weightviz Checkpoints: ``ckpt.architecture`` and the weights of
    ``weights_ckpt`` (default: ``ckpt`` itself), read per layer with ``layer_weights``."""
    from ..errors import UnknownFormatError, WeightvizError, message
    arch = getattr(ckpt, "architecture", None)
    if not isinstance(arch, dict):
        raise UnknownFormatError(message(
            "this checkpoint carries no Keras architecture",
            expected="a full-model Keras .h5 / .keras file, or a Keras JSON architecture",
            fix="pass the architecture JSON and the weights file: build(json_path, weights=h5)",
            got=f"a {getattr(ckpt, 'format', '?')} checkpoint"))
    src = weights_ckpt if weights_ckpt is not None else ckpt
    if (weights_ckpt is not None and weights_ckpt.architecture is None
            and weights_ckpt.format == "keras-h5" and weights_ckpt.path):
        # re-read the weights knowing the architecture: real layer names for files without
        # name attributes (Keras < 3.6) and sub-model weights grouped per layer
        from ..formats import open_checkpoint
        try:
            src = open_checkpoint(weights_ckpt.path, architecture=arch)
        except WeightvizError:        # keep the checkpoint as given; its names may suffice
            src = weights_ckpt
    version = None
    for c in (ckpt, src):
        meta = getattr(c, "metadata", None) or {}
        if not arch.get("keras_version") and meta.get("keras_version"):
            version = str(meta["keras_version"])
            break
    return build_model(arch, lambda name: src.layer_weights(name), custom_layers=custom_layers,
                       keras_version=version)


__all__ = ["build_model", "build_from_checkpoint", "supported_layers"]
