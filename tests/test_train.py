"""Training (candle_sklearn._train): seeding and the step budget."""

import numpy as np
import pytest


def test_seeded_seeds_and_restores_the_mps_generator(monkeypatch):
    """On MPS, dropout draws from the MPS generator: a seeded fit seeds it (so that
    random_state reproduces the fit) and restores the caller's state after."""
    import torch

    from candle_sklearn._train import seeded

    calls, state = [], {"mps": torch.tensor([7])}
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda device="mps": state["mps"])
    monkeypatch.setattr(torch.mps, "set_rng_state",
                        lambda new, device="mps": calls.append(("restore", int(new[0]))))
    monkeypatch.setattr(torch.mps, "manual_seed", lambda seed: calls.append(("seed", seed)))
    with seeded(5, torch.device("mps")):
        assert calls == [("seed", 5)]
    assert calls == [("seed", 5), ("restore", 7)]


def test_reference_recipe_trains_its_fifty_epochs_whatever_the_step_cap():
    # the default max_steps=200 must not cut the reference's 50 epochs short
    from candle_sklearn import CandleClassifier
    from candle_sklearn import REFERENCE_RECIPE

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((600, 8)), np.arange(600) % 3
    clf = CandleClassifier(**REFERENCE_RECIPE, random_state=0).fit(X, y)
    assert clf.n_iter_ == 50 * 5 > CandleClassifier().max_steps


def test_a_collapsed_fit_is_an_error_not_a_model():
    """With lr=1 the loss rises and every prediction is about uniform: the fit must say
    so, as it does for non-finite values (issue: a collapse that passed in silence)."""
    import pytest

    from candle_sklearn import CandleClassifier
    from candle_sklearn.datasets import make_clip_like_features
    from candle_sklearn.exceptions import TrainingDivergedError

    d = make_clip_like_features(n_base=4, n_new=0, dim=64, max_per_class=30, random_state=0)
    params = dict(classes=d.classes[:4], text_features=d.text_features[:4], max_epochs=5,
                  device="cpu", random_state=0)
    with pytest.raises(TrainingDivergedError, match="collapsed"):
        CandleClassifier(lr=1.0, **params).fit(d.X_train, d.y_train)
    fitted = CandleClassifier(**params).fit(d.X_train, d.y_train)  # the default learns
    assert fitted.history_[-1] < fitted.history_[0]


def test_a_collapse_within_the_first_pass_is_caught():
    """A step too large can collapse the head within the first pass, so that the loss
    then falls from a first pass already far above the untrained head's: the check
    compares with the untrained head's loss too (at lr=0.1 in the paper's regime the old
    first-pass comparison let an HM of 0.02 through)."""
    import pytest

    from candle_sklearn import CandleClassifier
    from candle_sklearn.datasets import make_clip_like_features
    from candle_sklearn.exceptions import TrainingDivergedError

    d = make_clip_like_features(n_base=20, n_new=5, dim=128, max_per_class=40,
                                imbalance_ratio=0.1, random_state=0)
    params = dict(classes=d.classes, text_features=d.text_features, max_epochs=5,
                  new_class_bias=0.0, device="cpu", random_state=0)
    with pytest.raises(TrainingDivergedError, match="at the start .* collapsed"):
        CandleClassifier(lr=0.1, **params).fit(d.X_train, d.y_train)
    CandleClassifier(**params).fit(d.X_train, d.y_train)  # the default learns


def test_progress_check_compares_with_the_lower_start():
    import pytest

    from candle_sklearn._train import _check_progress
    from candle_sklearn.exceptions import TrainingDivergedError

    _check_progress([2.0, 1.0, 0.5], 64, untrained=1.0)  # learning
    with pytest.raises(TrainingDivergedError):
        _check_progress([20.0, 10.0, 9.0], 64, untrained=1.0)  # collapsed in pass one
    with pytest.raises(TrainingDivergedError):
        _check_progress([1.0, 2.0], 64, untrained=3.0)  # rose after the first pass
    _check_progress([20.0, 10.0, 9.0], 8, untrained=1.0)  # too few features to judge


