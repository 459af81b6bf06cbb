"""Images per second of ClipEmbedder.transform against a bare open_clip loop.

    .venv/bin/python benchmarks/bench_embedder.py [--n-images 128] [--models ViT-B-32 ViT-B-16]
                                                  [--gpu-only]

Same model object (random weights, pretrained=None), same batch size, same JPEG files
from disk, in the same process; the bare loop decodes and preprocesses serially, then
runs ``model.encode_image``. Ratio = img/s against the bare loop (at least 0.9 is the
bar), for the default thread decoding, decoding in the calling thread, and the
previous default (DataLoader worker processes, reproduced here for comparison); the
runs take turns so that load changes hit them alike. Also: a second transform served
from the embedding cache, and peak RSS. On a CUDA machine, fp32 and bf16 against a
pure forward pass on pre-decoded tensors.
"""

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from candle_sklearn import ClipEmbedder, _clip
from candle_sklearn._cache import MEMORY


def make_jpegs(folder, n, size=256, seed=0):
    """Smooth colour fields with noise: photo-like JPEG sizes and decode cost."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    paths = []
    for i in range(n):
        a, b, c = rng.uniform(0, 255, (3, 3))
        img = np.stack([a[k] * xx + b[k] * yy + c[k] * xx * yy for k in range(3)], -1)
        img = np.clip(img / 2 + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        path = Path(folder) / f"img_{i:04d}.jpg"
        Image.fromarray(img).save(path, quality=90)
        paths.append(str(path))
    return paths


@torch.inference_mode()
def bare_loop(loaded, paths, batch_size):
    out = []
    for start in range(0, len(paths), batch_size):
        batch = torch.stack([loaded.preprocess(Image.open(p).convert("RGB"))
                             for p in paths[start:start + batch_size]])
        out.append(loaded.model.encode_image(batch.to(loaded.device)).float().cpu())
    return torch.cat(out)


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@torch.inference_mode()
def dataloader_loop(loaded, paths, batch_size, workers=2):
    """The previous default: DataLoader worker processes decode (reference only)."""
    from torch.utils.data import DataLoader

    class Files(torch.utils.data.Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            return loaded.preprocess(Image.open(paths[i]).convert("RGB"))

    return torch.cat([loaded.model.encode_image(b).float()
                      for b in DataLoader(Files(), batch_size=batch_size, num_workers=workers)])


def interleaved(fns, repeats):
    """Best time of each function, the functions taking turns, so that a change in
    the machine's load hits them all alike."""
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def cpu_table(paths, models, batch_size, repeats):
    print(f"CPU, {torch.get_num_threads()} threads, {len(paths)} JPEG images 256x256, "
          f"batch {batch_size}, random weights, best of {repeats} (interleaved)")
    print(f"{'model':<10}{'decoding':<34}{'img/s':>8}{'vs bare':>9}")
    for name in models:
        loaded = _clip.load(name, None, torch.device("cpu"))

        def embedder(workers):
            emb = ClipEmbedder(name, None, device="cpu", batch_size=batch_size, cache=False,
                               num_workers=workers)
            return lambda: emb.transform(paths)

        fns = {"bare open_clip loop (serial)": lambda: bare_loop(loaded, paths, batch_size),
               "ClipEmbedder, 2 threads (default)": embedder(2),
               "ClipEmbedder, 0 threads": embedder(0),
               "DataLoader, 2 processes (before)": lambda: dataloader_loop(loaded, paths,
                                                                           batch_size)}
        bare_loop(loaded, paths[:batch_size], batch_size)  # warm-up
        best = interleaved(fns, repeats)
        n, t_bare = len(paths), best["bare open_clip loop (serial)"]
        for label, t in best.items():
            print(f"{name:<10}{label:<34}{n / t:8.2f}{t_bare / t:9.2f}", flush=True)
        cached = ClipEmbedder(name, None, device="cpu", batch_size=batch_size)
        cached.transform(paths)
        t_hit = best_of(lambda: cached.transform(paths), 3)
        MEMORY.clear()
        print(f"{name:<10}{'served from the memory cache':<34}{n / t_hit:8.0f}"
              f"{t_bare / t_hit:9.0f}", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the process: {peak:.0f} MiB")


def gpu_table(paths, models, batch_size):
    print(f"\nCUDA ({torch.cuda.get_device_name()}), {len(paths)} JPEG images, "
          f"batch {batch_size}, random weights")
    print(f"{'model':<10}{'precision':>10}{'forward img/s':>14}{'full img/s':>11}"
          f"{'ratio':>7}{'peak GiB':>9}")
    for name in models:
        for precision in ("fp32", "bf16"):
            loaded = _clip.load(name, None, torch.device("cuda"), precision)
            pre = torch.stack([loaded.preprocess(Image.open(p).convert("RGB"))
                               for p in paths]).to("cuda", loaded.input_dtype)

            @torch.inference_mode()
            def forward():
                for s in range(0, len(pre), batch_size):
                    loaded.model.encode_image(pre[s:s + batch_size])
                torch.cuda.synchronize()

            forward()
            torch.cuda.reset_peak_memory_stats()
            t_fwd = best_of(forward, 3)
            emb = ClipEmbedder(name, None, device="cuda", precision=precision,
                               batch_size=batch_size, num_workers=os.cpu_count(),
                               cache=False).fit(paths[:1])
            emb.transform(paths[:batch_size])
            t_full = best_of(lambda: emb.transform(paths), 3)
            peak = torch.cuda.max_memory_allocated() / 2**30
            n = len(paths)
            print(f"{name:<10}{precision:>10}{n / t_fwd:14.0f}{n / t_full:11.0f}"
                  f"{t_fwd / t_full:7.2f}{peak:9.2f}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["ViT-B-32", "ViT-B-16"])
    parser.add_argument("--gpu-only", action="store_true", help="skip the CPU table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.gpu_only:
            cpu_table(make_jpegs(tmp, args.n_images), args.models, args.batch_size,
                      args.repeats)
        if torch.cuda.is_available():
            gpu_table(make_jpegs(tmp, 4096, seed=1), args.models, 256)
        else:
            print("\nno CUDA device: GPU figures skipped")
