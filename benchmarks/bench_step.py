"""Time of one training step (forward, backward, AdamW) of the default head (isolated
context), against the same step with each projection applied twice, to class tokens and
to images separately (the two-pass step before 0.3.0), in the same process.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_step.py

Shapes are those of the family's worlds (benchmarks/worlds.py): the batch is
min(128, training images); C classes; 2C class tokens. Steps alternate between the two
variants, so that load on the machine falls on both alike; the median is reported.
"""

import argparse
import time

import torch

from candle_sklearn._head import CandleHead
from candle_sklearn._loss import cla_loss, class_log_prior

# name: (batch, base classes, new classes, D)
SHAPES = {
    "4shot-10-noisytext": (20, 5, 5, 768),
    "1shot-20": (10, 10, 10, 512),
    "siblings-768": (128, 50, 50, 768),
    "gap-aniso-8shot": (128, 50, 50, 512),
    "paper-lt": (128, 50, 50, 512),
    "many-new": (128, 20, 180, 512),
}


def two_pass_logits(head, X):
    """The step as computed before: W_v, the in- and out-projections each applied
    twice (class tokens, then images), their weight gradients summed in backward."""
    P, T = head.class_tokens()
    U = X @ head.W_v
    z0 = head.logit_scale * torch.nn.functional.normalize(torch.cat([U, P]), dim=-1) @ \
        torch.nn.functional.normalize(T, dim=-1).T
    ctx = head.fusion.fuse_class_tokens(torch.cat([P, T]))
    U_f = head.fusion.fuse_images(U, ctx)
    P_f, T_f = head._split_classes(ctx.fused)
    return (z0, *head._fused_logits(torch.cat([U_f, P_f]), P_f, T_f))


def make_step(head, X, target, prior, logits_fn):
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-4, fused=True)

    def step():
        loss = sum(cla_loss(z, target, prior, 1.0) for z in logits_fn(head, X))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(batch, n_base, n_new, dim, repeats):
    g = torch.Generator().manual_seed(0)
    protos, text = torch.randn(n_base, dim, generator=g), torch.randn(n_base + n_new, dim,
                                                                       generator=g)
    X = torch.randn(batch, dim, generator=g)
    c = n_base + n_new
    target = torch.cat([torch.randint(n_base, (batch,), generator=g), torch.arange(c)])
    prior = class_log_prior(torch.cat([torch.ones(n_base), torch.zeros(n_new)]))
    heads = [CandleHead(protos, text, n_new, dropout=0.0).train() for _ in range(2)]
    heads[1].load_state_dict(heads[0].state_dict())
    # the same logits and gradients, before any step
    for head, fn in zip(heads, (CandleHead.training_logits, two_pass_logits)):
        sum(z.sum() for z in fn(head, X)).backward()
    err = max(float((a.grad - b.grad).abs().max() / b.grad.abs().max())
              for a, b in zip(*[h.parameters() for h in heads]))
    steps = [make_step(heads[0], X, target, prior, CandleHead.training_logits),
             make_step(heads[1], X, target, prior, two_pass_logits)]
    for step in steps:  # warm-up
        step()
    times = [[], []]
    for _ in range(repeats):
        for i, step in enumerate(steps):
            times[i].append(timed(step))
    one, two = (sorted(t)[len(t) // 2] * 1000 for t in times)
    return one, two, err


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"{'world':<20}{'batch':>6}{'C':>5}{'D':>5}{'one pass ms':>12}{'two passes ms':>14}"
          f"{'ratio':>7}{'grad rel. diff':>16}")
    for name, (batch, n_base, n_new, dim) in SHAPES.items():
        one, two, err = bench(batch, n_base, n_new, dim, args.repeats)
        print(f"{name:<20}{batch:6d}{n_base + n_new:5d}{dim:5d}{one:12.1f}{two:14.1f}"
              f"{one / two:7.2f}{err:16.1e}", flush=True)


if __name__ == "__main__":
    main()
