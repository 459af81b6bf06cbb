"""Embedding on a local Ray cluster (candle_sklearn.distributed), against
ClipEmbedder.transform on the same files. Skipped when Ray is not installed."""

import os
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from candle_sklearn import ClipEmbedder, ImageInputError, _cache, _clip  # noqa: E402
from candle_sklearn import distributed  # noqa: E402
from candle_sklearn.distributed import embed_dataset, embed_paths  # noqa: E402

from . import conftest  # noqa: E402
from .conftest import TINY  # noqa: E402

pytestmark = pytest.mark.slow  # a local Ray cluster and its actors take seconds to start


@pytest.fixture(scope="module")
def ray_cluster():
    for attempt in range(2):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                     configure_logging=False,
                     runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1",
                                               "TRANSFORMERS_OFFLINE": "1"}},
                     # the raylet waits for its agent process, slow to start on a
                     # loaded machine (default 30 s)
                     _system_config={"agent_register_timeout_ms": 120_000})
            break
        except Exception as exc:  # noqa: BLE001 - Ray's own start-up, not our code
            ray.shutdown()
            # Ray also waits a fixed 30 s for its raylet to register; an overloaded
            # machine can miss that. The machine, not the code under test, is at fault.
            if "timed out during startup" not in str(exc):
                raise
            if attempt == 1:
                pytest.skip(f"a local Ray cluster could not start here: {exc}")
    ctx = ray.data.DataContext.get_current()
    progress = ctx.enable_progress_bars
    ctx.enable_progress_bars = False
    yield
    ctx.enable_progress_bars = progress
    ray.shutdown()


def _embedder(**params):
    # the test's own open_clip config (registered in this process only: the actors get
    # it from the driver) and a fixed random checkpoint; 4-image forward passes
    params = {"device": "cpu", "batch_size": 4, "num_workers": 0, **params}
    return ClipEmbedder(TINY, conftest.TINY_WEIGHTS, **params)


def test_identical_to_transform_in_input_order_and_fills_the_disk_cache(
        ray_cluster, image_dir, tmp_path, monkeypatch):
    # One Ray execution (actors are the slow part to start): the Dataset route, then
    # embed_paths's gathering on its materialised rows.
    paths = list(reversed(image_dir[0]))[:12]  # not sorted: order must follow the input
    paths[5] = Path(paths[5])
    cache = tmp_path / "clip-cache"
    ds = embed_dataset(paths, _embedder(cache=str(cache)), num_actors=2, num_gpus=0,
                       num_cpus=1).materialize()
    assert set(ds.columns()) == {"path", "index", "embedding"}
    by_index = {int(r["index"]): r["path"] for r in ds.take_all()}
    assert [by_index[i] for i in range(len(paths))] == [os.path.abspath(p) for p in paths]
    got = distributed._gather(ds, len(paths))
    assert got.dtype == np.float32 and got.shape == (len(paths), 32)

    # Bitwise: the blocks hold whole batches, so every forward pass of an actor holds
    # the 4 images that transform's own pass holds (another grouping would round
    # differently in float32: BLAS kernels depend on the batch shape).
    _cache.MEMORY.clear()
    np.testing.assert_array_equal(got, _embedder(cache=False).transform(paths))

    # What the actors wrote serves a later transform: nothing in memory, no model
    # loaded, and encoding would fail.
    _cache.MEMORY.clear()
    _clip.clear_cache()

    def no_encoding(*args, **kwargs):
        raise AssertionError("the disk cache should have served every image")

    monkeypatch.setattr(ClipEmbedder, "_encode", no_encoding)
    served = _embedder(cache=str(cache)).transform(paths)
    assert not _clip._CACHE  # the model was not even loaded
    np.testing.assert_array_equal(served, got)


