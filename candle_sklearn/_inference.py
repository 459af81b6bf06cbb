"""Serving-speed scoring of a fitted Candle head. Torch only.

After ``fit`` the class context is constant: the class tokens fused among themselves,
their per-head keys and values and, for ``context="batch"``, the class-only terms of the
closed form. A :class:`HeadScorer` computes it once and then costs each sample only its
own projections and its products with that context (O(C·D) beyond O(D²)).

Samples are scored in float32, in chunks of a fixed number of rows: ``rows`` for bulk input,
and, for fewer samples than that, one chunk of the input's size rounded up to a multiple of
four (one to three samples: exactly their size), so that one sample is not padded to a
whole chunk (padded to four rows, it cost 70 % more). A BLAS kernel's arithmetic for a row
depends on the shape of the product it takes part in (one to three rows take other kernels
than four or more, and small products other blocking than large ones), never on the other
rows of a product of the same shape: so a sample's scores are bitwise the same whatever it
is predicted with among inputs of the same chunk shape (any input of ``rows`` samples or
more, for instance), and within float32 rounding (``BATCH_TOLERANCE``) between a small
input and a bulk one. It may depend on the row's memory alignment, though (MKL rounds a row
of D floats differently by its address modulo 16 bytes when a row's length is not a
multiple of 4): so samples sit in a chunk at rows whose offset is a multiple of 64 bytes in
every per-sample tensor, as a sample alone does, with padding rows between them where needed
(:func:`row_spacing`).
"""

import copy
import math

import torch

# Per bulk chunk: enough rows that reading the class context (keys, values, fused tokens:
# megabytes at 1,000 classes) is shared by many samples and the Python and kernel-launch
# overhead is amortised (at 1,000 classes on one CPU thread, with the fused attention
# kernel: 16 rows scored 4,900 samples/s, 128 rows 8,700, 256 rows 9,800 and 512 rows
# 10,300; docs/decisions/0017). Rows are a power of two between the limits, memory bounded.
TARGET_FLOPS = {"cpu": 2e9, "cuda": 5e9}
ROWS = {"cpu": (16, 256), "cuda": (256, 8192)}
MAX_CHUNK_BYTES = 256 * 2**20
# The bound kept between a sample's scores in a small input and in a bulk one (chunks of
# different shapes; within one shape they are bitwise the same): float32 rounding.
BATCH_TOLERANCE = dict(rtol=2e-5, atol=1e-4)


def _small_chunk(rows):
    """Rows of the one chunk of a small input: the input itself up to three rows, else
    the next multiple of four, so that no product of the chunk (BLAS splitting rows among
    threads, the fused attention kernel's blocks of 32 or 64 queries) ends in a part of
    one to three rows, which takes other kernels than the rest of the chunk."""
    return rows if rows < 4 else -(-rows // 4) * 4


def chunk_rows(head, device_type):
    """Rows per chunk for ``head``: a function of the head and device only, never of the
    input, so that every sample meets the same kernels."""
    low, high = ROWS.get(device_type, ROWS["cpu"])
    rows = min(max(TARGET_FLOPS.get(device_type, 1e8) / head.flops_per_image(), low), high,
               MAX_CHUNK_BYTES / (4 * head.elements_per_image()))
    return 1 << max(int(rows).bit_length() - 1, 0)


def row_spacing(dim, n_heads):
    """Rows from one sample to the next in a chunk: 64 bytes (16 floats) divide the
    offset of each sample's row in every per-sample tensor, whose rows are multiples of
    ``dim`` floats long or, per head, of ``dim / n_heads``. 1 for the usual embedding
    sizes (512, 768, 1,024 at 8 heads: 64 to 128 floats a head)."""
    return 16 // math.gcd(dim // n_heads, 16)  # the head size divides dim


class HeadScorer:
    """Scores ``z^vt + z^vv`` of a fitted head, per sample, in float32.

    Parameters
    ----------
    head : CandleHead
        The fitted head (on CPU). It is used as is on CPU, copied to other devices.
    device : torch.device
    """

    def __init__(self, head, device):
        self.device = device
        head = head if device.type == "cpu" else copy.deepcopy(head).to(device)
        self.head = head.float().eval()
        with torch.inference_mode():
            # keys and values are per-head views of one projection: made contiguous
            # once here, rather than copied by every chunk's product
            ctx = self.head.class_context()
            self.context = ctx._replace(keys=ctx.keys.contiguous(),
                                        values=ctx.values.contiguous())
        self.rows = chunk_rows(self.head, device.type)
        self.spacing = row_spacing(self.head.visual_prototypes.shape[1],  # divides rows
                                   self.head.fusion.n_heads)

    @torch.inference_mode()
    def __call__(self, X, zero_shot_weight=0.0):
        """Scores (n, C) in head order, float32 on CPU, for features ``X`` (n, D);
        blended as ``(1 - w) * scores + w * zero-shot CLIP's`` for a weight w > 0."""
        X = torch.as_tensor(X, dtype=torch.float32)
        n, every = X.shape[0], self.spacing
        rows = min(self.rows, _small_chunk(n * every))  # spacing divides self.rows
        # padding rows repeat the first sample: zero rows would be layer-normed into
        # denormal floats, which cost a one-sample call 40 % more on x86 CPUs
        padded = X[:1].expand(-(-n * every // rows) * rows, X.shape[1]).clone()
        padded[:n * every:every] = X
        out = torch.empty(padded.shape[0], self.head.n_classes)
        block = max(rows, (64 * 2**20) // (4 * max(self.head.n_classes, 1)) // rows * rows)
        for start in range(0, padded.shape[0], block):  # one host transfer per block
            part = padded[start:start + block].to(self.device, non_blocking=True)
            scores = [self._scores(part[i:i + rows], zero_shot_weight)
                      for i in range(0, part.shape[0], rows)]
            out[start:start + part.shape[0]] = torch.cat(scores).cpu()
        return out[:n * every:every].contiguous()

    def _scores(self, chunk, w):
        scores = self.head.scores(chunk, self.context)
        if w == 0:
            return scores
        return (1 - w) * scores + w * self.head.zero_shot_scores(chunk, self.context)


def scorer_for(head, device):
    """The head's cached scorer for ``device``, made at first use. The head drops its
    scorers whenever its parameters may change (training, added classes) and when it is
    pickled (they are recomputed after loading)."""
    scorers = head.__dict__.setdefault("_scorers", {})
    if str(device) not in scorers:
        scorer = HeadScorer(head, device)
        head.__dict__.setdefault("_scorers", {})[str(device)] = scorer
    return head.__dict__["_scorers"][str(device)]
