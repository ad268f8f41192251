"""Kept for ``from weightviz.demo_models import SmallCNN`` (the notebooks' path): the demo
models live in :mod:`weightviz.demo.models`."""
from .demo.models import *  # noqa: F401,F403
from .demo.models import __all__  # noqa: F401
