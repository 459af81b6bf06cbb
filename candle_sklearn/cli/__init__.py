"""The application: the ``candle-sklearn`` command line and its workflows (image folders,
the paper's experiments, the demo, text tables and CSV, embedding files with skip-on-error).

It is built on the library and nothing in the library imports it (an import contract in
CI checks that); ``main`` and ``run`` are the command line's entry points.
"""

from .main import main, run

__all__ = ["main", "run"]
