"""The exceptions candle_sklearn raises on purpose, for ``except`` clauses (as
``sklearn.exceptions`` does). Each message names the failing input and how to fix it."""
__all__ = ["CheckpointError", "DatasetError", "EmbeddingCacheError", "EmbeddingCacheWarning",
           "ImageInputError", "InvalidModelFileError", "ModelFileError",
           "SkippedImageWarning", "TrainingDivergedError", "WeightsMismatchError",
           "WeightsNotFoundError", "WeightsUnavailableError"]


class ImageInputError(ValueError):
    """An input image is missing, unreadable, or of an unsupported kind, shape or
    value range. The message gives its index in the input (and its path)."""


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but are not on this machine and cannot be
    fetched (offline, unreachable host), or a ``local-dir:`` folder holds no weights."""


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be used: empty, corrupt, not a plain
    state dict, or made for another architecture. The message names the file."""


class EmbeddingCacheError(OSError):
    """The on-disk embedding cache (``cache=<folder>``) cannot be opened or created,
    and nothing could be done about it automatically. The message names the file."""


class EmbeddingCacheWarning(UserWarning):
    """The on-disk embedding cache was repaired (a corrupt file moved aside, rows of
    the wrong length ignored) or could not store new embeddings; results are correct."""


class TrainingDivergedError(FloatingPointError):
    """Training produced a non-finite loss or parameter (too large a learning rate,
    weight decay or loss margin). The message says what diverged and what to lower."""


class InvalidModelFileError(ValueError):
    """A model file is not one this version can read, or it was altered."""


class WeightsMismatchError(RuntimeError):
    """The CLIP weights found on this machine are not those the model was saved with."""


class ModelFileError(ValueError):
    """A saved model is missing or is not a fitted classifier."""


class DatasetError(ValueError):
    """A dataset on disk is missing, incomplete or malformed; the message names the
    file or folder (and, for the reference datasets, where they come from)."""


class SkippedImageWarning(UserWarning):
    """Unreadable images were left out (``on_error="skip"``)."""


class WeightsNotFoundError(WeightsMismatchError, FileNotFoundError):
    """The CLIP weights a saved model refers to (or the ``pretrained`` given to
    :func:`~candle_sklearn.load`) are not on this machine: no such checkpoint file or
    folder. The message names the path; also a :class:`WeightsMismatchError`."""
