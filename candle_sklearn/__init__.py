"""Candle (KDD 2024) for scikit-learn: long-tailed and zero-shot adaptation of CLIP."""

from .classifier import CandleClassifier

__version__ = "0.1.0"
__all__ = ["CandleClassifier", "__version__"]
