"""Training and inference loops for the Candle head: optimizer, schedule, mini-batches
with prototype rows, seeding, devices. Torch only."""

import contextlib
import math
from collections import Counter
from dataclasses import dataclass

import torch

from ._graphed_step import GraphedStep, StaticStep, graphs_pay, optimizer_step
from ._loss import cla_loss, class_log_prior
from .exceptions import TrainingDivergedError


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. The budget is ``max_steps`` optimizer steps or ``max_epochs``
    passes over the data, whichever ends first (None: no limit of that kind);
    ``epoch_schedule`` and ``drop_last`` reproduce the reference code's scheduler and
    loader (measured in docs/method.md)."""

    tau: float = 1.0
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    max_steps: int | None = 200
    max_epochs: int | None = 20
    batch_size: int = 128
    warmup_epochs: int = 0
    warmup_lr: float = 1e-5
    precision: str = "fp32"
    epoch_schedule: bool = False
    drop_last: bool = False

    def steps_per_epoch(self, n):
        if self.drop_last and n >= self.batch_size:
            return n // self.batch_size
        return math.ceil(n / self.batch_size)

    def total_steps(self, n):
        limits = [self.max_steps, None if self.max_epochs is None
                  else self.max_epochs * self.steps_per_epoch(n)]
        limits = [lim for lim in limits if lim is not None]
        if not limits:
            raise ValueError("set max_steps or max_epochs (or both)")
        return min(limits)


def auto_lr(n_samples, n_features):
    """The default peak learning rate: 1e-3 for 1,000 or more samples of at most 512
    features, lower with fewer samples (n / 1000, but at least 0.3x from 90 samples and
    n / 300 below: little data, small steps, so that ten images barely move the head from
    zero-shot CLIP) and with wider features (x 512 / D: an Adam step moves a D x D
    projection by about lr * D in spectral norm, so the step is kept the size it has at
    D = 512). Chosen over a family of worlds by regret and checked on worlds that were
    made after it (docs/decisions/0001 and 0002)."""
    data = max(n_samples / 1000, min(0.3, n_samples / 300))
    return 1e-3 * min(1.0, 512 / n_features) * min(1.0, data)


def _forked_rng(device):
    """A block that leaves the CPU generator and, on CUDA or MPS, ``device``'s as they
    were (forking every GPU's would start a CUDA context on each)."""
    accelerator = device.type in ("cuda", "mps")
    return torch.random.fork_rng(devices=[device] if accelerator else [],
                                 device_type=device.type if accelerator else None)


@contextlib.contextmanager
def seeded(seed, device):
    """Seed torch's RNGs for a block without disturbing the caller's RNG state: the CPU
    generator and, on CUDA or MPS, the training device's only. (``torch.manual_seed``
    would reseed every GPU, and forking all of them would start a CUDA context on each.)"""
    with _forked_rng(device):
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        elif device.type == "mps":  # dropout on MPS draws from its own generator
            torch.mps.manual_seed(seed)
        yield


def _make_optimizer(params, cfg, lr=None, capturable=False):
    """The optimizer of ``cfg`` with one parameter group; ``lr``: a tensor learning rate
    in place of ``cfg.lr`` (a CUDA graph's step reads it), ``capturable``: Adam's and
    AdamW's state ready for graph capture."""
    params = [p for p in params if p.requires_grad]
    lr = cfg.lr if lr is None else lr
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    # one fused kernel per step instead of a dozen passes over the D x D parameters
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32,
                                                                 torch.float64) for p in params)
    adam = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(cfg.optimizer)
    if adam is None:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
    return adam(params, lr=lr, weight_decay=cfg.weight_decay, fused=fused,
                capturable=capturable)


