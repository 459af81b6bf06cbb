"""Regression tests of issue 10 (reliability), embedder side: no silent garbage, no raw
internal errors, parallel searches that work, caches that cannot lie."""

import io
import json
import os
import pickle
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

import candle_sklearn
from candle_sklearn import (CheckpointError, ClipEmbedder, EmbeddingCacheError, ImageInputError,
                            WeightsUnavailableError, _cache, _clip, make_candle_pipeline)
from candle_sklearn._cache import MEMORY, DiskCache
from candle_sklearn.classifier import prompts_text_features
from candle_sklearn.exceptions import EmbeddingCacheWarning

from . import conftest
from .conftest import TINY

ASSETS = Path(__file__).parent / "assets"


def tiny(**params):
    return ClipEmbedder(TINY, pretrained=conftest.TINY_WEIGHTS, **{"device": "cpu", **params})


@pytest.fixture(autouse=True)
def fresh_embedding_cache():
    MEMORY.clear()
    _cache.clear_session_cache()
    yield
    MEMORY.clear()
    _cache.clear_session_cache()


@pytest.fixture
def forward_counter(monkeypatch):
    model = tiny().load_model().model
    seen = []
    original = model.encode_image

    def counting(images, *args, **kwargs):
        seen.append(len(images))
        return original(images, *args, **kwargs)

    monkeypatch.setattr(model, "encode_image", counting)
    return seen


def save_random_tiny(path, seed):
    import open_clip
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        torch.save(open_clip.create_model(TINY).state_dict(), path)


def touch_later(path, seconds=10):
    """A new modification time, as a later write would give (file systems round it)."""
    later = time.time_ns() + seconds * 10**9
    os.utime(path, ns=(later, later))


def rgb(arr):
    return np.asarray(Image.fromarray(arr).convert("RGB"))


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


def test_fingerprint_is_the_content_hash_computed_once(tmp_path, monkeypatch):
    import hashlib

    from candle_sklearn import _fingerprint
    ckpt = tmp_path / "w.pt"
    save_random_tiny(ckpt, seed=3)
    spec = _clip.resolve(TINY, str(ckpt))
    assert spec.weights_sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    reads = []
    monkeypatch.setattr(_fingerprint.hashlib, "file_digest",
                        lambda f, name: reads.append(1) or hashlib.sha256(f.read()))
    _clip.resolve(TINY, str(ckpt))
    assert reads == []  # cached by path, modification time and size
    touch_later(ckpt)
    _clip.resolve(TINY, str(ckpt))
    assert reads == [1]
    # Same bytes under another name: same weights fingerprint.
    copy = tmp_path / "copy.pt"
    copy.write_bytes(ckpt.read_bytes())
    assert _clip.resolve(TINY, str(copy)).fingerprint == _clip.resolve(TINY, str(ckpt)).fingerprint


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


# ===================================================== silent garbage, item 2
def test_palette_images_that_differ_only_in_palette(image_dir):
    indices = np.arange(64, dtype=np.uint8).reshape(8, 8) % 4
    images = []
    for colours in ([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9],
                    [0, 0, 0, 255, 255, 255, 128, 128, 128, 40, 200, 90]):
        img = Image.fromarray(indices, mode="P")
        img.putpalette(colours + [0] * (768 - len(colours)))
        images.append(img)
    for cache in (False, True):
        out = tiny(cache=cache).transform(images)
        assert not np.allclose(out[0], out[1], atol=1e-3)
        want = tiny(cache=False).transform([img.convert("RGB") for img in images])
        np.testing.assert_allclose(out, want, atol=1e-6)


