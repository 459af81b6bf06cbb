"""The exceptions candle_sklearn raises on purpose, for ``except`` clauses (as
``sklearn.exceptions`` does). Each message names the failing input and how to fix it."""
__all__ = ["CheckpointError", "EmbeddingCacheError", "EmbeddingCacheWarning", "ImageInputError",
           "InvalidModelFileError", "TrainingDivergedError", "WeightsMismatchError",
           "WeightsUnavailableError"]

# Defined next to the code that raises them; handed on here on first access (importing
# those modules at the top would be circular, as they import this one).
_ELSEWHERE = {"InvalidModelFileError": ".io", "WeightsMismatchError": ".io"}


def __getattr__(name):
    if name in _ELSEWHERE:
        from importlib import import_module

        return getattr(import_module(_ELSEWHERE[name], __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)


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