def _lr_at(step, steps_per_epoch, total, cfg):
    """Constant warm-up epochs at ``warmup_lr``, then cosine decay from ``lr``: per step to
    zero at ``total``, or (``epoch_schedule``, as the reference) once per epoch over
    ``max_epochs`` cosine periods, never reaching zero."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    if step < warmup:
        return cfg.warmup_lr
    if cfg.epoch_schedule:
        epoch = (step - warmup) // steps_per_epoch
        return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * epoch / cfg.max_epochs))
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def _pass_slices(n, cfg):
    """``(start, stop)`` of each mini-batch of one pass over ``n`` rows: batches of
    ``cfg.batch_size`` (at most n), the last one smaller or, with ``drop_last``, dropped."""
    size = min(cfg.batch_size, n)
    end = n - n % size if cfg.drop_last else n
    return [(start, min(start + size, n)) for start in range(0, end, size)]


def _batches(n, cfg, generator, device):
    """Index tensors of successive mini-batches, reshuffled at each pass over the data;
    ``None`` marks the end of a pass."""
    slices = _pass_slices(n, cfg)
    while True:
        order = torch.randperm(n, generator=generator).to(device)
        for start, stop in slices:
            yield order[start:stop]
        yield None


def _check_finite(head, loss, step):
    if not math.isfinite(loss):
        raise TrainingDivergedError(f"the training loss became {loss} by step {step}")
    params = dict(head.named_parameters())
    # a sum is non-finite where any entry is (one pass, one transfer for all parameters);
    # isfinite, four passes, only then (a finite sum can also overflow)
    if torch.stack([p.detach().sum() for p in params.values()]).isfinite().all():
        return
    finite = [bool(torch.isfinite(p).all()) for p in params.values()]
    if not all(finite):
        bad = [name for name, ok in zip(params, finite) if not ok]
        raise TrainingDivergedError(f"parameter {bad[0]} became non-finite by step {step}")


def _precision(device, precision):
    """The forward pass's autocast: bf16 (``"bf16"``; ``"auto"`` on CUDA), else plain
    float32. Parameters, optimizer state and the loss stay float32."""
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


@contextlib.contextmanager
def _tf32(device):
    """TF32 for the float32 matrix products that autocast leaves (forward and backward)
    on CUDA, for the length of a fit; the process's setting is restored after."""
    saved = torch.get_float32_matmul_precision()
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved)


def train_head(head, X, y, class_counts, cfg, *, seed, device, on_epoch=None):
    """Train ``head`` in place on features ``X`` (n, D) and head-order labels ``y``.

    Every mini-batch gets the C prototype rows appended with labels 0..C-1; the loss
    is the sum of the CLA losses of the logits the head returns. Runs
    ``cfg.total_steps(n)`` optimizer steps and returns the mean loss of each pass over
    the data (the last one possibly partial). Raises :class:`TrainingDivergedError` when the
    loss or a parameter stops being finite (checked once per pass: one host sync), or when
    the trained head's scores are not. The head is left in eval mode on ``device``. On CUDA
    the steps are replayed from CUDA graphs where that pays (``_graphed_step``).
    """
    head.to(device).train()
    X, y = X.to(device), y.to(device)
    log_prior = class_log_prior(class_counts, X.dtype).to(device)
    class_rows = torch.arange(head.n_classes, device=device)
    n = X.shape[0]
    steps_per_epoch, total = cfg.steps_per_epoch(n), cfg.total_steps(n)
    batches = _batches(n, cfg, torch.Generator().manual_seed(seed), device)
    history, seen = [], 0
    # the collapse check's start (no check, so nothing to measure, on very few features)
    untrained = (_untrained_loss(head, X, y, class_rows, log_prior, cfg, device)
                 if X.shape[1] >= MIN_COLLAPSE_DIM else None)
    counts = _batch_counts(n, cfg, total)
    step_fn = _make_step(_step_kind(device, cfg, counts),
                         lambda idx: _batch_loss(head, X, y, idx, class_rows, log_prior,
                                                 cfg, device), head, cfg, device, counts)
    try:
        with _tf32(device):
            for step in range(total):
                idx = next(batches)
                if idx is None:  # a pass over the data ended
                    _record(history, step_fn.running, seen, head, step, on_epoch)
                    step_fn.running.zero_()
                    seen = 0
                    idx = next(batches)
                step_fn(idx, _lr_at(step, steps_per_epoch, total, cfg))
                seen += len(idx)
        if seen:
            _record(history, step_fn.running, seen, head, total, on_epoch)
    finally:
        step_fn.close()
    head.eval()
    _check_scores(head, total)
    _check_progress(history, X.shape[1], untrained)
    return history


def _batch_counts(n, cfg, total):
    """How many of the fit's ``total`` steps take each batch size, as ``_batches`` cuts
    them (a pass's last batch can be smaller)."""
    one_pass = [stop - start for start, stop in _pass_slices(n, cfg)]
    passes, rest = divmod(total, len(one_pass))
    return Counter(one_pass * passes + one_pass[:rest])