# ===================================================== silent garbage, item 3
def test_sixteen_bit_png_and_float_tiff_use_their_real_range(tmp_path):
    gen = np.random.default_rng(0)
    eight = gen.integers(0, 256, (24, 24), dtype=np.uint8)
    sixteen = eight.astype(np.uint16) * 257  # the same picture at 16 bits
    png16 = tmp_path / "grey16.png"
    Image.fromarray(sixteen).save(png16)
    assert Image.open(png16).mode.startswith("I")
    tiff = tmp_path / "float.tif"
    Image.fromarray(eight.astype(np.float32) / 255).save(tiff)
    assert Image.open(tiff).mode == "F"
    emb = tiny(cache=False)
    want = emb.transform([eight])
    for form in ([str(png16)], [Image.open(png16)], [str(tiff)], [Image.open(tiff)],
                 [sixteen], [np.repeat(sixteen[:, :, None], 3, axis=2)]):
        np.testing.assert_allclose(emb.transform(form), want, atol=1e-5)
    # A dark 16-bit image stays dark: it is not read as 8-bit because its values are small.
    dark = (eight // 2).astype(np.uint16)
    Image.fromarray(dark).save(tmp_path / "dark16.png")
    np.testing.assert_allclose(emb.transform([str(tmp_path / "dark16.png")]),
                               emb.transform([np.zeros_like(eight)]), atol=1e-5)


def test_value_range_rules_for_arrays():
    emb = tiny(cache=False)
    eight = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    want = emb.transform([eight])
    for same in (eight.astype(np.int64), eight / 255.0, eight.astype(np.float32),
                 eight.astype(np.float16) / 255):
        np.testing.assert_allclose(emb.transform([same]), want, atol=2e-2 if
                                   same.dtype == np.float16 else 1e-5)
    mask = np.zeros((16, 16), bool)
    mask[4:12] = True
    np.testing.assert_allclose(emb.transform([mask]), emb.transform([mask.astype(np.uint8) * 255]),
                               atol=1e-6)
    with pytest.raises(ImageInputError, match=r"image 0: values in \[0, 70000\].*uint16"):
        emb.transform([np.array([[0, 70000]], dtype=np.int64)])
    with pytest.raises(ImageInputError, match="channels first"):
        emb.transform([np.zeros((3, 16, 16), np.uint8)])


# ===================================================== silent garbage, item 4
def test_local_dir_without_weights_is_an_error_naming_the_folder(tmp_path):
    folder = tmp_path / "model_dir"
    folder.mkdir()
    cfg = json.loads((ASSETS / f"{TINY}.json").read_text())
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    with pytest.raises(WeightsUnavailableError, match=f"{folder}.*no weights file"):
        ClipEmbedder(TINY, f"local-dir:{folder}", device="cpu").transform(
            [np.zeros((8, 8, 3), np.uint8)])


# ===================================================== silent garbage, item 8
def test_grid_over_clip_model_name_keeps_text_and_images_in_step(image_dir, tmp_path):
    import open_clip
    other = tmp_path / "candle-test-tiny-b.json"  # same embedding size, other architecture
    cfg = json.loads((ASSETS / f"{TINY}.json").read_text())
    cfg["vision_cfg"]["layers"] = 2
    other.write_text(json.dumps(cfg))
    open_clip.add_model_config(other)
    paths, labels = image_dir
    pipe = make_candle_pipeline(TINY, None, embedder_params={"device": "cpu"}, max_epochs=2,
                                device="cpu", random_state=0)
    for name in (TINY, "candle-test-tiny-b"):
        fitted = clone(pipe).set_params(clip__model_name=name).fit(paths, labels)
        clip, candle = fitted.named_steps["clip"], fitted.named_steps["candle"]
        assert candle.encoder is clip
        want = prompts_text_features(clip, candle.class_names_, ("a photo of a {}.",))
        np.testing.assert_allclose(candle.text_features_, want, atol=1e-6)
    search = GridSearchCV(pipe, {"clip__model_name": [TINY, "candle-test-tiny-b"]}, cv=2,
                          error_score="raise").fit(paths, labels)
    best = search.best_estimator_
    assert best.named_steps["candle"].encoder is best.named_steps["clip"]
    # A step replaced wholesale is picked up at fit.
    replaced = clone(pipe).set_params(clip=ClipEmbedder("candle-test-tiny-b", None,
                                                        device="cpu"))
    replaced.fit(paths, labels)
    assert replaced.named_steps["candle"].encoder is replaced.named_steps["clip"]


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


# ======================================= errors from deep inside, item 4: SQLite
def cached_dir(tmp_path, image_dir):
    """A cache folder holding the embeddings of four images, and those embeddings."""
    paths = image_dir[0][:4]
    folder = tmp_path / "cache"
    want = tiny(cache=str(folder)).transform(paths)
    MEMORY.clear()
    return folder, paths, want


def random_bytes(path):
    path.write_bytes(np.random.default_rng(0).bytes(5000))


def truncated(path):
    path.write_bytes(path.read_bytes()[:3000])


def foreign_table(path):
    path.unlink()
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE emb (a, b)")  # the old name, someone else's columns
        con.execute(f"CREATE TABLE {_cache.TABLE} (a, b)")


@pytest.mark.parametrize("damage", [random_bytes, truncated, foreign_table])
def test_damaged_cache_file_is_moved_aside_and_rebuilt(tmp_path, image_dir, damage,
                                                       forward_counter):
    folder, paths, want = cached_dir(tmp_path, image_dir)
    damage(folder / _cache.FILE_NAME)
    before = sum(forward_counter)
    with pytest.warns(EmbeddingCacheWarning, match="moved it to embeddings.sqlite.bad-"):
        got = tiny(cache=str(folder)).transform(paths)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert sum(forward_counter) - before == 4
    assert len(list(folder.glob("embeddings.sqlite.bad-*"))) == 1  # kept, not deleted
    MEMORY.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(tiny(cache=str(folder)).transform(paths), want, atol=1e-6)
    assert sum(forward_counter) - before == 4  # the rebuilt file serves them


def test_damaged_rows_are_ignored_and_encoded_again(tmp_path, image_dir):
    folder, paths, want = cached_dir(tmp_path, image_dir)
    with sqlite3.connect(folder / _cache.FILE_NAME) as con:
        con.execute(f"UPDATE {_cache.TABLE} SET vec = ? WHERE key LIKE ?",
                    (b"\0" * 12, "%" + Path(paths[1]).name + "%"))
        con.execute(f"UPDATE {_cache.TABLE} SET dim = 3, vec = ? WHERE key LIKE ?",
                    (np.zeros(3, np.float32).tobytes(), "%" + Path(paths[2]).name + "%"))
        con.execute(f"UPDATE {_cache.TABLE} SET vec = ? WHERE key LIKE ?",  # right length
                    (np.ones(32, np.float32).tobytes(), "%" + Path(paths[3]).name + "%"))
    with pytest.warns(EmbeddingCacheWarning, match="3 cached embedding"):
        np.testing.assert_allclose(tiny(cache=str(folder)).transform(paths), want, atol=1e-6)


def test_directory_in_the_cache_files_place_is_named(tmp_path):
    (tmp_path / _cache.FILE_NAME).mkdir()
    with pytest.raises(EmbeddingCacheError, match=f"{tmp_path / _cache.FILE_NAME} is a directory"):
        tiny(cache=str(tmp_path)).transform([np.zeros((8, 8, 3), np.uint8)])


def test_cache_folder_that_cannot_be_created_is_named():
    where = "/proc/self/no-such-place/cache"  # not creatable, even by root
    with pytest.raises(EmbeddingCacheError, match=f"{where}.*cannot be created.*cache=True"):
        tiny(cache=where).transform([np.zeros((8, 8, 3), np.uint8)])


def read_only(monkeypatch, folder):
    """A cache that reads but cannot write. chmod does not stop root (who may run the
    tests), so the write itself fails as SQLite fails on a read-only file."""
    def refuse(self, rows):
        raise sqlite3.OperationalError("attempt to write a readonly database")
    monkeypatch.setattr(DiskCache, "_write", refuse)


def chmod_read_only(monkeypatch, folder):
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    os.chmod(folder / _cache.FILE_NAME, 0o444)
    os.chmod(folder, 0o555)


@pytest.mark.parametrize("make_read_only", [read_only, chmod_read_only])
def test_read_only_cache_loses_no_finished_encoding(tmp_path, image_dir, forward_counter,
                                                    monkeypatch, make_read_only):
    folder, paths, want = cached_dir(tmp_path, image_dir)
    make_read_only(monkeypatch, folder)
    more = paths + list(image_dir[0][4:7])
    before = sum(forward_counter)
    with pytest.warns(EmbeddingCacheWarning, match="could not store 3 new embedding"):
        got = tiny(cache=str(folder)).transform(more)
    np.testing.assert_allclose(got[:4], want, atol=1e-6)
    encoded = sum(forward_counter)
    assert encoded - before == 3  # the four cached ones were read
    np.testing.assert_allclose(tiny(cache=str(folder)).transform(more), got, atol=1e-6)
    assert sum(forward_counter) == encoded  # kept in memory
    os.chmod(folder, 0o755)


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


def test_damaged_session_cache_never_stops_a_run(tmp_path, monkeypatch):
    monkeypatch.setattr(_cache, "_session_root", lambda: tmp_path)
    folder = _cache._session_folder(os.getpid())
    (folder / _cache.FILE_NAME).mkdir(parents=True)  # unusable, and not the user's choice
    with pytest.warns(EmbeddingCacheWarning, match="is a directory"):
        out = tiny().transform([np.zeros((8, 8, 3), np.uint8)])
    assert out.shape == (1, 32)


def test_session_cache_root_is_private_to_the_user(tmp_path, monkeypatch):
    root = tmp_path / "root"
    monkeypatch.setattr(_cache, "_session_root", lambda: root)
    root.mkdir(mode=0o777)
    os.chmod(root, 0o777)  # as an older version left it
    assert _cache._private_session_root() == root and (root.stat().st_mode & 0o777) == 0o700
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root.rmdir()
    root.symlink_to(elsewhere)  # planted by someone else
    with pytest.warns(EmbeddingCacheWarning, match="not private to this user"):
        assert _cache._private_session_root() is None
    root.unlink()
    monkeypatch.setattr(os, "getuid", lambda: os.stat(tmp_path).st_uid + 1)  # another's
    with pytest.warns(EmbeddingCacheWarning, match="not private to this user"):
        assert _cache._private_session_root() is None


def test_cache_takes_numpy_booleans():
    assert _cache.caches_for(np.False_) == []
    assert _cache.caches_for(np.True_)[0] is MEMORY


def test_the_main_process_removes_its_session_folder_at_exit():
    """Registered at import: a parent whose workers alone embed (cross_val_score with
    n_jobs=2) still owns their shared folder."""
    assert _cache._CLEANUP_REGISTERED


# ================================= errors from deep inside, item 5: checkpoints
def corrupt_pt(path):
    save_random_tiny(path, seed=0)
    path.write_bytes(path.read_bytes()[:5000])


def zero_bytes(path):
    path.write_bytes(b"")


def text_file(path):
    path.write_text("this is not a checkpoint")


def pickled_objects(path):
    with open(path, "wb") as f:
        pickle.dump({"weights": io.StringIO("code could hide here")}, f)


def random_safetensors(path):
    path.write_bytes(np.random.default_rng(0).bytes(4000))


def truncated_safetensors(path):
    import open_clip
    from safetensors.torch import save_file
    save_file(open_clip.create_model(TINY).state_dict(), path)
    path.write_bytes(path.read_bytes()[:3000])


def other_architecture(path):
    path.write_bytes((_clip.BUNDLED_DIR / "candle-tiny" / "open_clip_model.safetensors")
                     .read_bytes())


@pytest.mark.parametrize("make, name, message", [
    (corrupt_pt, "w.pt", "not a readable PyTorch checkpoint"),
    (zero_bytes, "w.pt", r"is empty \(0 bytes\)"),
    (zero_bytes, "w.safetensors", r"is empty \(0 bytes\)"),
    (text_file, "w.pt", "not a readable PyTorch checkpoint"),
    (pickled_objects, "w.pt", "holds Python objects besides tensors"),
    (random_safetensors, "w.safetensors", "not a valid safetensors file"),
    (truncated_safetensors, "w.safetensors", "not a valid safetensors file"),
    (other_architecture, "w.safetensors", f"does not fit the architecture of model '{TINY}'"),
])
def test_bad_checkpoint_gives_one_line_naming_the_file(tmp_path, make, name, message):
    path = tmp_path / name
    make(path)
    with pytest.raises(CheckpointError) as info:
        ClipEmbedder(TINY, str(path), device="cpu").fit([np.zeros((8, 8, 3), np.uint8)])
    text = str(info.value)
    assert str(path) in text and "\n" not in text and len(text) < 400
    assert "weights_only=False" not in text  # never advise the unsafe load
    assert info.match(message)


def test_failed_load_is_not_cached(tmp_path):
    path = tmp_path / "w.pt"
    zero_bytes(path)
    with pytest.raises(CheckpointError):
        ClipEmbedder(TINY, str(path), device="cpu").load_model()
    save_random_tiny(path, seed=0)
    touch_later(path)
    assert ClipEmbedder(TINY, str(path), device="cpu").load_model().embed_dim == 32


def test_an_encoder_that_returns_a_zero_vector_is_named(monkeypatch):
    class Zero:
        def encode_text(self, texts):
            out = np.ones((len(texts), 4))
            out[1] = 0
            return out

    with pytest.raises(ValueError, match=r"a zero vector for \['a photo of a b.'\]"):
        prompts_text_features(Zero(), ["a", "b"], "a photo of a {}.")


def test_tag_brings_its_preprocessing_and_quick_gelu(monkeypatch):
    """open_clip only warns when a plain model name gets weights trained with
    QuickGELU (the OpenAI ones); the tag's settings must be applied."""
    import open_clip
    from open_clip.pretrained import _PRETRAINED, _pcfg
    monkeypatch.setitem(_PRETRAINED, TINY, {"fake": _pcfg(
        hf_hub="nobody/nothing/", quick_gelu=True, mean=(0.5, 0.5, 0.5), std=(0.25,) * 3)})
    monkeypatch.setattr(_clip, "_cached_checkpoint", lambda cfg: conftest.TINY_WEIGHTS)
    loaded = ClipEmbedder(TINY, "fake", device="cpu").load_model()
    assert any(isinstance(m, open_clip.transformer.QuickGELU) for m in loaded.model.modules())
    normalize = loaded.preprocess.transforms[-1]
    assert tuple(normalize.mean) == (0.5, 0.5, 0.5) and tuple(normalize.std) == (0.25,) * 3
    plain = ClipEmbedder(TINY, conftest.TINY_WEIGHTS, device="cpu").load_model()
    assert loaded.fingerprint != plain.fingerprint  # other activations, other embeddings
    # The OpenAI tag under a plain name and the same file under the -quickgelu name are
    # one model (open_clip's default preprocessing is OpenAI's): one fingerprint.
    monkeypatch.setitem(_PRETRAINED, "ViT-B-16", {"openai": _pcfg(
        hf_hub="nobody/nothing/", quick_gelu=True, mean=(0.48145466, 0.4578275, 0.40821073),
        std=(0.26862954, 0.26130258, 0.27577711), interpolation="bicubic",
        resize_mode="shortest")})
    tagged = _clip.resolve("ViT-B-16", "openai")
    by_file = _clip.resolve("ViT-B-16-quickgelu", conftest.TINY_WEIGHTS)
    assert tagged.fingerprint == by_file.fingerprint
    assert _clip.resolve("ViT-B-16", conftest.TINY_WEIGHTS).fingerprint != tagged.fingerprint


# ============================== errors from deep inside, item 6: images in memory
def truncated_jpeg(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) * 2 // 3])  # headers intact, pixels cut short
    return Image.open(path)  # lazily opened: nothing decoded yet


def closed_image(tmp_path):
    img = Image.new("RGB", (8, 8))
    img.close()
    return img


@pytest.mark.parametrize("make, message", [
    (closed_image, "could not be read"),
    (truncated_jpeg, "could not be read"),
    (lambda tmp: np.zeros((0, 0, 3), np.uint8), r"empty image of shape \(0, 0, 3\)"),
    (lambda tmp: np.zeros((5, 0), np.float32), r"empty image of shape \(5, 0\)"),
    (lambda tmp: Image.new("RGB", (0, 0)), r"empty image of size \(0, 0\)"),
    (lambda tmp: Image.new("La", (4, 4)), "mode 'La' cannot be converted"),
])
@pytest.mark.parametrize("workers", [0, 2])
def test_bad_image_in_memory_names_its_index(tmp_path, make, message, workers):
    good = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ImageInputError, match=rf"image 1\b.*{message}"):
        tiny(num_workers=workers, cache=False).transform([good, make(tmp_path), good])


