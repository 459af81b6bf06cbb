"""JPEG files decoded, resized, cropped and normalised on the model's device.

On a GPU, decoding and resizing images with PIL on the CPU is the bottleneck (1,121
img/s from JPEG files against 25,553 img/s for ViT-B-32 bf16 alone on an H100). Here
the decoding threads only read a file's bytes and its header; nvJPEG (torchvision's
``decode_jpeg`` on a CUDA device) decodes a batch at once, and torchvision resizes
(bicubic, antialiased, as PIL does), crops and normalises it there, a batch ahead of
the model. Only what this path reproduces faithfully comes here: baseline JPEG files,
8-bit grey or YCbCr, upright (no EXIF or XMP orientation other than 1), of a size PIL
would open without a decompression-bomb warning, whose last scan ends with an EOI
marker, for a preprocess of the usual form (Resize, CenterCrop, ToTensor, Normalize).
Every other image takes the PIL path of :class:`~._images.BatchPreprocess`: other
formats, images in memory, CMYK, RGB-coded, progressive, 12-bit or arithmetic-coded
JPEGs, turned photos (PIL's EXIF rules apply, quirks included), truncated files, and
any file that nvJPEG refuses (so that a bad file gets PIL's error, which names it).

The pixels fed to the model differ from PIL's by rounding. The resizing follows PIL's:
two antialiased passes, rows or columns first as Pillow orders them, each rounded to 8
bits, in float32 where PIL uses fixed point (one float pass instead differed by up to 7
levels of 255). With the decoding on the CPU (torchvision's libjpeg, which decodes
exactly as PIL does, so that only the resizing differs), on 24 photo-like JPEG files of
12 sizes from 31x600 to 1000x300, grey, 4:2:0, 4:2:2 and 4:4:4:

* ViT-B-32's preprocess (224x224): max abs difference 0.0292 after normalisation (2
  levels of 255), mean 1.6e-5; one value in a million differs by more than one level;
* candle-tiny's (32x32): max 0.0150 (one level), mean 7e-6;
* features of the bundled candle-tiny: min cosine to PIL's 0.9999998.

Measured by ``.venv/bin/python benchmarks/bench_embedder.py --tolerance`` and checked,
with bounds a little above (max 0.035, mean 5e-5, cosine 0.99999), by
``tests/test_images.py::test_gpu_jpeg_arithmetic_matches_pil_within_tolerance``. nvJPEG
adds differences of its own (its IDCT and chroma upsampling are not libjpeg's), not yet
measured: no GPU was lent to this change. On a CUDA machine the same command measures
them, ``bench_embedder.py --gpu-only`` records them in benchmarks/results/gpu.jsonl
("gpu jpeg tolerance"), and ``tests/test_embedder.py::test_gpu_jpeg_decoding_close_to_pil``
bounds them loosely (mean 0.05, cosine 0.995) until they are. Close is not equal: the
embedding caches keep the two decodings' features apart (:data:`GPU_DECODING` is part of
their key).
"""

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ._images import _ORIENTATION, BatchPreprocess, normalise

__all__ = ["GPU_DECODING", "JpegBatchPreprocess", "decodes_on", "gpu_decodable",
           "prepared_ahead", "tensor_plan"]

#: The version of this decoding (bumped when it changes what a file decodes to), part of
#: the embedding caches' key: features decoded here never answer for PIL's, nor the
#: other way round.
GPU_DECODING = "gpu-jpeg 1"

# A resize group's float copy stays under this many bytes (256 twelve-megapixel photos
# of one size would otherwise take 37 GB).
_GROUP_BYTES = 512 * 2**20


# ------------------------------------------------------------- the preprocess
@dataclass(frozen=True)
class TensorPlan:
    """The resize and crop of an open_clip preprocess, for uint8 tensors."""

    size: list  # Resize's size: [shortest side] or [height, width]
    mode: str  # "bicubic" or "bilinear"
    max_size: object  # Resize's max_size (None: no limit)
    crop: tuple | None  # CenterCrop's (height, width)

    @property
    def out_size(self):
        return tuple(self.crop or self.size)

    def resized_size(self, h, w):
        """``(height, width)`` after the resize: torchvision's rule for PIL images."""
        if len(self.size) == 2:
            return tuple(self.size)
        short, long = min(h, w), max(h, w)
        new_short, new_long = self.size[0], int(self.size[0] * long / short)
        if self.max_size is not None and new_long > self.max_size:
            new_short, new_long = int(self.max_size * new_short / new_long), self.max_size
        return (new_short, new_long) if h <= w else (new_long, new_short)

    def apply(self, x):
        """``x`` (N, 3, H, W) uint8, resized and cropped as the PIL stage would: PIL
        resizes in two antialiased passes, rounding to 8 bits after each, in its own
        order; so does this, in float32 on every device (on the CPU, torch's uint8
        kernel is other arithmetic than CUDA's, and the CPU must measure the GPU's)."""
        from torchvision.transforms.v2.functional import center_crop

        h, w = x.shape[-2:]
        nh, nw = self.resized_size(h, w)
        passes = [(nh, w), (nh, nw)] if _vertical_first(h, w, nh, nw) else [(h, nw), (nh, nw)]
        x = x.to(torch.float32)
        for size in passes:
            if size != tuple(x.shape[-2:]):
                x = torch.nn.functional.interpolate(x, size=size, mode=self.mode,
                                                    align_corners=False, antialias=True)
                x = x.clamp_(0, 255).round_()
        x = x.to(torch.uint8)
        return center_crop(x, list(self.crop)) if self.crop else x