@pytest.mark.parametrize("batch_size", [2, 8, 16])
def test_a_fit_that_barely_moves_is_no_collapse(batch_size):
    """One pass at the reference's warm-up rate (1e-5) cannot collapse, yet one batch's
    loss, the first comparison's start, was lower than the pass's mean for some seeds:
    the untrained loss is now measured over up to 1,024 images."""
    import warnings

    from candle_sklearn import CandleClassifier
    from candle_sklearn.datasets import make_clip_like_features

    d = make_clip_like_features(n_base=10, n_new=0, dim=128, max_per_class=20,
                                imbalance_ratio=0.1, random_state=1)
    for seed in range(6):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            CandleClassifier(classes=d.classes, text_features=d.text_features,
                             recipe="reference", batch_size=batch_size, max_epochs=1,
                             max_steps=None, new_class_bias=0.0, device="cpu",
                             random_state=seed).fit(d.X_train, d.y_train)


# ------------------------------------------------ the step over fixed buffers, graphs
def _fit_with_step(monkeypatch, kind, data, **params):
    """A CPU fit whose steps go through ``kind`` ("eager", "static" or "graphed")."""
    from candle_sklearn import CandleClassifier, _train

    monkeypatch.setattr(_train, "_step_kind", lambda device, cfg, counts: kind)
    return CandleClassifier(classes=data.classes, text_features=data.text_features,
                            device="cpu", random_state=0, **params).fit(data.X_train,
                                                                        data.y_train)


def _assert_same_fit(a, b):
    import torch

    assert a.history_ == b.history_
    sa, sb = a.head_.state_dict(), b.head_.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


# the default recipe; Adam; the reference's SGD with dropout and the batch context; one
# batch holding every image
STEP_SETTINGS = [{"batch_size": 32},
                 {"batch_size": 32, "recipe": "reference", "max_epochs": 4},
                 {"batch_size": 50, "optimizer": "adam"}, {"batch_size": 300}]


@pytest.fixture(scope="module")
def step_world():
    from candle_sklearn.datasets import make_clip_like_features

    # 132 training images: batches of 32 leave a smaller last batch in every pass
    return make_clip_like_features(n_base=6, n_new=3, dim=32, max_per_class=40,
                                   imbalance_ratio=0.1, random_state=0)


@pytest.mark.parametrize("params", STEP_SETTINGS)
def test_the_static_step_trains_as_the_eager_loop_bit_for_bit(monkeypatch, step_world,
                                                              params):
    """The step a CUDA graph captures (tensor learning rate, index buffers, the loss summed
    on the device), run eagerly on the CPU, is today's step: same history, same
    parameters."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # optimizer= is deprecated
        eager = _fit_with_step(monkeypatch, "eager", step_world, **{"max_epochs": 6, **params})
        static = _fit_with_step(monkeypatch, "static", step_world, **{"max_epochs": 6, **params})
    _assert_same_fit(eager, static)


@pytest.mark.parametrize("kind", ["static", "graphed"])
def test_dropped_last_batches_and_dropout_train_as_the_eager_loop(monkeypatch, kind):
    """train_head itself, with settings the estimator does not reach: the reference's
    loader (drop_last) and scheduler (per epoch), dropout in AdamW, warm-up epochs."""
    import torch

    from candle_sklearn import _train
    from candle_sklearn._graphed_step import GraphedStep
    from candle_sklearn._head import CandleHead
    from candle_sklearn._train import TrainConfig, seeded, train_head

    monkeypatch.setattr(GraphedStep, "_capture", _ReplayedEagerly)
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(140, 24, generator=g), torch.arange(140) % 5
    cfg = TrainConfig(batch_size=32, max_steps=None, max_epochs=12, drop_last=True,
                      epoch_schedule=True, warmup_epochs=1)
    fits = []
    for step_kind in ("eager", kind):
        monkeypatch.setattr(_train, "_step_kind",
                            lambda device, cfg, counts, kind=step_kind: kind)
        with seeded(0, torch.device("cpu")):
            head = CandleHead(torch.randn(4, 24, generator=torch.Generator().manual_seed(1)),
                              torch.randn(6, 24, generator=torch.Generator().manual_seed(2)),
                              2, dropout=0.2)
            history = train_head(head, X, y, torch.tensor([28, 28, 28, 28, 0, 0]), cfg,
                                 seed=0, device=torch.device("cpu"))
        fits.append((history, head.state_dict()))
    (h1, s1), (h2, s2) = fits
    assert h1 == h2 and all(torch.equal(s1[k], s2[k]) for k in s1)


class _ReplayedEagerly:
    """Stands in for a CUDA graph on the CPU: a replay runs the captured step again, on
    whatever the buffers then hold (as a graph reads them)."""

    def __init__(self, step, size):
        self.step, self.size = step, size

    def replay(self):
        self.step.run(self.size)


def test_graph_replays_of_every_batch_size_train_as_the_eager_loop(monkeypatch, step_world):
    """The graphed step's bookkeeping (a warm-up per batch size, one graph for the full
    batches and one for a pass's smaller last batch, buffers filled before each replay),
    with replays run on the CPU: the fit is the eager loop's, bit for bit."""
    from candle_sklearn._graphed_step import MIN_REPLAYS, WARMUP, GraphedStep

    captured, replays = [], []

    def capture(step, size):
        captured.append(size)
        graph = _ReplayedEagerly(step, size)
        graph.replay = lambda: (replays.append(size), _ReplayedEagerly.replay(graph))
        return graph

    monkeypatch.setattr(GraphedStep, "_capture", capture)
    params = {"batch_size": 32, "max_epochs": 12, "new_class_bias": 0.0}  # no refits
    graphed = _fit_with_step(monkeypatch, "graphed", step_world, **params)
    eager = _fit_with_step(monkeypatch, "eager", step_world, **params)
    _assert_same_fit(eager, graphed)
    full, last = divmod(len(step_world.y_train), 32)
    assert last and captured == [32, last]
    assert replays.count(32) == full * 12 - WARMUP and replays.count(last) == 12 - WARMUP
    assert 12 - WARMUP >= MIN_REPLAYS  # else the last batch would not be captured


