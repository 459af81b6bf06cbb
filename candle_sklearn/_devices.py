"""Devices: the one place where a ``device`` parameter becomes a torch device, and where a
model saved on one machine finds the nearest device of another. Torch only."""

import torch

DEVICES = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"


def resolve_device(spec):
    """A usable torch device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``,
    ``"cuda"``, ``"cuda:N"`` or ``"mps"``. Anything else, or a device this machine does
    not have, is a ValueError that says so."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={spec!r} is not a torch device: {exc}") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={spec!r} cannot hold and run a model: use {DEVICES}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={spec!r} was requested but CUDA is not available; "
                             "use device='auto' or 'cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device={spec!r}: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={spec!r} was requested but MPS is not available")
    return device


def nearest_device(saved):
    """``(device, why)``: the saved device where this machine has it (``why`` None), else
    the nearest one it has and why: no CUDA at all, or not GPU N of a ``cuda:N`` (fitted
    on GPU 1 of a larger machine, say), or no MPS (fitted on a Mac)."""
    if saved == "mps" and not torch.backends.mps.is_available():
        return "cpu", "no MPS device"
    if not saved.startswith("cuda"):
        return saved, None
    if not torch.cuda.is_available():
        return "cpu", "no CUDA device"
    index = saved.partition(":")[2]
    if index.isdigit() and int(index) >= torch.cuda.device_count():
        return "cuda", f"{torch.cuda.device_count()} CUDA device(s)"
    return saved, None
