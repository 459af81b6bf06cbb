"""Images per second of ClipEmbedder.transform against a bare open_clip loop, and the
GPU JPEG path (candle_sklearn._gpu_images) against PIL's, in speed and in pixels.

    .venv/bin/python benchmarks/bench_embedder.py [--n-images 128] [--models ViT-B-32 ViT-B-16]
                                                  [--gpu-only] [--tolerance] [--tiny]

CPU table: same model object (random weights, pretrained=None), same batch size, same
JPEG files from disk, in the same process; the bare loop decodes and preprocesses
serially, then runs ``model.encode_image``. Ratio = img/s against the bare loop (at
least 0.9 is the bar), for the default thread decoding, decoding in the calling thread,
and the previous default (DataLoader worker processes, reproduced here for comparison);
the runs take turns so that load changes hit them alike. Also: a second transform served
from the embedding cache, and peak RSS.

GPU table (a CUDA machine): for each model, bf16, random weights, 4,096 JPEG files of
256x256 read by one thread per core: the model alone on pre-made tensors, ClipEmbedder
with JPEG files decoded on the GPU (the default there) and with ``decode="pil"``; the
rows go to benchmarks/results/gpu.jsonl. The targets (one H100/H200, 16 cores): ViT-B-16
from JPEG files at least 3,000 img/s, ViT-B-32 at least half of its forward rate. Then
the tolerance (below) with nvJPEG, recorded too.

``--tolerance``: the GPU path's pixels and features against PIL's on 24 photo-like JPEG
files of 12 sizes (grey, 4:2:0, 4:2:2, 4:4:4), with the decoding on the CPU (torchvision's
libjpeg, as PIL's) and, on a CUDA machine, on the GPU: max and mean absolute difference of
the normalised model input for ViT-B-32's preprocess and candle-tiny's, and the min cosine
between the bundled candle-tiny's features. The figures in _gpu_images' docstring.

``--tiny``: the GPU table's code on the CPU (candle-tiny, 48 files, the GPU JPEG path
forced on the CPU), to check that the script works; nothing recorded.
"""

import argparse
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from candle_sklearn import ClipEmbedder, _clip, _gpu_images
from candle_sklearn._cache import MEMORY
from candle_sklearn._images import BatchPreprocess
from candle_sklearn._threads import torch_threads, working_n_jobs
from candle_sklearn.datasets._photos import JPEG_SIZES, write_photo_jpegs

sys.path.insert(0, str(Path(__file__).parent))
from harness import record  # noqa: E402