# ============================================================ devices, threads
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


def test_torch_threads_nested_and_restored():
    from candle_sklearn._threads import effective_n_jobs, torch_threads
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
        with torch_threads(2):
            assert torch.get_num_threads() == 2
        with torch_threads(None):
            assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    assert effective_n_jobs(None) is None and effective_n_jobs(3) == 3
    assert effective_n_jobs(-10_000) == 1
    with pytest.raises((ValueError, RuntimeError, OverflowError)):  # torch refuses it
        with torch_threads(2 ** 63):
            pass
    with torch_threads(1):  # and the count is still restored afterwards
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


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


# ====================================================================== GPU
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


def test_memory_cache_keeps_the_most_recently_used_within_its_limit(monkeypatch):
    cache = _cache.MemoryCache()
    monkeypatch.setenv(_cache.MEMORY_LIMIT_ENV, str(3 * 4 * 256 / 2**20))  # 3 vectors
    batch = np.arange(4 * 256, dtype=np.float32).reshape(4, 256)
    cache.put_many("m", {"a": batch[0], "b": batch[1], "c": batch[2]})
    assert cache.get_many("m", ["a"])["a"].base is None  # a copy: the batch is not pinned
    cache.put_many("m", {"d": batch[3]})  # "b" is now the least recently used
    assert sorted(cache.get_many("m", ["a", "b", "c", "d"])) == ["a", "c", "d"]
    assert len(cache) == 3
    monkeypatch.setenv(_cache.MEMORY_LIMIT_ENV, "lots")
    with pytest.raises(ValueError, match="CANDLE_SKLEARN_MEMORY_CACHE_MB='lots'"):
        cache.put_many("m", {"e": batch[0]})


def test_a_cache_file_another_process_rebuilt_is_not_moved_aside(tmp_path):
    """Two workers meet the same damaged file; the first moves it aside and starts a new
    one. The second, acting on its older error, must leave the new file alone."""
    (tmp_path / _cache.FILE_NAME).write_bytes(b"not a database" * 100)
    late = DiskCache(tmp_path)
    with pytest.raises(sqlite3.DatabaseError):
        late._try_connect()  # it opened the damaged file...
    with pytest.warns(EmbeddingCacheWarning, match="was unreadable"):
        DiskCache(tmp_path).put_many("m", {"k": np.ones(4, np.float32)})  # ...another fixed it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        late._move_aside("its older error")
    assert DiskCache(tmp_path).get_many("m", ["k"], 4)["k"].tolist() == [1, 1, 1, 1]
