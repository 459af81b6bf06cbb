"""Image inputs (paths, PIL images, arrays) to preprocessed tensor batches, decoded by
threads, with errors that name the failing input; content keys for the embedding cache.

Pixel values are converted by the image's real range: 8-bit as is, 16-bit (PNG, TIFF,
uint16 arrays) scaled from [0, 65535], floats from [0, 1] (or [0, 255] when larger)."""

import hashlib
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .exceptions import ImageInputError

__all__ = ["BatchPreprocess", "ImageInputError", "as_items", "item_key", "iter_batches",
           "normalise", "to_pil"]

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


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
    # byte paths (how names that are not UTF-8 come): as str, the bytes kept as surrogates
    return [os.fsdecode(i) if isinstance(i, bytes) else i for i in items]


# ------------------------------------------------------------ pixel values
def _check_array(arr, index):
    """Shape and dtype of an array image, before anything reads its values."""
    shape = arr.shape
    if arr.ndim == 3 and shape[2] == 1:
        shape = shape[:2]
    if not (len(shape) == 2 or (len(shape) == 3 and shape[2] == 3)):
        hint = " (channels first? use arr.transpose(1, 2, 0))" if (
            arr.ndim == 3 and shape[0] in (1, 3)) else ""
        raise ImageInputError(f"image {index}: array of shape {arr.shape}; expected (H, W) "
                              f"grey or (H, W, 3) RGB{hint}")
    if arr.dtype.kind not in "biuf":
        raise ImageInputError(f"image {index}: array of dtype {arr.dtype} is not an image")
    if 0 in shape[:2]:
        raise ImageInputError(f"image {index}: empty image of shape {arr.shape}")


