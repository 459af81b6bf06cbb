"""ClipEmbedder: the scikit-learn contract, embeddings, caching as a user sees it (each
image encoded once, a changed file encoded again), models shared by clones, pickles
without weights, threads, devices and worker processes."""

import os
import pickle
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.utils import estimator_checks as ec

import candle_sklearn
from candle_sklearn import ClipEmbedder, ImageInputError, _cache, _clip, make_candle_pipeline
from candle_sklearn._cache import MEMORY

from . import conftest
from ._fuzz import fuzz, given, st
from .conftest import TINY, embed, save_random_tiny, tiny, touch_later
from .test_images import JPEG_SIZES, gpu_path_inputs, photo_jpegs

pytestmark = pytest.mark.usefixtures("fresh_embedding_cache")


@pytest.mark.parametrize("check", [
    ec.check_no_attributes_set_in_init, ec.check_get_params_invariance, ec.check_set_params,
    ec.check_parameters_default_constructible, ec.check_estimator_cloneable,
    ec.check_estimator_repr, ec.check_mixin_order, ec.check_valid_tag_types,
    ec.check_estimator_tags_renamed,
])
def test_sklearn_api_checks(check):
    """The checks that need no numeric 2-D data (image input disables the others)."""
    check("ClipEmbedder", tiny())


def test_subset_invariance_and_feature_names(image_dir):
    paths, _ = image_dir
    emb = tiny(cache=False, batch_size=5).fit(paths)
    full = emb.transform(paths)
    np.testing.assert_allclose(emb.transform(paths[3:7]), full[3:7], atol=1e-5)
    names = emb.get_feature_names_out()
    assert names[0] == "clipembedder0" and len(names) == 32
    out = tiny().set_output(transform="pandas").fit_transform(paths[:2])
    assert list(out.columns) == list(names) and out.shape == (2, 32)


def test_transform_needs_no_fit(image_dir):
    """Stateless, like Normalizer: transform works unfitted (requires_fit=False)."""
    from sklearn.utils import get_tags
    paths = image_dir[0][:3]
    emb = tiny(cache=False)
    assert get_tags(emb).requires_fit is False
    np.testing.assert_allclose(emb.transform(paths), tiny(cache=False).fit(paths).transform(paths),
                               atol=1e-6)
    assert not hasattr(emb, "embed_dim_")  # transform leaves no fitted state behind
    out = tiny().set_output(transform="pandas").transform(paths)
    assert out.shape == (3, 32) and out.columns[0] == "clipembedder0"
    with pytest.raises(ValueError, match="batch_size"):  # parameters are still checked
        tiny(batch_size=0).transform(paths)


# ----------------------------------------------------------------- caching
def test_each_image_encoded_once_per_process(image_dir, forward_counter):
    from candle_sklearn import make_candle_pipeline
    paths, labels = image_dir
    pipe = make_candle_pipeline(TINY, conftest.TINY_WEIGHTS, embedder_params={"device": "cpu"},
                                max_epochs=2, device="cpu", random_state=0)
    search = GridSearchCV(pipe, {"candle__tau": [0.5, 1.0, 2.0]}, cv=3)
    search.fit(paths + paths[:4], np.concatenate([labels, labels[:4]]))  # 4 duplicates
    assert sum(forward_counter) == len(paths)
    search.predict(paths)
    assert sum(forward_counter) == len(paths)


