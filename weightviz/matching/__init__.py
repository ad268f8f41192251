"""check() and load(): a checkpoint against a model.

``match`` pairs the model's parameters with the checkpoint's tensors and decides each pair's
status; ``report`` holds the result (rows, verdict, text/HTML/JSON); ``names`` proposes renames
(prefixes, wrappers); ``onnx_fold`` explains BatchNorms an ONNX exporter folded into a Conv;
``importpath`` resolves ``"pkg.module:Class"`` model specs.
"""