def _step_kind(device, cfg, counts):
    """The fit's kind of step: "graphed" where replaying CUDA graphs pays (see
    ``graphs_pay``), else "eager" (CPU and MPS always); "static", the graphs' step run
    eagerly, is for the tests."""
    return "graphed" if graphs_pay(device, cfg.optimizer, counts) else "eager"


def _make_step(kind, loss_of, head, cfg, device, counts):
    """The step function of a fit: ``step(idx, lr)`` trains on the rows ``idx`` at
    learning rate ``lr`` and adds their summed loss into ``step.running``."""
    if kind == "eager":
        return EagerStep(loss_of, _make_optimizer(head.parameters(), cfg), device)
    # float64 on CPU, where the fused kernel reads a double as the eager loop passes it;
    # the CUDA kernel reads a float32
    dtype = torch.float64 if device.type == "cpu" else torch.float32
    lr = torch.tensor(cfg.lr, dtype=dtype, device=device)
    optimizer = _make_optimizer(head.parameters(), cfg, lr=lr,
                                capturable=kind == "graphed" and cfg.optimizer != "sgd")
    return (GraphedStep if kind == "graphed" else StaticStep)(loss_of, optimizer, counts,
                                                              device)


class EagerStep:
    """The step as a Python loop runs it: the learning rate into the optimizer's group as
    a float, the batch's indices as they come."""

    def __init__(self, loss_of, optimizer, device):
        self.loss_of, self.optimizer = loss_of, optimizer
        self.running = torch.zeros((), device=device)

    def __call__(self, idx, lr):
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        optimizer_step(self.loss_of, self.optimizer, idx, self.running)

    def close(self):
        pass


def _batch_loss(head, X, y, idx, class_rows, log_prior, cfg, device):
    """The training loss of the rows ``idx`` with the C prototype rows appended."""
    target = torch.cat([y[idx], class_rows])
    with _precision(device, cfg.precision):
        logits = [z.float() for z in head.training_logits(X[idx]) if z is not None]
    return sum(cla_loss(z, target, log_prior, cfg.tau) for z in logits)


# Images the untrained head's loss is measured on (spread over the data), for the
# collapse check: one batch's loss varied too much to compare a pass's mean with.
UNTRAINED_SAMPLE = 1024


@torch.no_grad()
def _untrained_loss(head, X, y, class_rows, log_prior, cfg, device):
    """The mean training loss of the head before any step, over at most
    ``UNTRAINED_SAMPLE`` images spread over the data, in batches and in training mode as
    a pass computes it; the random state is left as it was, so that the fit draws the same
    dropout masks as without this measurement."""
    idx = torch.linspace(0, X.shape[0] - 1, min(X.shape[0], UNTRAINED_SAMPLE),
                         device=X.device).long()
    total = torch.zeros((), device=device)
    with _forked_rng(device), _tf32(device):
        for part in idx.split(cfg.batch_size):
            loss = _batch_loss(head, X, y, part, class_rows, log_prior, cfg, device)
            total += loss * len(part)
    return total / len(idx)


@torch.no_grad()
def _check_scores(head, step):
    """Finite parameters can still be too large for float32 scoring (one step of weight
    decay 1e30 scales them by -1e18): the fitted head must score its prototypes finitely."""
    if not torch.isfinite(head.scores(head.visual_prototypes)).all():
        raise TrainingDivergedError(f"the head's parameters grew so large by step {step} "
                                    "that its scores are not finite")


# A fit whose last pass's mean loss is this much above the untrained head's loss
# (_untrained_loss) or its first pass's has collapsed: too large a step sends every score
# to about the same value, and that can happen within the first pass. A working fit's loss
# falls (docs/decisions/0018). Below MIN_COLLAPSE_DIM features the layer norm leaves too
# little to learn for the loss to say anything (two features become two points): no check
# there.
COLLAPSE_RATIO = 1.25
MIN_COLLAPSE_DIM = 16


def _check_progress(history, dim, untrained):
    if dim < MIN_COLLAPSE_DIM:
        return
    start = min(float(untrained), history[0])
    if history[-1] > COLLAPSE_RATIO * start:
        raise TrainingDivergedError(
            f"the training loss rose from {start:.4g} at the start to {history[-1]:.4g} in "
            "the last pass over the data: the fit collapsed instead of learning")


def _record(history, running, seen, head, step, on_epoch):
    history.append(running.item() / seen)  # the one host sync of a pass
    _check_finite(head, history[-1], step)
    if on_epoch is not None:
        on_epoch(len(history) - 1, history[-1])
