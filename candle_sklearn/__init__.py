"""Candle (KDD 2024) for scikit-learn: long-tailed and zero-shot adaptation of CLIP."""

from .classifier import CandleClassifier
from .embedder import ClipEmbedder, make_candle_pipeline
from .io import load, save

__version__ = "0.1.0"
__all__ = ["CandleClassifier", "ClipEmbedder", "make_candle_pipeline", "save", "load",
           "__version__"]
