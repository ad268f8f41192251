"""stats(): per-tensor statistics and histograms, streamed in bounded memory.

``table`` holds the verb and its result (StatsTable, TensorStats, FLAGS); ``scan`` is the
streaming pass over one tensor, ``kernels`` its compiled inner loops, ``chunks`` the block
plan, ``widen`` the exact bf16/fp8/int widening; ``fanout`` runs the scan on a Dask cluster;
``sources`` turns a path, state dict or module into a Checkpoint.
"""
from .sources import as_checkpoint
from .table import FLAGS, Histogram, StatsTable, TensorStats, describe, stats, tensor_stats, unit_axis

__all__ = ["FLAGS", "Histogram", "StatsTable", "TensorStats", "as_checkpoint", "describe", "stats",
           "tensor_stats", "unit_axis"]