def test_disk_cache_survives_the_process(image_dir, tmp_path, forward_counter):
    paths = list(image_dir[0][:5])
    first = tiny(cache=str(tmp_path)).fit(paths).transform(paths)
    assert sum(forward_counter) == 5 and (tmp_path / "embeddings.sqlite").is_file()
    MEMORY.clear()  # as in a new process
    again = tiny(cache=str(tmp_path)).fit(paths).transform(paths)
    np.testing.assert_array_equal(first, again)
    assert sum(forward_counter) == 5
    changed = tmp_path / "changed.png"  # a file rewritten in place is encoded again
    Image.open(paths[0]).save(changed)
    tiny(cache=str(tmp_path)).fit([changed]).transform([changed])
    Image.open(paths[1]).save(changed)
    os.utime(changed, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    MEMORY.clear()
    tiny(cache=str(tmp_path)).fit([changed]).transform([changed])
    assert sum(forward_counter) == 7


def test_a_file_replaced_with_its_old_time_and_size_is_encoded_again(image_dir, tmp_path):
    """cp -p, rsync -a or untar put a new file in place with the old one's modification
    time; a fixed-size format (PPM) keeps its size too. The disk cache must not serve the
    old file's embedding for it."""
    src = Image.open(image_dir[0][0]).convert("RGB")
    path = tmp_path / "s.ppm"
    src.save(path)
    stamp = os.stat(path)
    first = tiny(cache=str(tmp_path)).fit([path]).transform([path])
    Image.new("RGB", src.size).save(tmp_path / "new.ppm")  # black, same size
    os.replace(tmp_path / "new.ppm", path)
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert os.stat(path).st_size == stamp.st_size
    MEMORY.clear()
    again = tiny(cache=str(tmp_path)).fit([path]).transform([path])
    np.testing.assert_array_equal(again, tiny(cache=False).fit([path]).transform([path]))
    assert not np.array_equal(again, first)


def test_no_cache_encodes_every_time(image_dir, forward_counter):
    emb = tiny(cache=False).fit(image_dir[0][:3])
    emb.transform(image_dir[0][:3])
    emb.transform(image_dir[0][:3])
    assert sum(forward_counter) == 6


# ===================================================== silent garbage, item 1
def test_overwritten_checkpoint_is_not_served_old_embeddings(image_dir, tmp_path):
    paths = image_dir[0][:4]
    ckpt = tmp_path / "weights.pt"
    save_random_tiny(ckpt, seed=1)
    emb = ClipEmbedder(TINY, str(ckpt), device="cpu", cache=str(tmp_path / "cache"))
    first = emb.transform(paths)
    model_first = emb.load_model()
    save_random_tiny(ckpt, seed=2)  # the same path, other weights
    touch_later(ckpt)
    second = emb.transform(paths)  # the same process: memory cache and model cache
    assert emb.load_model() is not model_first
    fresh = ClipEmbedder(TINY, str(ckpt), device="cpu", cache=False).transform(paths)
    np.testing.assert_allclose(second, fresh, atol=1e-6)
    assert not np.allclose(first, second, atol=1e-3)
    MEMORY.clear()  # a new process: the disk cache must not answer with seed 1's rows
    np.testing.assert_allclose(emb.transform(paths), fresh, atol=1e-6)


def test_random_weights_never_share_a_disk_cache(image_dir, tmp_path):
    paths = image_dir[0][:3]
    cache = tmp_path / "cache"
    first = ClipEmbedder(TINY, None, device="cpu", cache=str(cache)).transform(paths)
    _clip.clear_cache()  # as in a second process: another random model
    MEMORY.clear()
    second = ClipEmbedder(TINY, None, device="cpu", cache=str(cache)).transform(paths)
    own = ClipEmbedder(TINY, None, device="cpu", cache=False).transform(paths)
    np.testing.assert_allclose(second, own, atol=1e-6)
    assert not np.allclose(first, second, atol=1e-3)
    assert not (cache / _cache.FILE_NAME).exists()  # nothing written for random weights


def test_finished_batches_are_stored_when_a_later_image_fails(tmp_path, image_dir,
                                                              forward_counter, monkeypatch):
    from candle_sklearn import embedder as embedder_module
    monkeypatch.setattr(embedder_module, "_FLUSH_EVERY", 2)
    paths = list(image_dir[0][:6])
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(ImageInputError, match="image 6"):
        tiny(cache=str(tmp_path / "c"), batch_size=2, num_workers=0).transform(
            paths + [str(bad)])
    MEMORY.clear()
    done = sum(forward_counter)
    tiny(cache=str(tmp_path / "c")).transform(paths)
    assert sum(forward_counter) == done  # all six came back from the disk cache


@pytest.mark.slow  # 40 generated cases
@fuzz(40)
@given(seeds=st.lists(st.integers(0, 5), min_size=1, max_size=8))
def test_embedder_caches_agree_with_no_cache(seeds):
    images = [np.full((6, 6, 3), 40 * s, np.uint8) for s in seeds]  # with duplicates
    want = embed(images)
    MEMORY.clear()
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(2):
            np.testing.assert_allclose(embed(images, cache=folder), want, atol=1e-6)
            MEMORY.clear()  # second round: served from disk
        with sqlite3.connect(Path(folder) / _cache.FILE_NAME) as con:
            rows = con.execute(f"SELECT COUNT(*) FROM {_cache.TABLE}").fetchone()[0]
    assert rows == len(set(seeds))
    np.testing.assert_allclose(embed(images, cache=True), want, atol=1e-6)
    for s, row in zip(seeds, want):  # a duplicate gets the same row
        np.testing.assert_array_equal(row, want[seeds.index(s)])


# -------------------------------------------------- models, weights, pickling
def test_one_model_per_process_shared_by_clones():
    a, b = tiny(), clone(tiny())
    assert a._loaded() is b._loaded()
    assert tiny(precision="bf16")._loaded() is not a._loaded()


def test_pickle_holds_no_weights(image_dir):
    paths = image_dir[0][:3]
    emb = tiny().fit(paths)
    before = emb.transform(paths)
    blob = pickle.dumps(emb)
    assert len(blob) < 5_000  # the tiny model alone is > 1.5 MB
    _clip.clear_cache()
    MEMORY.clear()
    np.testing.assert_allclose(pickle.loads(blob).transform(paths), before, atol=1e-6)


def test_encode_text():
    emb = tiny()
    out = emb.encode_text(["a photo of a red square.", "a photo of a dog."])
    assert out.shape == (2, 32) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, rtol=1e-5)
    with pytest.raises(ValueError, match="list of strings"):
        emb.encode_text("just one string")


