"""Property-based tests of the embedder side (issue 10): image kinds, modes, sizes,
dtypes and value ranges, input containers, and cache round trips.

The invariant everywhere: a correct result or a clean, named error (ImageInputError,
EmbeddingCacheError), never a raw error from PIL, torch, numpy or sqlite. "Correct" is
checked against a small written-down specification of the pixel conversion (the
oracles below), not against the implementation. 840 generated cases, ~30 s.
Runs are reproducible (derandomized); CANDLE_FUZZ_RANDOM=1 explores new cases.
"""

import sqlite3
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from candle_sklearn import ClipEmbedder, EmbeddingCacheError, ImageInputError  # noqa: E402
from candle_sklearn import _cache  # noqa: E402
from candle_sklearn._cache import MEMORY, DiskCache  # noqa: E402
from candle_sklearn.exceptions import EmbeddingCacheWarning  # noqa: E402

from . import conftest  # noqa: E402
from ._fuzz import fuzz  # noqa: E402
from .conftest import TINY  # noqa: E402


def embed(images, **params):
    emb = ClipEmbedder(TINY, conftest.TINY_WEIGHTS,
                       **{"device": "cpu", "cache": False, "num_workers": 0, "n_jobs": 1,
                          **params})
    return emb.transform(images)


GOOD = np.full((8, 8, 3), 128, np.uint8)


def check_embeddings(out, n):
    assert out.shape == (n, 32) and out.dtype == np.float32
    assert np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, rtol=1e-4)


# ---------------------------------------------------------------- the spec
def expected_pixels(arr, sixteen_bit=False):
    """8-bit RGB pixels an image array stands for, or None where it must be refused:
    (H, W), (H, W, 1) or (H, W, 3); bool as 0/255; uint8 as is; uint16 (or a 16-bit
    PIL image) over [0, 65535]; floats in [0, 1] scaled by 255; other numbers in
    [0, 255] as they are; nothing else (NaN, other ranges, empty)."""
    a = arr[:, :, 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        return None
    if a.dtype.kind not in "biuf" or a.shape[0] == 0 or a.shape[1] == 0:
        return None
    if a.dtype.kind == "b":
        out = a.astype(np.uint8) * 255
    elif a.dtype == np.uint8:
        out = a
    else:
        x = a.astype(np.float64)
        if not np.isfinite(x).all():
            return None
        lo, hi = x.min(), x.max()
        if (sixteen_bit or a.dtype == np.uint16) and lo >= 0 and hi <= 65535:
            x = x * 255 / 65535
        elif a.dtype.kind == "f" and lo >= 0 and hi <= 1:
            x = x * 255
        elif not (lo >= 0 and hi <= 255):
            return None
        out = np.round(x).astype(np.uint8)
    return np.repeat(out[:, :, None], 3, axis=2) if out.ndim == 2 else out


REGIMES = ("unit", "byte", "sixteen", "wide", "negative", "constant")


@st.composite
def image_arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(
        ["uint8", "uint16", "int16", "int32", "int64", "uint32", "float16", "float32",
         "float64", "bool", "complex64", "object"])))
    side = st.integers(0, 20)
    shape = draw(st.one_of(
        st.tuples(side, side),
        st.tuples(side, side, st.sampled_from([1, 3])),
        st.tuples(side, side, st.integers(0, 5)),
        st.tuples(st.sampled_from([1, 3]), side, side),
        st.lists(st.integers(0, 4), min_size=0, max_size=5).map(tuple)))
    regime = draw(st.sampled_from(REGIMES))
    gen = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = {"unit": 1, "byte": 255, "sixteen": 65535, "wide": 1e6, "negative": 300,
             "constant": 0}[regime]
    values = np.asarray(gen.uniform(0, 1, shape)) * scale
    if regime == "negative":
        values -= 150
    if regime == "constant":
        values = np.full(shape, draw(st.sampled_from([0.0, 1.0, 255.0, 65535.0])))
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = np.clip(np.round(values), info.min, info.max)
    if dtype.kind == "b":
        values = values > scale / 2
    with np.errstate(over="ignore", invalid="ignore"):  # float16 overflows to inf: fine
        arr = np.asarray(values).astype(dtype)
    if dtype.kind == "f" and arr.size and draw(st.booleans()) and draw(st.booleans()):
        arr.flat[draw(st.integers(0, arr.size - 1))] = draw(
            st.sampled_from([np.nan, np.inf, -np.inf]))
    if arr.ndim >= 2 and draw(st.booleans()):
        arr = arr[::-1]  # a view with negative strides
    return arr