def _vertical_first(h, w, nh, nw):
    """Whether PIL resizes rows before columns: Pillow 13 does when the height shrinks
    by more than twice the pixels the width does (found by experiment: 1,486 random
    sizes, all matched); earlier versions always resize columns first."""
    return _PILLOW_MAJOR >= 13 and nh < h and h - nh > 2 * (w - nw)


_PILLOW_MAJOR = int(Image.__version__.split(".")[0])


def _converts_to_rgb(step):
    """open_clip's RGB conversion (a no-op on decoded RGB tensors)."""
    return (type(step).__name__ == "MaybeConvertMode"
            or getattr(step, "__name__", None) == "_convert_to_rgb")


def tensor_plan(preprocess):
    """The :class:`TensorPlan` of ``preprocess`` when it is open_clip's evaluation
    transform of the usual form (``Resize`` with bicubic or bilinear interpolation,
    optional ``CenterCrop`` and RGB conversion, ``ToTensor``, ``Normalize``) with a fixed
    output size; None for anything else (whose images all go through PIL)."""
    from torchvision.transforms import CenterCrop, InterpolationMode, Resize

    pil_stage = BatchPreprocess(preprocess).pil_stage
    if pil_stage is None:
        return None
    steps = [s for s in pil_stage.transforms if not _converts_to_rgb(s)]
    if not steps or type(steps[0]) is not Resize or len(steps) > 2:
        return None
    resize = steps[0]
    if resize.interpolation not in (InterpolationMode.BICUBIC, InterpolationMode.BILINEAR):
        return None
    crop = None
    if len(steps) == 2:
        if type(steps[1]) is not CenterCrop:
            return None
        crop = tuple(steps[1].size)
    size = [resize.size] if isinstance(resize.size, int) else list(resize.size)
    if crop is None and len(size) != 2:  # shortest side only: the output size varies
        return None
    return TensorPlan(size, resize.interpolation.value, resize.max_size, crop)


# --------------------------------------------------------------- JPEG headers
_SEQUENTIAL = (0xC0, 0xC1)  # baseline and extended sequential Huffman frames
_FRAMES = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOFn (C4, C8, CC are not)
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # markers without a length
_XMP = b"http://ns.adobe.com/xap/1.0/\x00"


def _exif_orientation(tiff):
    """The orientation tag of an EXIF block's first IFD (0 when it has none); ValueError
    where the block is not what a tag can be read from."""
    order = {b"II": "little", b"MM": "big"}.get(bytes(tiff[:2]))
    if order is None or len(tiff) < 8:
        raise ValueError("not a TIFF header")

    def number(at, size=2):
        if at + size > len(tiff):
            raise ValueError("past the block's end")
        return int.from_bytes(tiff[at:at + size], order)

    ifd = number(4, 4)
    for k in range(number(ifd)):
        entry = ifd + 2 + 12 * k
        if number(entry) == _ORIENTATION:
            if number(entry + 2) != 3 or number(entry + 4, 4) != 1:  # one SHORT
                raise ValueError("orientation of another type")
            return number(entry + 8)
    return 0


def _segments(data):
    """``(marker, payload)`` of a JPEG's segments up to its first scan (SOS included,
    with the offset where its payload starts); ValueError where the bytes are not a
    JPEG's or end early."""
    if data[:3] != b"\xff\xd8\xff":
        raise ValueError("not a JPEG")
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            raise ValueError("a marker expected")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 2 or pos + 2 + length > n:
            raise ValueError("a segment runs past the end")
        yield marker, data[pos + 4:pos + 2 + length], pos + 2 + length
        if marker == 0xDA:
            return
        pos += 2 + length
    raise ValueError("no scan")