def _to_uint8(arr, index, sixteen_bit=False):
    """8-bit pixels from an array, by the range its dtype or values say."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    kind = arr.dtype.kind
    if kind == "b":
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint8:
        return arr
    if kind == "f" and not np.isfinite(arr).all():
        raise ImageInputError(f"image {index}: array contains NaN or infinity")
    if kind == "u" and arr.dtype.itemsize == 2:
        sixteen_bit = True
    lo, hi = float(arr.min()), float(arr.max())
    if sixteen_bit and lo >= 0 and hi <= 65535:
        scaled = arr.astype(np.float64) * (255 / 65535)
    elif kind == "f" and lo >= 0 and hi <= 1:
        scaled = arr.astype(np.float64) * 255
    elif lo >= 0 and hi <= 255:
        scaled = arr
    else:
        expected = "[0, 1] or [0, 255] (float)" if kind == "f" else "[0, 255] (8-bit)"
        raise ImageInputError(f"image {index}: values in [{lo:g}, {hi:g}]; expected "
                              f"{expected}, or a uint16 array in [0, 65535]")
    return np.round(scaled).astype(np.uint8)


def _pil_to_rgb(img, index):
    """An RGB image from a loaded PIL image of any mode."""
    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT or img.mode in ("I", "F"):
        # PIL's own conversion clips these to [0, 255]: a 16-bit image turns white and
        # a float one in [0, 1] black. Scale by the real range instead.
        sixteen = img.mode in _SIXTEEN_BIT or (img.mode == "I" and img.format == "PNG")
        arr = _to_uint8(np.asarray(img), index, sixteen_bit=sixteen)
        return Image.fromarray(arr).convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageInputError(f"image {index}: PIL image of mode {img.mode!r} cannot be "
                              f"converted to RGB ({exc})") from None


#: The version of decoding (bumped when it changes what an image file decodes to), part
#: of the embedding caches' key: 2 turns image files by their EXIF orientation.
DECODING_VERSION = 2
_ORIENTATION = 0x0112  # the EXIF tag


def _upright(img):
    """An image file's pixels turned as its EXIF orientation says (a phone's portrait
    photo is stored sideways), as image viewers and ``ImageOps.exif_transpose`` users see
    it. Only for files the package opens: a PIL image given in memory is used as given
    (its owner may have turned it already, and its tag would turn it twice)."""
    try:
        if img.getexif().get(_ORIENTATION, 1) == 1:  # upright: exif_transpose would copy
            return img
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - malformed EXIF (struct.error, ...): as stored
        return img


def _load_pil(img, index):
    try:
        img.load()
    except (OSError, ValueError, AttributeError) as exc:
        raise ImageInputError(f"image {index}: PIL image could not be read ({exc}); "
                              "closed, or opened from a truncated file?") from None
    if 0 in img.size:
        raise ImageInputError(f"image {index}: empty image of size {img.size}")
    return img


def to_pil(item, index):
    """An RGB PIL image, fully decoded, or an ImageInputError naming the input."""
    if isinstance(item, (str, os.PathLike)):
        try:
            with Image.open(item) as img:
                img.load()  # decode now: a truncated file fails here, not later
                if 0 in img.size:
                    raise ValueError(f"empty image of size {img.size}")
                return _pil_to_rgb(_upright(img), f"{index} ({os.fspath(item)!r})")
        except ImageInputError:
            raise
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageInputError(f"image {index} ({os.fspath(item)!r}) could not be read: "
                                  f"{exc}") from None
    if isinstance(item, Image.Image):
        return _pil_to_rgb(_load_pil(item, index), index)
    if isinstance(item, np.ndarray):
        _check_array(item, index)
        return Image.fromarray(_to_uint8(item, index)).convert("RGB")
    raise ImageInputError(f"image {index}: unsupported type {type(item).__name__}; expected "
                          "a path, a PIL image or an array")


def item_key(item, index):
    """A cache key: path, modification and change times, size and inode for files; a
    content hash for images in memory (pixels, mode, size and palette). Checks what it
    can cheaply."""
    if isinstance(item, (str, os.PathLike)):
        try:
            st = os.stat(item)
        except (OSError, ValueError) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise ImageInputError(f"image {index} ({os.fspath(item)!r}) could not be read: "
                                  f"{why}") from None
        # Undecodable bytes in a name (surrogates) cannot go into SQLite text: escape them.
        path = os.path.abspath(item)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        path = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        # the change time and inode too: cp -p, rsync -a or untar restore a replaced
        # file's modification time (and a fixed-size format its size), never these
        return f"file:{path}:{st.st_mtime_ns}:{st.st_size}:{st.st_ino}:{st.st_ctime_ns}"
    h = hashlib.blake2b(digest_size=20)
    if isinstance(item, Image.Image):
        _load_pil(item, index)
        h.update(f"{item.mode}{item.size}".encode())
        if item.palette is not None:  # same indices, other colours: another image
            h.update(f"palette:{item.palette.mode}".encode())
            h.update(bytes(item.getpalette() or []))
        h.update(item.tobytes())
    elif isinstance(item, np.ndarray):
        _check_array(item, index)
        h.update(f"{item.dtype.str}{item.shape}".encode())
        h.update(np.ascontiguousarray(item).tobytes())
    else:
        raise ImageInputError(f"image {index}: unsupported type {type(item).__name__}; "
                              "expected a path, a PIL image or an array")
    return "data:" + h.hexdigest()


# ---------------------------------------------------------------- batches
class BatchPreprocess:
    """open_clip's preprocess, cut where pixels become floats.

    open_clip's transform is ``Compose([<PIL resizing and cropping>, ToTensor,
    Normalize])``. The PIL part runs per image in the decoding threads (PIL releases the
    GIL); the float conversion and normalisation run once per batch, in the consumer,
    on the model's device. The threads then never start torch's own thread teams (which
    oversubscribe a small machine), and a CUDA copy moves uint8 pixels, a quarter of
    the bytes. The arithmetic is torchvision's, element for element, so the result is
    the same as ``preprocess(image)``. Any other transform runs whole in the threads.
    """

    def __init__(self, preprocess):
        self.preprocess, self.pil_stage, self.mean, self.std = preprocess, None, None, None
        self.stats = {}  # device -> (mean, std) tensors there
        try:
            from torchvision.transforms import Compose, Normalize
        except ImportError:  # pragma: no cover - open_clip depends on torchvision
            return
        steps = getattr(preprocess, "transforms", None)
        if (isinstance(preprocess, Compose) and steps and len(steps) >= 2
                and type(steps[-2]).__name__ in ("ToTensor", "MaybeToTensor")
                and isinstance(steps[-1], Normalize)):
            self.pil_stage = Compose(steps[:-2])
            self.mean, self.std = steps[-1].mean, steps[-1].std

    def image(self, item, index):
        """One image, decoded and preprocessed as far as the threads go."""
        image = to_pil(item, index)
        try:
            if self.pil_stage is None:
                return self.preprocess(image)
            out = self.pil_stage(image)
            return np.asarray(out.convert("RGB") if out.mode != "RGB" else out, np.uint8)
        except ImageInputError:
            raise
        except Exception as exc:  # noqa: BLE001 - a transform failing on this image
            raise ImageInputError(f"image {index}: preprocessing failed "
                                  f"({type(exc).__name__}: {exc})") from None

    def collate(self, images, pin_memory=False):
        """A host batch of images from :meth:`image` (pinned for a CUDA copy)."""
        batch = (torch.stack(images) if self.pil_stage is None
                 else torch.from_numpy(np.stack(images)))
        return batch.pin_memory() if pin_memory else batch

    def to_device(self, batch, device, dtype=torch.float32, non_blocking=False):
        """The model's input: on ``device``, normalised, in ``dtype``."""
        x = batch.to(device, non_blocking=non_blocking)
        if self.pil_stage is not None:
            x = normalise(x.permute(0, 3, 1, 2), *self.device_stats(x.device))
        return x.to(dtype)

    def device_stats(self, device):
        """Normalize's mean and std as tensors on ``device``, made once (a copy to a GPU
        from a list waits for it)."""
        if device not in self.stats:
            self.stats[device] = tuple(torch.tensor(v, dtype=torch.float32, device=device)
                                       for v in (self.mean, self.std))
        return self.stats[device]


