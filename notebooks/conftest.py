"""pytest set-up for the notebooks (strict ``pytest --nbval --nbval-current-env``).

Strict nbval compares each cell's stderr, so a one-off message from matplotlib in a
fresh environment would fail the first plotting cell of whichever notebook runs first:

* with no writable config directory, matplotlib warns and uses a temporary one, in every
  kernel again; we take that directory once here and pass it to the kernels through
  ``MPLCONFIGDIR`` (kernels inherit this process's environment), so they stay quiet;
* building the font cache logs a warning when it takes more than 5 s; we build it here,
  in the pytest process, before any kernel starts.
"""
from __future__ import annotations

import os
import tempfile


def pytest_configure(config):
    try:
        import matplotlib
    except ImportError:  # the notebooks will say so themselves
        return
    configdir = matplotlib.get_configdir()
    if "MPLCONFIGDIR" not in os.environ and os.path.basename(configdir).startswith("matplotlib-") \
            and os.path.dirname(configdir) == tempfile.gettempdir():
        os.environ["MPLCONFIGDIR"] = configdir
    import matplotlib.font_manager  # noqa: F401  (builds the font cache if missing)
