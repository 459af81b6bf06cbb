"""The training step over fixed buffers, and its replay from CUDA graphs. Torch only.

On CUDA the head's step is bound by kernel launches, not arithmetic (9.6 ms at 1,000
classes on an H100, 5 TFLOP/s): a CUDA graph replays forward, backward and the fused
optimizer step as one launch. A graph reads and writes fixed addresses only, so the step
takes its batch's row indices from one buffer per batch size, its learning rate from the
optimizer's tensor lr, and adds its loss into a sum kept on the device.
"""

import contextlib
import logging
from collections import Counter

import torch

log = logging.getLogger(__name__)

# False: no graphs (the benchmarks and the GPU tests compare with the eager step).
ENABLED = True
# Eager steps of each batch size before its capture: the optimizer's state and the
# libraries' workspaces are made on first use, which a graph cannot do (PyTorch's
# whole-network capture warms up three times on a side stream).
WARMUP = 3
# Fewest replays that pay for a capture (which costs the host about as much as a couple
# of eager steps); a batch size with fewer steps left after its warm-up runs eagerly.
MIN_REPLAYS = 5


def optimizer_step(loss_of, optimizer, idx, running):
    """One step on the rows ``idx``; their summed loss is added into ``running``."""
    loss = loss_of(idx)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    running += loss.detach() * len(idx)


def graphs_pay(device, optimizer_name, counts):
    """Whether a fit with ``counts`` steps of each batch size replays graphs: on CUDA, with
    a fused Adam or AdamW (SGD's tensor learning rate syncs with the host), and where one
    batch size has enough steps after its warm-up."""
    return (ENABLED and device.type == "cuda" and optimizer_name in ("adam", "adamw")
            and max(counts.values(), default=0) >= WARMUP + MIN_REPLAYS)


class StaticStep:
    """The step of train_head reading only fixed buffers; eagerly it computes what the
    eager loop does, bit for bit on CPU (the optimizer's tensor lr there is float64).

    ``counts``: the fit's steps of each batch size (one index buffer each); ``running``
    sums the loss of the steps (times their batch size) on the device."""

    def __init__(self, loss_of, optimizer, counts, device):
        self.loss_of, self.optimizer = loss_of, optimizer
        self.lr = optimizer.param_groups[0]["lr"]  # one group (_train._make_optimizer)
        self.running = torch.zeros((), device=device)
        self.idx = {size: torch.zeros(size, dtype=torch.long, device=device)
                    for size in counts}

    def __call__(self, idx, lr):
        self.lr.fill_(lr)
        self.idx[len(idx)].copy_(idx)
        self._step(len(idx))

    def _step(self, size):
        self.run(size)

    def run(self, size):
        """The step on the rows in the buffer of ``size``: what a graph captures."""
        optimizer_step(self.loss_of, self.optimizer, self.idx[size], self.running)

    def close(self):
        """Drop the gradients (after a capture they live in the graphs' memory pool)."""
        self.optimizer.zero_grad(set_to_none=True)


class GraphedStep(StaticStep):
    """:class:`StaticStep` replayed from one CUDA graph per batch size (the full batches
    and a pass's smaller last one), captured after ``WARMUP`` eager steps of that size.
    If a capture fails, for any reason, the fit goes on with eager steps of the same
    function: the same steps, one debug-level log line."""

    def __init__(self, loss_of, optimizer, counts, device):
        super().__init__(loss_of, optimizer, counts, device)
        self.device, self.counts, self.done = device, counts, Counter()
        self.graphs, self.pool, self.failed = {}, None, False
        # eager steps of a capturable optimizer are meant here (warm-up, small batches):
        # no warning that capturable=True slows them
        optimizer._warned_capturable_if_run_uncaptured = True
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def _step(self, size):
        graph = self.graphs.get(size)
        if graph is None and self._capture_due(size):
            graph = self._try_capture(size)
        if graph is not None:
            graph.replay()
        else:
            self._eager(size)
        self.done[size] += 1

    def _eager(self, size):
        """An eager step. One that runs out of memory while graphs hold their pool (a
        pass's last batch warms up beside the full batches' graph) drops the graphs and
        runs again: its forward or backward failed, before the update changed anything."""
        try:
            with self._side_stream():
                self.run(size)
        except torch.cuda.OutOfMemoryError as exc:
            if not self.graphs:
                raise
            log.debug("out of memory beside the CUDA graphs (%s); the fit goes on eagerly",
                      exc)
            self.failed = True
            self.close()
            torch.cuda.empty_cache()
            with self._side_stream():
                self.run(size)

    def _capture_due(self, size):
        return (not self.failed and self.done[size] >= WARMUP
                and self.counts[size] - self.done[size] >= MIN_REPLAYS)

    def _try_capture(self, size):
        try:
            self.graphs[size] = self._capture(size)
        except Exception as exc:  # noqa: BLE001 - any failure: nothing ran, go on eagerly
            log.debug("CUDA graph capture of the training step failed (%s: %s); the fit "
                      "goes on eagerly", type(exc).__name__, exc)
            self.failed = True
        return self.graphs.get(size)

    def _capture(self, size):
        """A graph of :meth:`run` at ``size``; every graph of the fit shares one memory
        pool (what lives there is scratch within a step: activations and gradients)."""
        graph, main = torch.cuda.CUDAGraph(), torch.cuda.current_stream(self.device)
        previous = torch.cuda.current_device()
        try:
            # thread_local: other threads of the process may go on using CUDA meanwhile
            with torch.cuda.device(self.device), torch.cuda.graph(
                    graph, pool=self.pool, stream=self.stream,
                    capture_error_mode="thread_local"):
                self.run(size)
        finally:  # a capture that fails to end leaves its stream the current one
            torch.cuda.set_stream(main)
            # set_stream makes the stream's device current: the caller's comes back
            torch.cuda.set_device(previous)
        self.pool = graph.pool()
        return graph

    @contextlib.contextmanager
    def _side_stream(self):
        """Eager steps on the capture's side stream, ordered with the caller's stream
        (autograd runs backward on the forward's stream, as the graph will)."""
        if self.stream is None:
            yield
            return
        main = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(main)
        with torch.cuda.stream(self.stream):
            yield
        main.wait_stream(self.stream)

    def close(self):
        """Drop the gradients and the graphs (with them their memory pool)."""
        super().close()
        self.graphs.clear()