# ========================================================= public names (issue 12)
def test_public_exceptions_and_model_access(image_dir):
    from candle_sklearn import exceptions
    assert candle_sklearn.ImageInputError is exceptions.ImageInputError
    assert candle_sklearn.WeightsUnavailableError is _clip.WeightsUnavailableError
    assert issubclass(ImageInputError, ValueError)
    clip = tiny().load_model()
    assert clip is tiny().load_model()  # the process-wide copy, not a new load
    image = Image.open(image_dir[0][0])
    with torch.inference_mode():
        raw = clip.model.encode_image(clip.preprocess(image.convert("RGB"))[None])
        text = clip.model.encode_text(clip.tokenizer(["a photo of a red square."]))
    raw = torch.nn.functional.normalize(raw, dim=-1).numpy()
    np.testing.assert_allclose(tiny().transform([image]), raw, atol=1e-6)
    np.testing.assert_allclose(tiny().encode_text(["a photo of a red square."]),
                               torch.nn.functional.normalize(text, dim=-1).numpy(), atol=1e-6)
    assert len(clip.fingerprint) == 64 and clip.embed_dim == 32


# ============================================================ devices, threads, workers
@pytest.mark.parametrize("device, message", [
    ("meta", "cannot hold and run a model"),
    ("xla", "cannot hold and run a model"),
    ("banana", "not a torch device"),
    pytest.param("cuda:7", "CUDA is not available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has CUDA")),
])
def test_unusable_device_is_a_clear_error(device, message):
    with pytest.raises(ValueError, match=message):
        ClipEmbedder(TINY, conftest.TINY_WEIGHTS, device=device).transform(
            [np.zeros((8, 8, 3), np.uint8)])


def test_n_jobs_sets_torch_threads_for_the_call(monkeypatch):
    from joblib import cpu_count
    model = tiny().load_model().model
    seen = []
    original = model.encode_image
    monkeypatch.setattr(model, "encode_image",
                        lambda x, *a, **k: seen.append(torch.get_num_threads()) or original(x))
    before = torch.get_num_threads()
    tiny(n_jobs=1, cache=False).transform([np.zeros((8, 8, 3), np.uint8)])
    tiny(n_jobs=-1, cache=False).transform([np.ones((8, 8, 3), np.uint8)])
    tiny(cache=False).transform([np.full((8, 8, 3), 2, np.uint8)])
    assert seen == [1, cpu_count(), before]
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="n_jobs"):
        tiny(n_jobs=0).transform([np.zeros((8, 8, 3), np.uint8)])