@fuzz(250)
@given(arr=image_arrays())
def test_any_array_gives_the_right_embedding_or_a_named_error(arr):
    want = expected_pixels(arr)
    try:
        out = embed([GOOD, arr])
    except ImageInputError as exc:
        assert want is None, f"refused a valid image: {exc}"
        assert "image 1" in str(exc)
        return
    assert want is not None, "accepted an image the spec refuses"
    check_embeddings(out, 2)
    np.testing.assert_allclose(out[1], embed([want])[0], atol=1e-5)


# ---------------------------------------------------------------- PIL modes
PIL_MODES = ["1", "L", "P", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV",
             "LA", "La", "PA", "I", "I;16", "I;16B", "I;16L", "F"]


@st.composite
def pil_images(draw):
    mode = draw(st.sampled_from(PIL_MODES))
    size = (draw(st.integers(0, 20)), draw(st.integers(0, 20)))
    gen = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    w, h = size
    if mode == "F":
        scale = draw(st.sampled_from([1.0, 255.0, 1e5]))
        img = Image.fromarray((gen.uniform(0, 1, (h, w)) * scale).astype(np.float32), "F")
    elif mode == "I":
        top = draw(st.sampled_from([255, 65535, 2**31 - 1]))
        img = Image.fromarray(gen.integers(0, top, (h, w), dtype=np.int32, endpoint=True),
                              "I")
    else:
        img = Image.new(mode, size)
        if w and h:
            img.frombytes(gen.bytes(len(img.tobytes())))
        if mode in ("P", "PA"):
            img.putpalette(list(gen.integers(0, 256, 768, dtype=np.uint8)))
    return img


def expected_rgb(img):
    """What a PIL image stands for: 16-bit and float modes by their range (as
    arrays), everything else by PIL's own RGB conversion; None if refused."""
    if img.size[0] == 0 or img.size[1] == 0:
        return None
    if img.mode.startswith("I;16"):
        return expected_pixels(np.asarray(img), sixteen_bit=True)
    if img.mode in ("I", "F"):
        return expected_pixels(np.asarray(img))
    try:
        return np.asarray(img.convert("RGB"))
    except ValueError:  # a conversion PIL does not have
        return None


@fuzz(150)
@given(img=pil_images())
def test_any_pil_image_gives_the_right_embedding_or_a_named_error(img):
    want = expected_rgb(img)
    try:
        out = embed([GOOD, img], num_workers=1)
    except ImageInputError as exc:
        assert want is None, f"refused a valid {img.mode} image: {exc}"
        assert "image 1" in str(exc)
        return
    assert want is not None, f"accepted a {img.mode} image of size {img.size}"
    check_embeddings(out, 2)
    np.testing.assert_allclose(out[1], embed([want])[0], atol=1e-5)


LOSSLESS = {"PNG": ["1", "L", "P", "RGB", "RGBA", "LA", "I;16", "I"],
            "TIFF": ["1", "L", "RGB", "RGBA", "CMYK", "I;16", "F"],
            "BMP": ["1", "L", "P", "RGB"],
            "WEBP": ["RGB", "RGBA"]}


