"""Candle (KDD 2024) for scikit-learn: long-tailed and zero-shot adaptation of CLIP."""

from .classifier import CandleClassifier
from .embedder import ClipEmbedder
from .exceptions import (CheckpointError, EmbeddingCacheError, ImageInputError,
                         WeightsUnavailableError)
from .io import load, save
from .pipeline import CandlePipeline, make_candle_pipeline

__version__ = "0.1.0"
__all__ = ["CandleClassifier", "CandlePipeline", "CheckpointError", "ClipEmbedder",
           "EmbeddingCacheError", "ImageInputError", "WeightsUnavailableError",
           "make_candle_pipeline", "save", "load", "__version__"]
