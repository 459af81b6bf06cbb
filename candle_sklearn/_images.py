"""Image inputs (paths, PIL images, arrays) to preprocessed tensors, with errors that
name the failing input; content keys for the embedding cache."""

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset


class ImageInputError(ValueError):
    """An input image is missing, unreadable, or of an unsupported kind or shape."""


def as_items(X):
    """A list of images from a list, tuple, 1-D array, 4-D array (n, H, W, C), pandas
    Series or one-column DataFrame."""
    if hasattr(X, "iloc"):  # pandas
        if getattr(X, "ndim", 1) == 2:
            if X.shape[1] != 1:
                raise ImageInputError(f"a DataFrame of images must have one column, got "
                                      f"{X.shape[1]}: {list(X.columns)}")
            X = X.iloc[:, 0]
        items = list(X)
    elif isinstance(X, np.ndarray):
        if X.ndim == 4 or (X.ndim == 1 and X.dtype.kind in "OUS"):
            items = list(X)
        else:
            raise ImageInputError(
                f"an array of images must be 1-D (paths or objects) or 4-D (n, H, W, C); got "
                f"shape {X.shape}. Wrap a single image in a list: [image]")
    elif isinstance(X, (list, tuple)):
        items = list(X)
    elif isinstance(X, (str, Path, Image.Image)):
        raise ImageInputError("expected a collection of images; wrap a single image in a "
                              "list: [image]")
    else:
        raise ImageInputError(f"expected a list of image paths, PIL images or arrays, got "
                              f"{type(X).__name__}")
    if not items:
        raise ImageInputError("no images: the input is empty")
    return items


def _array_to_pil(arr, index):
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ImageInputError(f"image {index}: array of shape {arr.shape}; expected (H, W) "
                              "grey or (H, W, 3) RGB")
    if arr.dtype == np.uint8:
        return Image.fromarray(arr)
    if arr.dtype.kind not in "iuf":
        raise ImageInputError(f"image {index}: array of dtype {arr.dtype} is not an image")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ImageInputError(f"image {index}: array contains NaN or infinity")
    lo, hi = float(arr.min()), float(arr.max())
    if arr.dtype.kind == "f" and lo >= 0 and hi <= 1:
        arr = arr * 255.0
    elif lo < 0 or hi > 255:
        raise ImageInputError(f"image {index}: values in [{lo:g}, {hi:g}]; expected [0, 1] "
                              "(float) or [0, 255]")
    return Image.fromarray(np.round(arr).astype(np.uint8))


def to_pil(item, index):
    """An RGB PIL image, fully decoded, or an ImageInputError naming the input."""
    if isinstance(item, (str, os.PathLike)):
        try:
            with Image.open(item) as img:
                img.load()  # decode now: a truncated file fails here, not later
                return img.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageInputError(f"image {index} ({os.fspath(item)!r}) could not be read: "
                                  f"{exc}") from None
    if isinstance(item, Image.Image):
        try:
            item.load()
        except OSError as exc:
            raise ImageInputError(f"image {index}: PIL image could not be decoded: {exc}") \
                from None
        return item if item.mode == "RGB" else item.convert("RGB")
    if isinstance(item, np.ndarray):
        return _array_to_pil(item, index)
    raise ImageInputError(f"image {index}: unsupported type {type(item).__name__}; expected "
                          "a path, a PIL image or an array")


def item_key(item, index):
    """A cache key: path, modification time and size for files; a content hash for
    images in memory."""
    if isinstance(item, (str, os.PathLike)):
        try:
            st = os.stat(item)
        except OSError as exc:
            raise ImageInputError(f"image {index} ({os.fspath(item)!r}) could not be read: "
                                  f"{exc.strerror}") from None
        return f"file:{os.path.abspath(item)}:{st.st_mtime_ns}:{st.st_size}"
    h = hashlib.blake2b(digest_size=20)
    if isinstance(item, Image.Image):
        h.update(f"{item.mode}{item.size}".encode())
        h.update(item.tobytes())
    elif isinstance(item, np.ndarray):
        h.update(f"{item.dtype}{item.shape}".encode())
        h.update(np.ascontiguousarray(item).tobytes())
    else:
        raise ImageInputError(f"image {index}: unsupported type {type(item).__name__}; "
                              "expected a path, a PIL image or an array")
    return "data:" + h.hexdigest()


class ImageDataset(Dataset):
    """Decode and preprocess ``items`` (reported by their ``indices`` in the input)."""

    def __init__(self, items, indices, preprocess):
        self.items, self.indices, self.preprocess = items, indices, preprocess

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.preprocess(to_pil(self.items[i], self.indices[i]))