@fuzz(80)
@given(data=st.data(), fmt=st.sampled_from(sorted(LOSSLESS)))
def test_files_embed_as_the_image_they_hold(data, fmt):
    img = data.draw(pil_images().filter(lambda im: im.mode in LOSSLESS[fmt]
                                        and 0 not in im.size))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"image.{fmt.lower()}"
        try:
            img.save(path, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        except (OSError, ValueError, KeyError):  # PIL cannot write that combination
            return
        with Image.open(path) as reopened:
            reopened.load()
            want = expected_rgb(reopened)
        try:
            out = embed([str(path)])
        except ImageInputError as exc:
            assert want is None and "image 0" in str(exc) and str(path) in str(exc)
            return
    assert want is not None
    check_embeddings(out, 1)
    np.testing.assert_allclose(out[0], embed([want])[0], atol=1e-5)


@fuzz(60)
@given(seed=st.integers(0, 2**32 - 1), colours=st.integers(1, 6),
       cache=st.sampled_from([False, True]))
def test_palette_images_embed_as_their_colours(seed, colours, cache):
    gen = np.random.default_rng(seed)
    indices = gen.integers(0, colours, (10, 10), dtype=np.uint8)
    images = []
    for _ in range(2):
        img = Image.fromarray(indices, mode="P")
        img.putpalette(list(gen.integers(0, 256, 3 * colours, dtype=np.uint8)))
        images.append(img)
    MEMORY.clear()
    out = embed(images, cache=cache)
    for row, img in zip(out, images):
        np.testing.assert_allclose(row, embed([img.convert("RGB")])[0], atol=1e-6)


# ---------------------------------------------------------------- containers
ITEM_KINDS = st.sampled_from(["good", "grey", "pil", "none", "int", "bytes", "missing",
                              "nested", "dict", "float", "dir"])


def make_item(kind):
    return {"good": GOOD, "grey": GOOD[:, :, 0], "pil": Image.fromarray(GOOD),
            "none": None, "int": 7, "bytes": b"\x89PNG", "missing": "/no/such/image.png",
            "nested": [GOOD], "dict": {"image": GOOD}, "float": 0.5,
            "dir": tempfile.gettempdir()}[kind]


@fuzz(60)
@given(kinds=st.lists(ITEM_KINDS, max_size=6), container=st.sampled_from(
    ["list", "tuple", "object array", "series", "frame"]))
def test_containers_of_mixed_items(kinds, container):
    import pandas as pd
    items = [make_item(k) for k in kinds]
    if container == "tuple":
        X = tuple(items)
    elif container == "object array":
        X = np.empty(len(items), dtype=object)
        X[:] = items
    elif container == "series":
        X = pd.Series(items, dtype=object)
    elif container == "frame":
        X = pd.DataFrame({"image": pd.Series(items, dtype=object)})
    else:
        X = items
    bad = [i for i, k in enumerate(kinds) if k not in ("good", "grey", "pil")]
    try:
        out = embed(X)
    except ImageInputError as exc:
        assert bad or not items
        assert not bad or any(f"image {i}" in str(exc) for i in bad)
        return
    assert not bad and items
    check_embeddings(out, len(items))


# ---------------------------------------------------------------- caches
BIG = float(np.float32(1e30))
vectors = st.integers(1, 48).flatmap(lambda d: st.lists(
    st.lists(st.floats(-BIG, BIG, width=32), min_size=d, max_size=d), min_size=1,
    max_size=12))


@fuzz(80)
@given(vecs=vectors, names=st.lists(st.text(max_size=40), min_size=12, max_size=12,
                                    unique=True), model=st.text(max_size=20))
def test_disk_cache_round_trip(vecs, names, model):
    dim = len(vecs[0])
    items = {name: np.asarray(v, np.float32) for name, v in zip(names, vecs)}
    with tempfile.TemporaryDirectory() as folder:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            cache = DiskCache(folder)
            assert cache.put_many(model, items)
            got = cache.get_many(model, list(names), dim)
            assert set(got) == set(items)
            for k, v in items.items():
                assert got[k].tobytes() == v.tobytes()
            assert cache.get_many(model + "/other", list(names), dim) == {}
        if dim > 1:
            with pytest.warns(EmbeddingCacheWarning):  # another model's size: damaged
                assert cache.get_many(model, list(names), dim - 1) == {}


def damage_prefix(blob, draw):
    return draw(st.binary(max_size=200)) + blob[draw(st.integers(0, len(blob))):]


def damage_truncate(blob, draw):
    return blob[:draw(st.integers(0, len(blob)))]


def damage_flips(blob, draw):
    data = bytearray(blob)
    for _ in range(draw(st.integers(1, 20))):
        data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


def damage_garbage(blob, draw):
    return draw(st.binary(max_size=5000))


@fuzz(120)
@given(data=st.data(), damage=st.sampled_from([damage_prefix, damage_truncate, damage_flips,
                                                damage_garbage]))
def test_damaged_cache_file_never_lies_or_crashes(data, damage):
    gen = np.random.default_rng(0)
    items = {f"file:/images/{i}.png:1:{i}": gen.normal(size=16).astype(np.float32)
             for i in range(40)}
    with tempfile.TemporaryDirectory() as folder:
        cache = DiskCache(folder)
        cache.put_many("model", items)
        path = Path(folder) / _cache.FILE_NAME
        path.write_bytes(damage(path.read_bytes(), data.draw))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EmbeddingCacheWarning)
            try:
                got = cache.get_many("model", list(items), 16)
            except EmbeddingCacheError as exc:
                assert str(path) in str(exc)
                return
            for k, v in got.items():  # whatever comes back is exactly what was stored
                assert v.tobytes() == items[k].tobytes()
            assert cache.put_many("model", items) in (True, False)
            again = cache.get_many("model", list(items), 16)
        assert all(again[k].tobytes() == items[k].tobytes() for k in again)


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
