"""Candle (KDD 2024) for scikit-learn: long-tailed and zero-shot adaptation of CLIP."""

from ._version import __version__
from .classifier import REFERENCE_RECIPE, CandleClassifier
from .embedder import ClipEmbedder
from .exceptions import (CheckpointError, EmbeddingCacheError, ImageInputError,
                         WeightsUnavailableError)
from .io import load, save
from .pipeline import CandlePipeline, make_candle_pipeline

__all__ = ["REFERENCE_RECIPE", "CandleClassifier", "CandlePipeline", "CheckpointError", "ClipEmbedder",
           "EmbeddingCacheError", "ImageInputError", "WeightsUnavailableError",
           "make_candle_pipeline", "save", "load", "__version__"]
