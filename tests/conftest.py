import os

# No test may touch the network: make any hub lookup fail at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from candle_sklearn.datasets import make_clip_like_features  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def small_data():
    """8 base and 4 new classes, 32-dim features, long-tailed training split."""
    return make_clip_like_features(n_base=8, n_new=4, dim=32, max_per_class=30,
                                   n_test_per_class=10, random_state=0)


FAST = dict(max_epochs=4, batch_size=64, device="cpu", random_state=0)


@pytest.fixture
def fast_params():
    return dict(FAST)


def rng(seed=0):
    return np.random.default_rng(seed)