def test_a_failed_capture_trains_on_eagerly_with_the_same_steps(monkeypatch, step_world,
                                                                caplog):
    """A capture that fails, whatever the reason, leaves the fit to eager steps of the
    same function: the same fit, one debug line, no warning, no second try."""
    import logging
    import warnings

    from candle_sklearn._graphed_step import GraphedStep

    tries = []

    def failing(step, size):
        tries.append(size)
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(GraphedStep, "_capture", failing)
    params = {"batch_size": 32, "max_epochs": 6, "new_class_bias": 0.0}  # one fit, no refits
    with caplog.at_level(logging.DEBUG, "candle_sklearn._graphed_step"), \
            warnings.catch_warnings():
        warnings.simplefilter("error")
        graphed = _fit_with_step(monkeypatch, "graphed", step_world, **params)
    _assert_same_fit(_fit_with_step(monkeypatch, "eager", step_world, **params), graphed)
    assert tries == [32]
    [line] = [r for r in caplog.records if r.name == "candle_sklearn._graphed_step"]
    assert line.levelno == logging.DEBUG and "not permitted" in line.getMessage()


def test_out_of_memory_beside_the_graphs_drops_them_and_trains_on(monkeypatch, step_world):
    """An eager step (a smaller last batch warming up) that runs out of memory while the
    full batches' graph holds its memory: the graphs go, the step runs again, and the fit
    is the eager loop's."""
    import torch

    from candle_sklearn import _train
    from candle_sklearn._graphed_step import GraphedStep

    captured, failures, original = [], [], _train._batch_loss

    def capture(step, size):
        captured.append(size)
        return _ReplayedEagerly(step, size)

    def tight(head, X, y, idx, *args):
        if captured and len(idx) < 32 and not failures:
            failures.append(len(idx))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return original(head, X, y, idx, *args)

    monkeypatch.setattr(GraphedStep, "_capture", capture)
    monkeypatch.setattr(_train, "_batch_loss", tight)
    params = {"batch_size": 32, "max_epochs": 12, "new_class_bias": 0.0}
    graphed = _fit_with_step(monkeypatch, "graphed", step_world, **params)
    monkeypatch.setattr(_train, "_batch_loss", original)
    _assert_same_fit(_fit_with_step(monkeypatch, "eager", step_world, **params), graphed)
    assert captured == [32] and len(failures) == 1


@pytest.mark.parametrize("n, batch_size, drop_last, total",
                         [(133, 32, False, 23), (133, 32, True, 9), (128, 32, False, 8),
                          (20, 128, False, 7), (20, 128, True, 3), (133, 32, False, 2)])
