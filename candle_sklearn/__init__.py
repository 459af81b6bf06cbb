"""Candle (KDD 2024) for scikit-learn: long-tailed and zero-shot adaptation of CLIP."""

from .classifier import CandleClassifier
from .embedder import ClipEmbedder, make_candle_pipeline

__version__ = "0.1.0"
__all__ = ["CandleClassifier", "ClipEmbedder", "make_candle_pipeline", "__version__"]