# ====================================== errors from deep inside, item 2: parallel
def world_files(folder, n):
    from candle_sklearn.datasets import make_world_images, world_classes
    names = world_classes()[:3]
    per = -(-n // len(names))
    images, labels = make_world_images(names, per, random_state=0)
    paths = []
    for i, img in enumerate(images[:n]):
        path = Path(folder) / f"img_{i:03d}.png"
        Image.fromarray(np.asarray(img)).save(path)
        paths.append(str(path))
    return paths, np.asarray(labels[:n])


@pytest.mark.slow  # joblib worker processes, each loading CLIP
def test_grid_search_n_jobs_2_over_the_default_pipeline(tmp_path, monkeypatch):
    """More images than batch_size (64) with default settings, in joblib workers:
    decoding threads work there, and the workers share their encodings with the
    parent, so the refit encodes nothing again."""
    paths, labels = world_files(tmp_path, 72)
    pipe = make_candle_pipeline("candle-tiny", "bundled", embedder_params={"device": "cpu"},
                                max_epochs=2, device="cpu", random_state=0)
    model = pipe.named_steps["clip"].load_model().model
    encoded = []
    original = model.encode_image
    monkeypatch.setattr(model, "encode_image",
                        lambda x, *a, **k: encoded.append(len(x)) or original(x, *a, **k))
    search = GridSearchCV(pipe, {"candle__tau": [0.5, 1.0]}, cv=2, n_jobs=2,
                          error_score="raise").fit(paths, labels)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert sum(encoded) == 0  # the refit in this process read the workers' encodings
    assert len(search.predict(paths)) == 72
    session = _cache._session_folder(os.getpid()) / _cache.FILE_NAME
    with sqlite3.connect(session) as con:
        assert con.execute(f"SELECT COUNT(*) FROM {_cache.TABLE}").fetchone()[0] == 72


@pytest.mark.slow  # a subprocess that spawns workers
def test_spawn_start_method_without_main_guard(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        "import multiprocessing\n"
        "multiprocessing.set_start_method('spawn', force=True)\n"
        "import numpy as np\n"
        "from candle_sklearn import ClipEmbedder\n"
        "images = [np.full((32, 32, 3), 20 * i, np.uint8) for i in range(10)]\n"
        "emb = ClipEmbedder('candle-tiny', 'bundled', device='cpu', batch_size=4)\n"
        "print(emb.transform(images).shape)\n")
    # the package's root first, then whatever the caller's path holds (packages that a
    # machine provides through PYTHONPATH only, as the GPU image's wheels do)
    path = [str(Path(candle_sklearn.__file__).parents[1]), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(filter(None, path))}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "(10, 64)"


# ------------------------------------------------------------------------ GPU
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16", "amp", "fp16"])
def test_gpu_embeddings_close_to_cpu(image_dir, precision):
    paths = image_dir[0][:8]
    cpu = tiny(cache=False).fit_transform(paths)
    gpu = tiny(device="cuda", precision=precision, cache=False).fit_transform(paths)
    assert gpu.dtype == np.float32
    tol = 1e-4 if precision == "fp32" else 5e-2
    np.testing.assert_allclose(gpu, cpu, atol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gpu_thread_decoding_with_pinned_batches_and_flushes(image_dir, monkeypatch,
                                                             precision):
    """Several batches through decode threads, pinned host memory and non-blocking
    copies, with results held on the device between flushes: same as on CPU."""
    from candle_sklearn import embedder as embedder_module
    monkeypatch.setattr(embedder_module, "_FLUSH_EVERY", 5)
    paths = image_dir[0]
    cpu = tiny(cache=False).transform(paths)
    gpu = tiny(device="cuda", precision=precision, cache=False, batch_size=4,
               num_workers=3).transform(paths)
    np.testing.assert_allclose(gpu, cpu, atol=1e-4 if precision == "fp32" else 5e-2)


# --------------------------------------------------------- JPEG files decoded on the GPU
def test_gpu_and_pil_decodings_are_cached_apart(tmp_path, forward_counter, monkeypatch):
    """Features of JPEG files decoded on the GPU differ from PIL's by rounding: neither
    answers for the other, in memory or on disk."""
    from candle_sklearn import _gpu_images
    paths = photo_jpegs(tmp_path, JPEG_SIZES[:4])
    cache = str(tmp_path / "cache")
    pil = tiny(cache=cache).transform(paths)
    monkeypatch.setattr(_gpu_images, "decodes_on", lambda device: True)  # as on CUDA
    monkeypatch.setattr(ClipEmbedder, "_may_decode_on_gpu", lambda self: self.decode == "auto")
    gpu = tiny(cache=cache).transform(paths)
    assert sum(forward_counter) == 8
    np.testing.assert_array_equal(tiny(cache=cache, decode="pil").transform(paths), pil)
    MEMORY.clear()  # as in a new process: the disk cache answers each with its own
    np.testing.assert_array_equal(tiny(cache=cache).transform(paths), gpu)
    np.testing.assert_array_equal(tiny(cache=cache, decode="pil").transform(paths), pil)
    assert sum(forward_counter) == 8


def test_gpu_path_keeps_finished_batches_and_stops_its_thread(tmp_path, forward_counter,
                                                              monkeypatch):
    """An unreadable file late in a run: the error names it, the batches before it are
    in the cache, and the thread that decodes ahead is gone."""
    import threading

    from candle_sklearn import _gpu_images
    from candle_sklearn import embedder as embedder_module
    monkeypatch.setattr(embedder_module, "_FLUSH_EVERY", 2)
    monkeypatch.setattr(_gpu_images, "decodes_on", lambda device: True)
    paths = photo_jpegs(tmp_path, JPEG_SIZES[:6])
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    cache = str(tmp_path / "cache")
    with pytest.raises(ImageInputError, match=r"image 6 \('.*bad.jpg'\) could not be read"):
        tiny(cache=cache, batch_size=2, num_workers=2).transform(paths + [str(bad)])
    assert not [t for t in threading.enumerate() if t.name.startswith("candle-gpu-decode")]
    MEMORY.clear()
    done = sum(forward_counter)
    tiny(cache=cache).transform(paths)
    assert sum(forward_counter) == done  # all six came back from the disk cache


@pytest.mark.gpu
def test_gpu_jpeg_decoding_close_to_pil(tmp_path):
    """The real path: nvJPEG and the resizing on CUDA, a batch ahead of the model. Its
    pixels and features are within the GPU's tolerance of PIL's (nvJPEG's IDCT and
    chroma upsampling are not libjpeg's; see candle_sklearn._gpu_images); the files it
    does not take (PNG, progressive, CMYK) embed as PIL's."""
    from candle_sklearn import _gpu_images
    paths = photo_jpegs(tmp_path, JPEG_SIZES)
    rgb = Image.open(paths[0]).convert("RGB")
    for name, options in (("p.png", {}), ("progressive.jpg", {"progressive": True})):
        rgb.save(tmp_path / name, **options)
    rgb.convert("CMYK").save(tmp_path / "cmyk.jpg")
    others = [str(tmp_path / n) for n in ("p.png", "progressive.jpg", "cmyk.jpg")]
    assert _gpu_images.decodes_on(torch.device("cuda"))
    emb = ClipEmbedder("candle-tiny", "bundled", device="cuda", cache=False, batch_size=5)
    assert emb._may_decode_on_gpu()
    got, want = gpu_path_inputs(emb.load_model().preprocess, paths, "cuda")
    diff = (got - want).abs()
    assert diff.mean() < 0.05, (diff.max(), diff.mean())
    gpu = emb.transform(paths + others)
    pil = clone(emb).set_params(decode="pil").transform(paths + others)
    assert (gpu * pil).sum(1).min() > 0.995
    np.testing.assert_allclose(gpu[-3:], pil[-3:], atol=1e-4)


def test_an_embedder_pickled_before_decode_existed_still_embeds():
    """Found by review: ``transform`` validates its parameters, and an old pickle has no
    ``decode``; it keeps PIL's decoding, which it had."""
    import pickle

    emb = tiny(cache=False)
    state = emb.__getstate__()
    del state["decode"]
    old = ClipEmbedder.__new__(ClipEmbedder)
    old.__setstate__(state)
    assert old.decode == "pil"
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(old)).transform([np.full((8, 8, 3), 120, np.uint8)]),
                                  emb.transform([np.full((8, 8, 3), 120, np.uint8)]))
