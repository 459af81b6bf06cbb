import os

# No test may touch the network: make any hub lookup fail at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from candle_sklearn import ClipEmbedder, _cache  # noqa: E402
from candle_sklearn._cache import MEMORY  # noqa: E402
from candle_sklearn.datasets import make_clip_like_features  # noqa: E402

ASSETS = Path(__file__).parent / "assets"


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One torch thread for the session (CANDLE_TEST_THREADS=n sets another count). The
    tests' models and batches are tiny: a second thread does not pay, and on a 2-core
    machine that is busy with anything else, threads spinning against each other made
    the suite 3-4x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("CANDLE_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(before)


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


TINY = "candle-test-tiny"  # a 1-layer ViT and text tower, 32-dim embeddings, random weights


TINY_WEIGHTS = None  # set below: a fixed random checkpoint, so reloads give one model


@pytest.fixture(scope="session", autouse=True)
def tiny_model_config(tmp_path_factory):
    global TINY_WEIGHTS
    import open_clip
    open_clip.add_model_config(ASSETS / f"{TINY}.json")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = open_clip.create_model(TINY)
    TINY_WEIGHTS = str(tmp_path_factory.mktemp("weights") / "tiny.pt")
    torch.save(model.state_dict(), TINY_WEIGHTS)


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory):
    """PNG files of 4 colour classes (noise around a class colour), 6 images each."""
    from PIL import Image
    root = tmp_path_factory.mktemp("images")
    colours = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200),
               "yellow": (200, 200, 30)}
    gen = np.random.default_rng(0)
    paths, labels = [], []
    for name, colour in colours.items():
        for i in range(6):
            arr = np.clip(np.array(colour) + gen.normal(0, 25, (40, 40, 3)), 0, 255)
            path = root / f"{name}_{i}.png"
            Image.fromarray(arr.astype(np.uint8)).save(path)
            paths.append(str(path))
            labels.append(name)
    return paths, np.array(labels)


# ------------------------------------------------------------- the tiny embedder
def tiny(**params):
    """The tiny model with fixed random weights (a checkpoint file made per session)."""
    return ClipEmbedder(TINY, pretrained=TINY_WEIGHTS, **{"device": "cpu", **params})


def embed(images, **params):
    """Embeddings of ``images`` by the tiny model: no cache, no worker, one thread."""
    emb = ClipEmbedder(TINY, TINY_WEIGHTS,
                       **{"device": "cpu", "cache": False, "num_workers": 0, "n_jobs": 1,
                          **params})
    return emb.transform(images)


@pytest.fixture
def fresh_embedding_cache():
    """Empty in-memory and session embedding caches before and after the test (files
    whose tests count encodings use it for every test, through ``pytestmark``)."""
    MEMORY.clear()
    _cache.clear_session_cache()
    yield
    MEMORY.clear()
    _cache.clear_session_cache()


@pytest.fixture
def forward_counter(monkeypatch):
    """Counts the images that go through the tiny model's image tower."""
    model = tiny().load_model().model
    seen = []
    original = model.encode_image

    def counting(images, *args, **kwargs):
        seen.append(len(images))
        return original(images, *args, **kwargs)

    monkeypatch.setattr(model, "encode_image", counting)
    return seen


def save_random_tiny(path, seed):
    """A checkpoint of the tiny architecture with random weights drawn from ``seed``."""
    import open_clip
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        torch.save(open_clip.create_model(TINY).state_dict(), path)


def touch_later(path, seconds=10):
    """A new modification time, as a later write would give (file systems round it)."""
    later = time.time_ns() + seconds * 10**9
    os.utime(path, ns=(later, later))
