"""Photo-like JPEG files for checking decoders against each other (the GPU path's tests
and its benchmark): smooth gradients, an edge and noise, in every chroma subsampling that
JPEG encoders write, and grey."""

from pathlib import Path

import numpy as np
from PIL import Image

# sizes (height, width) that exercise up- and down-scaling, both aspect ratios and odd sizes
JPEG_SIZES = [(256, 256), (480, 640), (640, 480), (333, 500), (1000, 300), (300, 1000),
              (50, 70), (224, 224), (225, 301), (64, 64), (31, 600), (700, 520)]
# 4:2:0, 4:2:2, 4:4:4 at qualities 75 to 95; None: grey
JPEG_OPTIONS = [{"subsampling": 2, "quality": 75}, {"subsampling": 1, "quality": 90},
                {"subsampling": 0, "quality": 95}, None]


def write_photo_jpegs(folder, sizes=JPEG_SIZES, seed=0):
    """One JPEG file per size in ``folder``, the encodings of ``JPEG_OPTIONS`` in turn;
    returns their paths."""
    gen = np.random.default_rng(seed)
    paths = []
    for k, (h, w) in enumerate(sizes):
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        img = np.stack([gen.uniform(60, 200) + gen.uniform(-80, 80) * xx
                        + gen.uniform(-80, 80) * yy for _ in range(3)], -1)
        img[:h // 2, :w // 3] += 40
        img = np.clip(img + gen.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        pil, options = Image.fromarray(img), JPEG_OPTIONS[k % len(JPEG_OPTIONS)]
        if options is None:
            pil, options = pil.convert("L"), {"quality": 85}
        path = Path(folder) / f"photo_{k:02d}.jpg"
        pil.save(path, **options)
        paths.append(str(path))
    return paths