def make_jpegs(folder, n, size=256, seed=0):
    """Smooth colour fields with noise: photo-like JPEG sizes and decode cost (written by
    one thread per core)."""
    yy, xx = np.mgrid[0:size, 0:size] / size

    def one(i):
        rng = np.random.default_rng([seed, i])
        a, b, c = rng.uniform(0, 255, (3, 3))
        img = np.stack([a[k] * xx + b[k] * yy + c[k] * xx * yy for k in range(3)], -1)
        img = np.clip(img / 2 + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        path = Path(folder) / f"img_{seed}_{i:04d}.jpg"
        Image.fromarray(img).save(path, quality=90)
        return str(path)

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        return list(pool.map(one, range(n)))


SIZES = JPEG_SIZES


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


def embed_rates(paths, name, pretrained, device, precision, batch_size, repeats):
    """img/s of the model alone on pre-made tensors, and of ClipEmbedder from the files
    with the GPU JPEG path (where it is on) and with PIL's; peak GPU memory."""
    cuda = device.type == "cuda"
    loaded = _clip.load(name, pretrained, device, precision)
    prep = BatchPreprocess(loaded.preprocess)
    few = [prep.image(p, i) for i, p in enumerate(paths[:batch_size])]
    x = prep.to_device(prep.collate(few), device, loaded.input_dtype)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    @torch.inference_mode()
    def forward():  # as many images as the files, the same batch again and again
        with torch_threads(working_n_jobs(None)):  # as ClipEmbedder's
            for _ in range(0, len(paths), batch_size):
                loaded.model.encode_image(x)
            sync()

    forward()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t_fwd = best_of(forward, repeats)
    params = {"device": str(device), "precision": precision, "batch_size": batch_size,
              "num_workers": os.cpu_count(), "cache": False}
    gpu = ClipEmbedder(name, pretrained, **params)
    pil = ClipEmbedder(name, pretrained, decode="pil", **params)
    for emb in (gpu, pil):
        emb.transform(paths[:2 * batch_size])  # warm-up: threads, nvJPEG, allocator
    t_gpu = best_of(lambda: gpu.transform(paths), repeats)
    t_pil = best_of(lambda: pil.transform(paths), max(1, repeats - 1))
    n = len(paths)
    return {"forward_img_s": round(n / t_fwd), "full_img_s": round(n / t_gpu),
            "pil_img_s": round(n / t_pil), "gpu_decoding": (gpu._may_decode_on_gpu()
                                                       and _gpu_images.decodes_on(device)),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None}


def gpu_table(paths, models, batch_size, device, precisions=("bf16",), pretrained=None,
              repeats=3, keep=True):
    print(f"\n{device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'})"
          f", {len(paths)} JPEG files {Image.open(paths[0]).size}, batch {batch_size}, "
          f"{os.cpu_count()} reading threads, best of {repeats}")
    print(f"{'model':<12}{'precision':>10}{'forward':>9}{'GPU JPEG':>10}{'PIL':>8}"
          f"{'vs fwd':>8}{'peak GiB':>9}  (img/s)")
    for name in models:
        for precision in precisions:
            r = embed_rates(paths, name, pretrained, device, precision, batch_size, repeats)
            if not r["gpu_decoding"]:
                print("  (JPEG files NOT decoded on the GPU here: both columns are PIL)")
            print(f"{name:<12}{precision:>10}{r['forward_img_s']:9,}{r['full_img_s']:10,}"
                  f"{r['pil_img_s']:8,}{r['full_img_s'] / r['forward_img_s']:8.2f}"
                  f"{r['peak_gib'] or 0:9.2f}", flush=True)
            if keep:
                record("gpu", {"what": "embed", "model": name, "precision": precision, **r,
                               "images": f"{len(paths)} JPEG files 256x256",
                               "decode": "gpu-jpeg" if r["gpu_decoding"] else "pil",
                               "reading_threads": os.cpu_count(),
                               "source": "benchmarks/bench_embedder.py"})
            _clip.clear_cache()
            if device.type == "cuda":
                torch.cuda.empty_cache()


def tolerance(paths, device, keep=False):
    """The GPU path's model input and features against PIL's (see the module's
    docstring); the decoding on ``device``."""
    import open_clip

    clip = _clip.load("candle-tiny", "bundled", device)
    print(f"\nGPU JPEG path against PIL, decoding on {device}, {len(paths)} JPEG files")
    for label, preprocess in (("ViT-B-32 224x224", open_clip.image_transform(224, False)),
                              ("candle-tiny 32x32", clip.preprocess)):
        jpeg = _gpu_images.JpegBatchPreprocess(preprocess, _gpu_images.tensor_plan(preprocess))
        got = jpeg.to_device(jpeg.collate([jpeg.image(p, i) for i, p in enumerate(paths)]),
                             device)
        pil = BatchPreprocess(preprocess)
        want = pil.to_device(pil.collate([pil.image(p, i) for i, p in enumerate(paths)]),
                             device)
        diff = (got - want).abs()
        levels = diff * torch.tensor(pil.std, device=device).view(1, 3, 1, 1) * 255
        row = {"preprocess": label, "max_abs": round(diff.max().item(), 4),
               "mean_abs": round(diff.mean().item(), 6),
               "share_over_one_level": round((levels > 1.5).float().mean().item(), 6)}
        if preprocess is clip.preprocess:
            with torch.inference_mode():
                a, b = (clip.model.encode_image(x) for x in (got, want))
            row["min_cosine"] = round(torch.nn.functional.cosine_similarity(a, b).min().item(),
                                      7)
        print("  " + ", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
        if keep:
            record("gpu", {"what": "gpu jpeg tolerance", "decoder": str(device),
                           "images": f"{len(paths)} photo-like JPEG files, 12 sizes", **row,
                           "source": "benchmarks/bench_embedder.py --tolerance"})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["ViT-B-32", "ViT-B-16"])
    parser.add_argument("--gpu-only", action="store_true", help="skip the CPU table")
    parser.add_argument("--tolerance", action="store_true",
                        help="only the GPU JPEG path's tolerance against PIL")
    parser.add_argument("--tiny", action="store_true",
                        help="the GPU table's code on the CPU, small (nothing recorded)")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        photos = write_photo_jpegs(tmp, SIZES * 2)
        if args.tolerance:
            tolerance(photos, torch.device("cpu"))
            if cuda:
                tolerance(photos, torch.device("cuda"), keep=True)
        elif args.tiny:  # the GPU path forced on the CPU: the code runs, the figures don't
            _gpu_images.decodes_on = lambda device: True
            ClipEmbedder._may_decode_on_gpu = lambda self: self.decode == "auto"
            gpu_table(make_jpegs(tmp, 48), ["candle-tiny"], 16, torch.device("cpu"),
                      precisions=("fp32",), pretrained="bundled", repeats=1, keep=False)
            tolerance(photos, torch.device("cpu"))
        else:
            if not args.gpu_only:
                cpu_table(make_jpegs(tmp, args.n_images), args.models, args.batch_size,
                          args.repeats)
            if cuda:
                gpu_table(make_jpegs(tmp, 4096, seed=1), args.models, 256,
                          torch.device("cuda"))
                tolerance(photos, torch.device("cuda"), keep=True)
            else:
                print("\nno CUDA device: GPU figures skipped")