def normalise(x, mean, std):
    """torchvision's ``to_tensor`` then ``normalize``, on a (N, 3, H, W) uint8 batch
    where it lies: float32 in [0, 1], less ``mean``, over ``std`` (float32 tensors on
    that device, as :meth:`BatchPreprocess.device_stats` makes them)."""
    x = x.contiguous().to(torch.float32).div(255)
    return x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))


def iter_batches(items, indices, prep, batch_size, workers=0, pin_memory=False):
    """Host batches of ``items`` in order (``prep`` a :class:`BatchPreprocess`; errors
    report ``indices``).

    With ``workers`` > 0, that many threads decode and preprocess up to one batch ahead
    of the consumer, so decoding overlaps the model. Threads, unlike DataLoader
    processes, work inside joblib workers, under the spawn start method without a
    ``__main__`` guard, and with images in memory.
    """
    n = len(items)
    if workers == 0:
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            yield prep.collate([prep.image(items[i], indices[i]) for i in range(start, stop)],
                               pin_memory)
        return
    pending, submitted = deque(), 0
    with ThreadPoolExecutor(workers, thread_name_prefix="candle-decode") as pool:
        try:
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                while submitted < min(n, stop + batch_size):  # this batch and the next
                    pending.append(pool.submit(prep.image, items[submitted],
                                               indices[submitted]))
                    submitted += 1
                batch = [pending.popleft().result() for _ in range(start, stop)]
                yield prep.collate(batch, pin_memory)
        finally:  # an error or an early stop: drop the queued work, wait for the rest
            for future in pending:
                future.cancel()