def test_batch_counts_are_the_batches_that_the_fit_draws(n, batch_size, drop_last, total):
    from collections import Counter

    import torch

    from candle_sklearn._train import TrainConfig, _batch_counts, _batches

    cfg = TrainConfig(batch_size=batch_size, drop_last=drop_last)
    drawn = (b for b in _batches(n, cfg, torch.Generator().manual_seed(0), "cpu")
             if b is not None)
    assert _batch_counts(n, cfg, total) == Counter(len(next(drawn)) for _ in range(total))


def test_graphs_only_on_cuda_with_adam_and_enough_steps(monkeypatch):
    """CPU and MPS keep the eager loop; on CUDA, graphs for Adam and AdamW where a batch
    size has enough steps to pay for its capture."""
    from collections import Counter

    import torch

    from candle_sklearn import _graphed_step
    from candle_sklearn._graphed_step import MIN_REPLAYS, WARMUP, graphs_pay

    cuda, enough = torch.device("cuda"), Counter({128: 180, 98: 20})
    assert graphs_pay(cuda, "adamw", enough) and graphs_pay(cuda, "adam", enough)
    assert not graphs_pay(torch.device("cpu"), "adamw", enough)
    assert not graphs_pay(torch.device("mps"), "adamw", enough)
    assert not graphs_pay(cuda, "sgd", enough)
    assert not graphs_pay(cuda, "adamw", Counter({128: WARMUP + MIN_REPLAYS - 1}))
    monkeypatch.setattr(_graphed_step, "ENABLED", False)
    assert not graphs_pay(cuda, "adamw", enough)


def test_a_cpu_fit_steps_eagerly(monkeypatch, step_world):
    """Without a GPU the fit takes today's loop (its float learning rate, no buffers)."""
    from candle_sklearn import _train

    kinds = []
    original = _train._make_step
    monkeypatch.setattr(_train, "_make_step",
                        lambda kind, *a: kinds.append(kind) or original(kind, *a))
    from candle_sklearn import CandleClassifier

    CandleClassifier(classes=step_world.classes, text_features=step_world.text_features,
                     new_class_bias=0.0, device="cpu", random_state=0,
                     max_epochs=2).fit(step_world.X_train, step_world.y_train)
    assert kinds == ["eager"]


# ---------------------------------------------------------------- on a CUDA device
def _graph_spy(monkeypatch):
    """The batch sizes whose capture succeeded, in order."""
    from candle_sklearn._graphed_step import GraphedStep

    captured, original = [], GraphedStep._capture

    def spy(step, size):
        graph = original(step, size)
        captured.append(size)
        return graph

    monkeypatch.setattr(GraphedStep, "_capture", spy)
    return captured


def _relative_difference(a, b):
    import torch

    return float(torch.linalg.vector_norm((a - b).double())
                 / torch.linalg.vector_norm(b.double()).clamp_min(1e-12))


