"""Kept for ``from weightviz import inference`` (the notebooks' path): the code lives in
:mod:`weightviz.models.inference`."""
from .models.inference import as_array, eval_mode, is_probability, run, top_k

__all__ = ["as_array", "eval_mode", "is_probability", "run", "top_k"]
