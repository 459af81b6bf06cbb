import io
import os
import pickle
import time
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.utils import estimator_checks as ec

from candle_sklearn import ClipEmbedder, _clip
from candle_sklearn._cache import MEMORY
from candle_sklearn._images import ImageInputError

from . import conftest
from .conftest import TINY


def tiny(**params):
    """The tiny model with fixed random weights (a checkpoint file made per session)."""
    return ClipEmbedder(TINY, pretrained=conftest.TINY_WEIGHTS,
                        **{"device": "cpu", **params})


@pytest.fixture(autouse=True)
def fresh_embedding_cache():
    MEMORY.clear()
    yield
    MEMORY.clear()


@pytest.fixture
def forward_counter(monkeypatch):
    """Counts the images that go through the tiny model's image tower."""
    model = tiny()._loaded().model
    seen = []
    original = model.encode_image

    def counting(images, *args, **kwargs):
        seen.append(len(images))
        return original(images, *args, **kwargs)

    monkeypatch.setattr(model, "encode_image", counting)
    return seen


@pytest.mark.parametrize("check", [
    ec.check_no_attributes_set_in_init, ec.check_get_params_invariance, ec.check_set_params,
    ec.check_parameters_default_constructible, ec.check_estimator_cloneable,
    ec.check_estimator_repr, ec.check_mixin_order, ec.check_valid_tag_types,
    ec.check_estimator_tags_renamed,
])
def test_sklearn_api_checks(check):
    """The checks that need no numeric 2-D data (image input disables the others)."""
    check("ClipEmbedder", tiny())


def test_all_input_kinds_give_the_same_embedding(image_dir):
    paths, _ = image_dir
    pil = Image.open(paths[0]).convert("RGB")
    arr = np.asarray(pil)
    emb = tiny(cache=False).fit([paths[0]])
    want = emb.transform([paths[0]])
    for form in ([Path(paths[0])], [pil], [arr], arr[None], [arr.astype(np.float64) / 255.0]):
        np.testing.assert_allclose(emb.transform(form), want, atol=1e-6)
    import pandas as pd
    np.testing.assert_allclose(emb.transform(pd.DataFrame({"image": [paths[0]]})), want,
                               atol=1e-6)
    assert want.dtype == np.float32 and want.shape == (1, 32)
    np.testing.assert_allclose(np.linalg.norm(want, axis=1), 1, rtol=1e-5)


def test_grey_and_rgba_become_rgb(image_dir):
    paths, _ = image_dir
    rgb = Image.open(paths[0]).convert("RGB")
    emb = tiny().fit([paths[0]])
    grey = emb.transform([rgb.convert("L"), np.asarray(rgb.convert("L"))])
    np.testing.assert_allclose(grey[0], grey[1], atol=1e-6)
    rgba = rgb.convert("RGBA")
    np.testing.assert_allclose(emb.transform([rgba]), emb.transform([rgb]), atol=1e-6)


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


# --------------------------------------------------------------- bad input
def test_missing_file_names_path_and_index(image_dir, tmp_path):
    paths = list(image_dir[0][:3]) + [str(tmp_path / "nope.png")]
    with pytest.raises(ImageInputError, match=r"image 3 \('.*nope.png'\)"):
        tiny().fit(paths).transform(paths)