# Graphed against eager on CUDA: the same kernels, but CUDA's attention backward is not
# bitwise deterministic and Adam's normalised step turns gradients at rounding level into
# whole steps, so the fits agree to a tolerance: each pass's mean loss within rtol, each
# parameter within a relative (Frobenius) difference of rtol; bf16 rounds 2^-8.
GPU_TOLERANCE = {"fp32": 1e-3, "auto": 1e-2}


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_a_graphed_cuda_fit_is_the_eager_cuda_fit(monkeypatch, precision):
    """The default fit on CUDA replays graphs (full batches and a pass's smaller last
    batch), warns of no capture, and matches the eager CUDA fit: history and parameters
    within GPU_TOLERANCE, the same predictions."""
    import warnings

    import torch

    from candle_sklearn import CandleClassifier, _graphed_step
    from candle_sklearn.datasets import make_clip_like_features

    d = make_clip_like_features(n_base=8, n_new=4, dim=64, max_per_class=80,
                                n_test_per_class=20, random_state=0)
    assert len(d.y_train) % 128  # a smaller last batch in each pass

    def fit():
        return CandleClassifier(classes=d.classes, text_features=d.text_features,
                                new_class_bias=0.0, train_precision=precision,
                                device="cuda", random_state=0).fit(d.X_train, d.y_train)

    captured = _graph_spy(monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graphed = fit()
    assert not [w for w in caught if "captur" in str(w.message).lower()
                or "graph" in str(w.message).lower()]
    assert captured == [128, len(d.y_train) % 128]  # 180 images: 128, then 52, per pass
    monkeypatch.setattr(_graphed_step, "ENABLED", False)
    eager = fit()
    rtol = GPU_TOLERANCE[precision]
    np.testing.assert_allclose(graphed.history_, eager.history_, rtol=rtol)
    sg, se = graphed.head_.state_dict(), eager.head_.state_dict()
    worst = max(_relative_difference(sg[k], se[k]) for k in se if se[k].is_floating_point())
    assert worst <= rtol
    np.testing.assert_array_equal(graphed.predict(d.X_test), eager.predict(d.X_test))
    assert torch.cuda.current_stream() == torch.cuda.default_stream()


@pytest.mark.gpu
def test_dropout_draws_new_masks_at_every_graph_replay():
    """Dropout inside a graph draws from the graph-safe CUDA generator: every replay its
    own masks, and a seeded fit draws the same masks again."""
    from collections import Counter

    import torch
    import torch.nn.functional as F

    from candle_sklearn._graphed_step import MIN_REPLAYS, WARMUP, GraphedStep
    from candle_sklearn._train import seeded

    device, steps = torch.device("cuda"), WARMUP + MIN_REPLAYS + 3

    def masks_of_a_fit(seed):
        with seeded(seed, device):
            w = torch.nn.Parameter(torch.ones(256, device=device))
            mask = torch.zeros(8, 256, device=device)

            def loss_of(idx):
                kept = F.dropout(w.expand(len(idx), -1), p=0.5, training=True)
                mask.copy_((kept != 0).float())
                return kept.sum()

            lr = torch.tensor(1e-3, device=device)
            optimizer = torch.optim.AdamW([w], lr=lr, fused=True, capturable=True)
            step = GraphedStep(loss_of, optimizer, Counter({8: steps}), device)
            masks = []
            for _ in range(steps):
                step(torch.arange(8, device=device), 1e-3)
                masks.append(mask.clone())
            assert 8 in step.graphs  # steps WARMUP on were replays
            step.close()  # as train_head does, before seeded restores the generator
            return torch.stack(masks)

    masks = masks_of_a_fit(0)
    assert all(not torch.equal(masks[i], masks[j])
               for i in range(len(masks)) for j in range(i))
    assert 0.4 < float(masks[WARMUP:].mean()) < 0.6
    assert torch.equal(masks, masks_of_a_fit(0))
    assert not torch.equal(masks, masks_of_a_fit(1))


@pytest.mark.gpu
def test_a_capture_that_fails_on_cuda_trains_on_eagerly():
    """A step that syncs with the host cannot be captured: the capture fails, the fit goes
    on eagerly (on the capture's side stream, ordered with the caller's, which is current
    again afterwards), with the steps the static step takes eagerly."""
    from collections import Counter

    import torch

    from candle_sklearn import _graphed_step as gs

    device, steps = torch.device("cuda"), gs.WARMUP + gs.MIN_REPLAYS + 2

    def fit(cls):
        w = torch.nn.Parameter(torch.linspace(-1, 1, 64, device=device))
        X = torch.linspace(0, 1, 8 * 64, device=device).view(8, 64)

        def loss_of(idx):
            loss = ((X[idx] * w).sum(1) ** 2).mean()
            if float(loss) < 0:  # a host sync: not allowed in a capture
                raise AssertionError
            return loss

        optimizer = torch.optim.AdamW([w], lr=torch.tensor(1e-2, device=device), fused=True,
                                      capturable=cls is gs.GraphedStep)
        step = cls(loss_of, optimizer, Counter({8: steps}), device)
        for i in range(steps):
            step(torch.arange(8, device=device), 1e-2 / (1 + i))
        assert not getattr(step, "graphs", None)
        return w.detach().clone(), step.running.clone()

    (w_graphed, loss_graphed), (w_static, loss_static) = fit(gs.GraphedStep), fit(gs.StaticStep)
    assert torch.equal(w_graphed, w_static) and torch.equal(loss_graphed, loss_static)
    assert torch.cuda.current_stream() == torch.cuda.default_stream()
