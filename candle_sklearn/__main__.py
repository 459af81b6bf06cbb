"""``python -m candle_sklearn``: the ``candle-sklearn`` command line (:mod:`candle_sklearn.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
