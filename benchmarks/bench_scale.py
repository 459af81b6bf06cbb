"""Training at iNaturalist-2018 scale: 8,142 classes (16,284 class tokens), D = 512.

    .venv/bin/python benchmarks/bench_scale.py [--classes 1000 8142] [--steps 2] [--device cpu]

For each number of classes, in a fresh process: the time of one training step of the
default head (batch 128, isolated context; the first step, which allocates, is not
timed), its floating-point operations (torch.utils.flop_counter: forward and backward;
the class attention counted by formula where the counter misses the CPU's fused kernel),
the achieved FLOP/s, and the process's peak resident memory. Then the estimate for a
whole iNaturalist-2018 fit (437,513 training images) at the default budget, from the
measured step time, here and on a GPU at a stated throughput.
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

INAT_IMAGES = 437_513


def one(n_classes, steps, device):
    """Runs in its own process: a head with n_classes (all base), one step timed."""
    from torch.utils.flop_counter import FlopCounterMode

    from candle_sklearn._head import CandleHead
    from candle_sklearn._loss import cla_loss, class_log_prior
    from candle_sklearn._train import _make_optimizer, _precision, TrainConfig

    device = torch.device(device)
    dim, batch = 512, 128
    gen = torch.Generator().manual_seed(0)
    head = CandleHead(torch.randn(n_classes, dim, generator=gen),
                      torch.randn(n_classes, dim, generator=gen), 0, dropout=0.0).to(device)
    X = torch.randn(batch, dim, generator=gen).to(device)
    y = torch.randint(0, n_classes, (batch,), generator=gen).to(device)
    target = torch.cat([y, torch.arange(n_classes, device=device)])
    log_prior = class_log_prior(torch.full((n_classes,), 50)).to(device)
    cfg = TrainConfig()
    optimizer = _make_optimizer(head.parameters(), cfg)

    def step():
        with _precision(device, "auto"):
            logits = [z.float() for z in head.training_logits(X) if z is not None]
        loss = sum(cla_loss(z, target, log_prior, 1.0) for z in logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    with FlopCounterMode(display=False) as counter:
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"classes": n_classes, "step_s": seconds, "flops": _flops(counter, head),
            "peak_mib": peak}


def _flops(counter, head):
    """The counted FLOPs, plus the class tokens' attention where the counter missed it:
    it counts CUDA's fused attention kernels (and the math path's matrix products) but
    not the CPU's fused kernel."""
    flops = counter.get_total_flops()
    ops = {str(op) for per_module in counter.get_flop_counts().values() for op in per_module}
    if not any("attention" in op for op in ops):
        m, h = 2 * head.n_classes, head.fusion.n_heads
        dh = head.W_v.shape[1] // h
        flops += 3 * 4 * h * m * m * dh  # QK^T and PV forward; backward twice that
    return flops


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[1000, 8142])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one(args.child, args.steps, args.device)))
        return
    from candle_sklearn import CandleClassifier
    from candle_sklearn._train import TrainConfig

    params = CandleClassifier().get_params()
    cfg = TrainConfig(max_steps=params["max_steps"], max_epochs=params["max_epochs"],
                      batch_size=params["batch_size"])
    inat_steps = cfg.total_steps(INAT_IMAGES)
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads; default budget on iNaturalist-2018 ({INAT_IMAGES:,} images): "
          f"{inat_steps} steps of batch {cfg.batch_size}\n")
    print("| classes | s / step | TFLOP / step | achieved GFLOP/s | peak MiB | "
          "iNat fit at this speed (one fit, no calibration) |")
    print("|---|---|---|---|---|---|")
    for c in args.classes:
        out = subprocess.run([sys.executable, __file__, "--child", str(c), "--steps",
                              str(args.steps), "--device", args.device],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        fit = r["step_s"] * inat_steps
        print(f"| {c:,} | {r['step_s']:.3g} | {r['flops'] / 1e12:.3f} | "
              f"{r['flops'] / r['step_s'] / 1e9:.0f} | {r['peak_mib']:,.0f} | "
              f"{fit / 60:.3g} min |", flush=True)


if __name__ == "__main__":
    main()