def gpu_decodable(data):
    """Whether the bytes of a file are a JPEG that the GPU path reproduces faithfully
    (see the module's docstring); False for everything else, which PIL then reads."""
    try:
        frame, exif, xmp_orientation, adobe_rgb = None, None, False, False
        for marker, payload, end in _segments(data):
            if marker in _FRAMES:
                if frame is not None:
                    return False
                frame = (marker, bytes(payload[:6]), bytes(payload[6:6 + 3 * payload[5]:3]))
            elif marker == 0xE1 and payload[:6] == b"Exif\x00\x00" and exif is None:
                exif = _exif_orientation(payload[6:])  # PIL reads the first block only
            elif marker == 0xE1 and payload.startswith(_XMP):
                xmp_orientation |= b"tiff:Orientation" in payload
            elif marker == 0xEE and payload[:5] == b"Adobe" and len(payload) >= 12:
                adobe_rgb = payload[11] == 0  # transform 0: RGB, not YCbCr
        if frame is None or frame[0] not in _SEQUENTIAL:
            return False
        header, ids = frame[1], frame[2]
        precision, height = header[0], (header[1] << 8) | header[2]
        width, channels = (header[3] << 8) | header[4], header[5]
        if precision != 8 or channels not in (1, 3) or not height or not width:
            return False
        if channels == 3 and (adobe_rgb or ids == b"RGB"):
            return False
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and height * width > limit:  # PIL warns, or refuses
            return False
        # PIL turns by the EXIF tag, or by XMP's where EXIF has none
        if exif not in (None, 0, 1) or (not exif and xmp_orientation):
            return False
        return data.rfind(b"\xff\xd9") >= end  # an EOI after the scan: not truncated
    except (ValueError, IndexError):
        return False


def _read(path):
    """A file's bytes (writable, as torch wants them), or None where it cannot be read
    (PIL will then say why)."""
    try:
        with open(path, "rb") as f:
            data = bytearray(os.fstat(f.fileno()).st_size)
            return data if f.readinto(data) == len(data) else None
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------ decoding
def _decode(tensors, device):
    # torchvision's registered ops, the ones decode_jpeg calls: the wrapper warns of its
    # deprecation (in favour of TorchCodec) at every call
    from torchvision.io import ImageReadMode

    rgb = ImageReadMode.RGB.value
    if device.type == "cuda":
        return _decode_cuda(tensors, rgb, device)
    return [torch.ops.image.decode_jpeg(t, rgb, False) for t in tensors]


_IDLE_STREAMS = {}  # str(device) -> a stream on which no work is ever queued


def _decode_cuda(tensors, rgb, device):
    """nvJPEG's decode with its outputs allocated on a stream that runs nothing. The op
    allocates on the current stream but writes from a stream of its own that waits for
    none (pytorch/vision#9606): on the caller's stream it could be handed a block that
    kernels still queued there (the model's, a batch behind) are using. A block of the idle
    stream is reused only after the streams recorded on it are done with it."""
    caller = torch.cuda.current_stream(device)
    idle = _IDLE_STREAMS.setdefault(str(device), torch.cuda.Stream(device))
    with torch.cuda.stream(idle):
        out = torch.ops.image.decode_jpegs_cuda(tensors, rgb, device)
    caller.wait_stream(idle)
    for image in out:
        image.record_stream(caller)  # freed, it waits for the caller's work on it
    return out


def decode_jpegs(datas, device):
    """Decoded (3, H, W) uint8 RGB images on ``device``, one per bytes, None where the
    decoder refuses one. One call decodes the batch; if it fails, each image is tried
    alone, so that one bad file never fails the others."""
    if not datas:
        return []
    tensors = [torch.frombuffer(d, dtype=torch.uint8) for d in datas]
    try:
        return list(_decode(tensors, device))
    except torch.OutOfMemoryError:  # not the file's fault: never cache PIL's instead
        raise
    except RuntimeError:
        out = []
        for t in tensors:
            try:
                out.append(_decode([t], device)[0])
            except torch.OutOfMemoryError:
                raise
            except RuntimeError:
                out.append(None)
        return out


_AVAILABLE = {}  # str(device) -> whether JPEG files decode there


def decodes_on(device):
    """Whether JPEG files decode on ``device``: a CUDA device, with a torchvision built
    with nvJPEG (checked once per device, by decoding a small JPEG)."""
    if device.type != "cuda":
        return False
    key = str(device)
    if key not in _AVAILABLE:
        import io

        buf = io.BytesIO()
        Image.new("RGB", (16, 8), (90, 140, 200)).save(buf, "JPEG")
        try:
            out = decode_jpegs([bytearray(buf.getvalue())], device)[0]
            _AVAILABLE[key] = out is not None and tuple(out.shape) == (3, 8, 16)
        except Exception:  # noqa: BLE001 - no image ops, no nvJPEG, no GPU: PIL's path
            _AVAILABLE[key] = False
    return _AVAILABLE[key]