def test_actor_batch_with_repeats_bundled_model(image_dir):
    # What each actor runs, in this process: the bundled model, a batch with repeats.
    paths = image_dir[0][:6]
    paths = paths + paths[:3]  # transform encodes each file once
    emb = ClipEmbedder("candle-tiny", "bundled", device="cpu", batch_size=4, cache=False)
    actor = distributed.EmbedBatch(emb.get_params())
    out = actor({"path": np.array(paths, dtype=object), "index": np.arange(len(paths))})
    assert set(out) == {"path", "index", "embedding"} and len(_cache.MEMORY) == 0
    np.testing.assert_array_equal(out["embedding"], emb.transform(paths))
    # Cut into other batches (one image per call), within float32 rounding, not bitwise:
    # BLAS kernels round differently for different batch shapes.
    one = np.concatenate([actor({"path": np.array([p], dtype=object)})["embedding"]
                          for p in paths])
    np.testing.assert_allclose(one, out["embedding"], rtol=0,
                               atol=8 * np.finfo(np.float32).eps)


def test_argument_errors(image_dir):
    paths = image_dir[0][:2]
    with pytest.raises(ValueError, match="random weights"):
        embed_paths(paths, ClipEmbedder("candle-tiny", None, device="cpu"), num_actors=1,
                    num_gpus=0)
    with pytest.raises(ValueError, match="num_gpus"):
        embed_paths(paths, ClipEmbedder("candle-tiny", "bundled", device="cuda"),
                    num_actors=1, num_gpus=0)
    with pytest.raises(TypeError, match="collection"):
        embed_paths(paths[0], ClipEmbedder("candle-tiny", "bundled"), num_actors=1,
                    num_gpus=0)
    with pytest.raises(ValueError, match="num_actors"):
        embed_paths(paths, ClipEmbedder("candle-tiny", "bundled", device="cpu"),
                    num_actors=0, num_gpus=0)


def test_a_relative_cache_folder_reaches_the_actors_absolute(ray_cluster, tmp_path,
                                                             monkeypatch):
    """Actors may run in another folder: like the image paths, the cache folder they
    write to is made absolute on the driver."""
    monkeypatch.chdir(tmp_path)
    data = ray.data.from_items([{"path": "a.png"}])
    seen = {}
    monkeypatch.setattr(type(data), "map_batches",
                        lambda self, fn, **kwargs: seen.update(kwargs["fn_constructor_kwargs"]))
    embed_dataset(data, _embedder(cache="clip-cache"), num_actors=1, num_gpus=0, num_cpus=1)
    assert seen["params"]["cache"] == str(tmp_path / "clip-cache")


def test_an_unreadable_image_is_an_image_input_error_naming_it(ray_cluster, image_dir,
                                                               tmp_path):
    """One unreadable image raised a RayTaskError of 34 to 51 lines that ended in Ray's
    retry advice (issue 26, item 7)."""
    paths, _ = image_dir
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ImageInputError) as info:
        embed_paths([paths[0], str(broken)], _embedder(cache=False), num_actors=1, num_gpus=0,
                    num_cpus=1)
    message = str(info.value)
    assert str(broken) in message and "could not be read" in message
    assert len(message.splitlines()) == 1 and "Ray" not in message
    assert type(info.value) is ImageInputError


def test_only_an_image_error_that_ended_the_task_is_reported_as_one():
    from candle_sklearn.distributed import _image_input_error

    ended = ("ray.exceptions.RayTaskError(UserCodeException): ray::MapWorker\nTraceback\n"
             "candle_sklearn.exceptions.ImageInputError: image 1 ('/a b.jpg') could not be "
             "read: bad\n\nThe above exception was the direct cause of the following "
             "exception:\n\nray.exceptions.UserCodeException: UDF failed to process a block.")
    followed = ("Traceback\ncandle_sklearn.exceptions.ImageInputError: image 1 ('/a.jpg') "
                "could not be read\n\nDuring handling of the above exception, another "
                "exception occurred:\n\nMemoryError: out of memory")
    assert _image_input_error(Exception(ended)) == "image 1 ('/a b.jpg') could not be read: bad"
    assert _image_input_error(Exception(followed)) is None
