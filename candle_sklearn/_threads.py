"""Torch's intra-op thread count for the length of a call, set from an ``n_jobs``
value read as scikit-learn reads it.

``n_jobs=None`` leaves torch alone (its default is one thread per core; inside joblib's
worker processes joblib lowers it so that the workers do not oversubscribe the cores).
A positive value is a thread count; -1 means every core, -2 all but one, and so on.
Torch's setting is process-wide: overlapping calls from several threads share it, and
the value from before the first of them comes back when the last one ends.
"""

import contextlib
import os
import threading

import torch

__all__ = ["effective_n_jobs", "torch_threads", "serving_n_jobs", "working_n_jobs"]

# Up to this many samples, prediction with n_jobs=None runs on one thread: the work is
# a few milliseconds, less than what waking torch's pool costs, and on a busy machine a
# pool thread waiting for a taken core stalls the call (docs/decisions).
SMALL_INPUT_ROWS = 64

_LOCK = threading.Lock()
_STATE = {"depth": 0, "saved": None}


def effective_n_jobs(n_jobs):
    """Threads for ``n_jobs`` (None: None, meaning "leave torch's setting")."""
    if n_jobs is None:
        return None
    if n_jobs == 0:
        raise ValueError("n_jobs == 0 has no meaning; use None, a positive count or -1")
    if n_jobs > 0:
        return int(n_jobs)
    from joblib import cpu_count  # respects CPU affinity and container quotas

    return max(cpu_count() + 1 + int(n_jobs), 1)


def free_cores():
    """Cores that other processes are not keeping busy: every core but the load average
    (floored; one at least). Where the system has no load average, every core. The load
    average counts this process too, so after minutes of its own work it sees a core
    fewer: on an idle machine that costs a fit a third, where taking the load's own part
    off made a fit on a busy machine 2.3x slower than one thread (decision 0012)."""
    from joblib import cpu_count  # respects CPU affinity and container quotas

    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cpu_count()
    return max(1, cpu_count() - int(load))


def working_n_jobs(n_jobs):
    """The ``n_jobs`` to fit or embed with: where the user left the count to torch (None),
    torch's setting but no more threads than free cores (a pool thread waiting for a
    taken core stalls every product: a fit on a busy 2-core machine ran 2 to 5 times
    slower on both cores than on one). An explicit ``n_jobs`` is used as it is."""
    if n_jobs is not None:
        return n_jobs
    return min(torch.get_num_threads(), free_cores())


def serving_n_jobs(n_jobs, n_rows):
    """The ``n_jobs`` to predict ``n_rows`` samples with: :func:`working_n_jobs`, and one
    thread for small inputs where the user left the count to torch (the work is a few
    milliseconds, and the load average lags too much to choose for one call)."""
    if n_jobs is None and n_rows <= SMALL_INPUT_ROWS:
        return 1
    return working_n_jobs(n_jobs)


@contextlib.contextmanager
def torch_threads(n_jobs):
    """Run a block with ``torch.set_num_threads(effective_n_jobs(n_jobs))``."""
    threads = effective_n_jobs(n_jobs)
    if threads is None:
        yield
        return
    with _LOCK:
        saved = torch.get_num_threads() if _STATE["depth"] == 0 else _STATE["saved"]
        torch.set_num_threads(threads)  # first: if it raises, nothing is left counted
        _STATE["saved"] = saved
        _STATE["depth"] += 1
    try:
        yield
    finally:
        with _LOCK:
            _STATE["depth"] -= 1
            if _STATE["depth"] == 0:
                torch.set_num_threads(_STATE["saved"])