# ------------------------------------------------------------------- batches
@dataclass(frozen=True)
class JpegFile:
    """A JPEG file's bytes, read by a thread, for the device to decode."""

    data: bytearray
    item: object  # the path, for PIL when the decoder refuses the bytes
    index: object  # how errors name the image


class JpegBatchPreprocess:
    """:class:`~._images.BatchPreprocess` with JPEG files decoded on the model's device.

    The same three steps, so that :func:`~._images.iter_batches` drives it: ``image``
    (in the decoding threads) reads a file's bytes and header, keeping the bytes of a
    JPEG that :func:`gpu_decodable` accepts and preprocessing anything else with PIL;
    ``collate`` keeps the batch as a list; ``to_device`` decodes the JPEGs of the batch
    in one call, resizes and crops them there (one call per group of equally sized
    images), places the PIL images beside them and normalises the whole batch.
    """

    def __init__(self, preprocess, plan):
        self.pil, self.plan = BatchPreprocess(preprocess), plan

    def image(self, item, index):
        """A :class:`JpegFile` for a JPEG file the device decodes; else PIL's pixels."""
        if isinstance(item, (str, os.PathLike)):
            data = _read(item)
            if data is not None and gpu_decodable(data):
                return JpegFile(data, item, index)
        return self.pil.image(item, index)

    def collate(self, images, pin_memory=False):
        return list(images)

    def to_device(self, batch, device, dtype=torch.float32, non_blocking=False):
        """The model's input: on ``device``, normalised, in ``dtype``. Nothing here waits
        for the device (no index tensor, no pageable copy), only nvJPEG for its decoding:
        the model's forward pass on the batch before runs meanwhile."""
        jpegs = {i: b for i, b in enumerate(batch) if isinstance(b, JpegFile)}
        decoded = dict(zip(jpegs, decode_jpegs([b.data for b in jpegs.values()], device)))
        pixels = {i: b for i, b in enumerate(batch) if i not in jpegs}
        for i, image in decoded.items():
            if image is None:  # refused by the decoder: PIL's (and its error, if any)
                pixels[i] = self.pil.image(jpegs[i].item, jpegs[i].index)
        slots = [None] * len(batch)
        for positions, x in _resized_groups({i: x for i, x in decoded.items()
                                             if x is not None}, self.plan):
            for i, image in zip(positions, x.unbind()):
                slots[i] = image
        if pixels:
            host = torch.from_numpy(np.stack(list(pixels.values())))
            if device.type == "cuda":
                host = host.pin_memory()
            moved = host.to(device, non_blocking=non_blocking).permute(0, 3, 1, 2)
            for i, image in zip(pixels, moved.unbind()):
                slots[i] = image
        x = torch.stack(slots)
        return normalise(x, *self.pil.device_stats(x.device)).to(dtype)


def _resized_groups(images, plan):
    """``(positions, resized and cropped images)`` for each group of equally sized images
    in ``images`` (position -> (3, H, W) uint8), so that a batch of images of one size
    is resized in one call."""
    groups = {}
    for i, image in images.items():
        groups.setdefault(tuple(image.shape), []).append(i)
    for shape, positions in groups.items():
        step = max(1, _GROUP_BYTES // (4 * int(np.prod(shape))))
        for start in range(0, len(positions), step):
            part = positions[start:start + step]
            yield part, plan.apply(torch.stack([images[i] for i in part]))


def prepared_ahead(batches, prep, device, dtype):
    """``(number of images, model input)`` for each host batch, prepared by a thread one
    batch ahead of the caller: the thread waits for nvJPEG and queues the resizing while
    the caller queues the model's forward pass. Close it before ``batches``."""
    cuda = device.type == "cuda"
    # on the caller's stream: the thread's kernels and the model's stay in order
    stream = torch.cuda.current_stream(device) if cuda else None

    def prepare(batch):
        with torch.inference_mode(), torch.cuda.stream(stream) if cuda else nullcontext():
            return len(batch), prep.to_device(batch, device, dtype, non_blocking=cuda)

    inputs = map(prepare, batches)
    with ThreadPoolExecutor(1, thread_name_prefix="candle-gpu-decode") as pool:
        pending = pool.submit(next, inputs, None)
        while (ready := pending.result()) is not None:
            pending = pool.submit(next, inputs, None)
            yield ready