@pytest.mark.parametrize("workers", [0, 2])
def test_truncated_and_unreadable_files(image_dir, tmp_path, workers):
    good = Path(image_dir[0][0]).read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good[: len(good) // 2])
    text = tmp_path / "text.png"
    text.write_text("not an image")
    paths = list(image_dir[0]) * 3  # enough images for DataLoader workers to start
    emb = tiny(batch_size=4, num_workers=workers, cache=False).fit(paths)
    for bad, name in ((truncated, "truncated.png"), (text, "text.png")):
        with pytest.raises(ImageInputError, match=rf"image 5 \('.*{name}'\) could not be read"):
            emb.transform(paths[:5] + [str(bad)] + paths[5:])


@pytest.mark.parametrize("X, message", [
    ([], "empty"),
    ([np.zeros((8, 8, 4), np.uint8)], r"image 0: array of shape \(8, 8, 4\)"),
    ([np.full((8, 8, 3), 300.0)], r"values in \[300, 300\]"),
    ([np.full((8, 8, 3), -0.5)], r"values in \[-0.5, -0.5\]"),
    ([np.full((8, 8, 3), np.nan)], "NaN"),
    ([42], "unsupported type int"),
    ("cat.png", "wrap a single image in a list"),
    (np.zeros((8, 8, 3), np.uint8), "(?i)wrap a single image in a list"),
])
def test_bad_inputs(X, message):
    with pytest.raises(ImageInputError, match=message):
        tiny().fit_transform(X)


def test_dataframe_with_two_columns():
    import pandas as pd
    with pytest.raises(ImageInputError, match="one column"):
        tiny().fit(pd.DataFrame({"a": ["x"], "b": ["y"]}))


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


def test_byte_paths_are_paths(image_dir, tmp_path):
    odd = os.path.join(os.fsencode(tmp_path), b"caf\xe9.png")  # not UTF-8
    Image.open(image_dir[0][1]).save(odd)
    expected = tiny(cache=False).fit(image_dir[0][:2]).transform(image_dir[0][:2])
    for paths in ([os.fsencode(image_dir[0][0]), odd],
                  np.array([os.fsencode(image_dir[0][0]), odd])):
        got = tiny(cache=str(tmp_path)).fit(paths).transform(paths)
        np.testing.assert_array_equal(got, expected)


def test_no_cache_encodes_every_time(image_dir, forward_counter):
    emb = tiny(cache=False).fit(image_dir[0][:3])
    emb.transform(image_dir[0][:3])
    emb.transform(image_dir[0][:3])
    assert sum(forward_counter) == 6


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


def test_offline_pretrained_tag_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(_clip.WeightsUnavailableError,
                       match=r"'openai' for model 'ViT-B-32'.*pretrained='/path/to"):
        ClipEmbedder("ViT-B-32", "openai", device="cpu").fit([np.zeros((8, 8, 3), np.uint8)])
    assert time.perf_counter() - start < 5


def test_unreachable_hub_fails_fast_without_offline_flag(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(_clip, "_reachable", lambda host, **kw: False)  # no socket opened
    with pytest.raises(_clip.WeightsUnavailableError, match="huggingface.co is unreachable"):
        _clip.resolve("ViT-B-32", "openai")


def test_unknown_tag_and_missing_file():
    with pytest.raises(ValueError, match="known tags"):
        _clip.resolve("ViT-B-32", "no-such-tag")
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        _clip.resolve("ViT-B-32", "/no/such/file.pt")
    with pytest.raises(FileNotFoundError, match="no open_clip_config.json"):
        _clip.resolve("ViT-B-32", "local-dir:/no/such/dir")
    with pytest.raises(FileNotFoundError, match=r"is a folder.*pretrained='local-dir:/tmp"):
        _clip.resolve("ViT-B-32", "/tmp")
    with pytest.raises(ValueError, match="no bundled weights"):
        _clip.resolve("ViT-B-32", "bundled")
    with pytest.raises(ValueError, match="unknown open_clip model"):
        ClipEmbedder("no-such-model", None, device="cpu").fit([np.zeros((8, 8, 3), np.uint8)])


def test_checkpoint_file_and_local_dir(image_dir, tmp_path):
    import json

    import open_clip
    from safetensors.torch import save_file
    paths = image_dir[0][:3]
    torch.manual_seed(123)
    model = open_clip.create_model(TINY)
    ckpt = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), ckpt)
    folder = tmp_path / "tiny_dir"
    folder.mkdir()
    save_file(model.state_dict(), folder / "open_clip_model.safetensors")
    cfg = json.loads((Path(__file__).parent / "assets" / f"{TINY}.json").read_text())
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    from_file = ClipEmbedder(TINY, str(ckpt), device="cpu").fit_transform(paths)
    from_dir = ClipEmbedder(TINY, f"local-dir:{folder}", device="cpu").fit_transform(paths)
    np.testing.assert_allclose(from_file, from_dir, atol=1e-6)
    random = ClipEmbedder(TINY, None, device="cpu").fit_transform(paths)
    assert not np.allclose(from_file, random, atol=1e-3)


def test_encode_text():
    emb = tiny()
    out = emb.encode_text(["a photo of a red square.", "a photo of a dog."])
    assert out.shape == (2, 32) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, rtol=1e-5)
    with pytest.raises(ValueError, match="list of strings"):
        emb.encode_text("just one string")


# ------------------------------------------------------------------- pipeline
def test_pipeline_with_new_class_by_name_and_pickle(image_dir):
    from candle_sklearn import make_candle_pipeline
    paths, labels = image_dir
    train = labels != "yellow"  # yellow: known by name only
    pipe = make_candle_pipeline(TINY, conftest.TINY_WEIGHTS, embedder_params={"device": "cpu"},
                                classes=["red", "green", "blue", "yellow"], max_epochs=3,
                                device="cpu", random_state=0)
    pipe.fit(np.array(paths)[train], labels[train])
    candle = pipe.named_steps["candle"]
    assert candle.new_classes_.tolist() == ["yellow"]
    assert candle.classes_.tolist() == ["blue", "green", "red", "yellow"]
    proba = pipe.predict_proba(paths)
    assert proba.shape == (len(paths), 4)
    buf = io.BytesIO()
    joblib.dump(pipe, buf)
    assert buf.tell() < 200_000  # the head and text features, no CLIP weights
    buf.seek(0)
    _clip.clear_cache()
    MEMORY.clear()
    loaded = joblib.load(buf)
    np.testing.assert_allclose(loaded.predict_proba(paths), proba, atol=1e-6)
    np.testing.assert_array_equal(loaded.predict(paths), pipe.predict(paths))


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


def test_url_weights_are_looked_up_on_disk_only(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = {"url": "https://example.invalid/weights/model-abc.pt"}
    assert _clip._cached_checkpoint(cfg) is None  # nothing downloaded, no socket opened
    (tmp_path / ".cache" / "clip").mkdir(parents=True)
    (tmp_path / ".cache" / "clip" / "model-abc.pt").write_bytes(b"x")
    assert _clip._cached_checkpoint(cfg).endswith("model-abc.pt")
