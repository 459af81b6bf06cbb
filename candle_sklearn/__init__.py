"""Candle (KDD 2024) for scikit-learn: long-tailed and zero-shot adaptation of CLIP.

The public names are imported on first use (PEP 562), so that ``import candle_sklearn``
and the command line's ``--help`` do not load torch, open_clip and scikit-learn.
"""

import importlib

from ._version import __version__  # noqa: F401  (public, listed in __all__)

# public name -> the module that defines it
_PUBLIC = {
    "REFERENCE_RECIPE": ".classifier", "CandleClassifier": ".classifier",
    "ClipEmbedder": ".embedder", "CheckpointError": ".exceptions",
    "EmbeddingCacheError": ".exceptions", "ImageInputError": ".exceptions",
    "WeightsUnavailableError": ".exceptions", "save": ".io", "load": ".io",
    "CandlePipeline": ".pipeline", "make_candle_pipeline": ".pipeline",
}

# sub-modules reachable as attributes of the package, as when it imported them eagerly
_SUBMODULES = {"baselines", "classifier", "datasets", "embedder", "exceptions", "io",
               "metrics", "model_selection", "pipeline", "templates"}

__all__ = sorted([*_PUBLIC, "__version__"])


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # looked up once
    return value


def __dir__():
    return sorted({*globals(), *__all__})
