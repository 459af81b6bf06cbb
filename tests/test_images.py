"""Image input (candle_sklearn._images): what every kind of input becomes (paths, byte
paths, PIL images of any mode, arrays of any dtype and value range, containers), and a
named error, giving the image's index, for what cannot be read.

The property-based tests (hypothesis) check the invariant: a correct result or a clean,
named error (ImageInputError), never a raw error from PIL, torch or numpy. "Correct" is
checked against a small written-down specification of the pixel conversion (the oracles
below), not against the implementation. 600 generated cases (the runs of 100 cases or
more are marked slow). Runs are reproducible (derandomized); CANDLE_FUZZ_RANDOM=1
explores new cases. Without hypothesis those tests skip and the others run.
"""

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from candle_sklearn import ImageInputError
from candle_sklearn._cache import MEMORY
from candle_sklearn.datasets._photos import JPEG_SIZES
from candle_sklearn.datasets._photos import write_photo_jpegs as photo_jpegs

from ._fuzz import fuzz, given, st
from .conftest import ASSETS, embed, tiny

pytestmark = pytest.mark.usefixtures("fresh_embedding_cache")


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


def test_byte_paths_are_paths(image_dir, tmp_path):
    odd = os.path.join(os.fsencode(tmp_path), b"caf\xe9.png")  # not UTF-8
    Image.open(image_dir[0][1]).save(odd)
    expected = tiny(cache=False).fit(image_dir[0][:2]).transform(image_dir[0][:2])
    for paths in ([os.fsencode(image_dir[0][0]), odd],
                  np.array([os.fsencode(image_dir[0][0]), odd])):
        got = tiny(cache=str(tmp_path)).fit(paths).transform(paths)
        np.testing.assert_array_equal(got, expected)


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


# ===================================================================== property-based


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


@pytest.mark.slow  # 250 generated cases
@fuzz(250)
@given(arr=image_arrays())
def test_any_array_gives_the_right_embedding_or_a_named_error(arr):
    assert_embeds_as(arr, expected_pixels(arr), "an image", "an image the spec refuses")


def assert_embeds_as(item, want, what, refused, **params):
    """``item``, the second of two images, embeds as the pixels ``want``; or, where
    ``want`` is None, it is refused with an ImageInputError that names it (image 1)."""
    try:
        out = embed([GOOD, item], **params)
    except ImageInputError as exc:
        assert want is None, f"refused a valid {what}: {exc}"
        assert "image 1" in str(exc)
        return
    assert want is not None, f"accepted {refused}"
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


@pytest.mark.slow  # 150 generated cases
@fuzz(150)
@given(img=pil_images())
def test_any_pil_image_gives_the_right_embedding_or_a_named_error(img):
    assert_embeds_as(img, expected_rgb(img), f"{img.mode} image",
                     f"a {img.mode} image of size {img.size}", num_workers=1)


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


def test_exif_orientation_is_applied(tmp_path):
    """A photo file stored sideways with an EXIF orientation embeds as it is seen upright
    (ImageOps.exif_transpose); a PIL image in memory is used as given (its owner may
    have turned it already); a malformed EXIF block leaves the file as stored."""
    rng = np.random.default_rng(0)
    upright = Image.fromarray(rng.integers(0, 255, (40, 64, 3), dtype=np.uint8))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as a camera stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    tagged, plain = tmp_path / "tagged.png", tmp_path / "upright.png"
    stored.save(tagged, exif=exif)
    upright.save(plain)
    want = embed([str(plain)])
    np.testing.assert_allclose(embed([str(tagged)]), want, atol=1e-6)
    as_given = embed([stored])
    assert not np.allclose(as_given, want, atol=1e-3)  # the tag is what turns it
    np.testing.assert_allclose(embed([Image.open(tagged)]), as_given, atol=1e-6)
    # orientation 6 and a tag 332 of the wrong type: exif_transpose raised struct.error
    assert embed([str(ASSETS / "malformed_exif.jpg")]).shape == (1, 32)


# ====================== JPEG files decoded on the GPU (candle_sklearn._gpu_images), on the CPU
# torchvision decodes on the CPU with libjpeg (as PIL does) and resizes with the arithmetic
# it uses on CUDA: the same code, on CPU tensors, measures the GPU path's resizing.


def gpu_path_inputs(preprocess, paths, device="cpu"):
    """The model's input for ``paths`` by the GPU path (on ``device``) and by PIL's."""
    import torch

    from candle_sklearn._gpu_images import JpegBatchPreprocess, tensor_plan
    from candle_sklearn._images import BatchPreprocess
    prep = JpegBatchPreprocess(preprocess, tensor_plan(preprocess))
    batch = prep.collate([prep.image(p, i) for i, p in enumerate(paths)])
    pil = BatchPreprocess(preprocess)
    want = pil.to_device(pil.collate([pil.image(p, i) for i, p in enumerate(paths)]),
                         torch.device(device))
    return prep.to_device(batch, torch.device(device)), want


def test_gpu_jpeg_arithmetic_matches_pil_within_tolerance(tmp_path):
    """The tolerance stated in _gpu_images' docstring (measured by
    benchmarks/bench_embedder.py --tolerance), with bounds a little above: pixels at
    ViT-B-32's 224x224 and candle-tiny's 32x32, features of the bundled candle-tiny."""
    import open_clip
    import torch

    from candle_sklearn import ClipEmbedder
    paths = photo_jpegs(tmp_path, JPEG_SIZES * 2)
    clip = ClipEmbedder("candle-tiny", "bundled", device="cpu").load_model()
    for preprocess in (open_clip.image_transform(224, is_train=False), clip.preprocess):
        got, want = gpu_path_inputs(preprocess, paths)
        diff = (got - want).abs()
        assert diff.max() < 0.035 and diff.mean() < 5e-5, (diff.max(), diff.mean())
        assert diff.max() > 0  # the arithmetic is PIL's in spirit, not to the bit
    with torch.inference_mode():  # got and want: candle-tiny's inputs
        a, b = (clip.model.encode_image(x) for x in (got, want))
    cosine = torch.nn.functional.cosine_similarity(a, b)
    assert cosine.min() > 0.99999, cosine.min()


def test_resize_passes_in_pillows_order():
    """PIL resizes in two 8-bit passes, in an order of its own (Pillow 13 resizes rows
    first where the height shrinks most): the tensor path follows, to the rounding."""
    import torch

    from candle_sklearn._gpu_images import TensorPlan
    gen = np.random.default_rng(0)
    for (h, w), size in [((1000, 300), [224]), ((300, 1000), [224]), ((480, 640), [224]),
                         ((64, 64), [224]), ((90, 400), [60, 100]), ((400, 90), [100, 60])]:
        img = gen.integers(0, 256, (h, w, 3), dtype=np.uint8)  # noise: the worst case
        plan = TensorPlan(size, "bicubic", None, None)
        nh, nw = plan.resized_size(h, w)
        want = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BICUBIC)).astype(int)
        got = plan.apply(torch.from_numpy(img).permute(2, 0, 1)[None])[0].permute(1, 2, 0)
        diff = np.abs(got.numpy().astype(int) - want)
        # one pass's rounding, now and then carried by the next one (the other order
        # gives up to 25 levels)
        assert diff.max() <= 2 and (diff > 1).mean() < 1e-4, (h, w, size, diff.max())


def test_tensor_plan_of_each_preprocess():
    """The usual open_clip transforms have a plan; any other keeps every image on PIL."""
    import open_clip
    from torchvision.transforms import Compose, Resize, ToTensor

    from candle_sklearn._gpu_images import tensor_plan
    plan = tensor_plan(open_clip.image_transform(224, is_train=False))
    assert (plan.size, plan.mode, plan.crop, plan.out_size) == ([224], "bicubic", (224, 224),
                                                                (224, 224))
    squash = tensor_plan(open_clip.image_transform(224, is_train=False, resize_mode="squash"))
    assert (squash.size, squash.crop, squash.out_size) == ([224, 224], None, (224, 224))
    assert tensor_plan(open_clip.image_transform(224, is_train=False,
                                                 interpolation="bilinear")).mode == "bilinear"
    for other in (open_clip.image_transform(224, is_train=False, resize_mode="longest"),
                  open_clip.image_transform((224, 256), is_train=False),  # ResizeKeepRatio
                  Compose([Resize(32), ToTensor()]), lambda image: image):
        assert tensor_plan(other) is None


def jpeg_bytes(img, **options):
    import io
    buf = io.BytesIO()
    img.save(buf, "JPEG", **options)
    return buf.getvalue()


def with_xmp(data, xml):
    """JPEG bytes with an XMP segment after the SOI marker."""
    payload = b"http://ns.adobe.com/xap/1.0/\x00" + xml
    return data[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + data[2:]


def test_which_files_the_gpu_decodes():
    """Baseline 8-bit grey or YCbCr JPEGs, upright, whole; everything else is PIL's."""
    from candle_sklearn._gpu_images import gpu_decodable
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), np.uint8))
    upright, turned = Image.Exif(), Image.Exif()
    upright[0x0112], turned[0x0112] = 1, 6
    plain = jpeg_bytes(rgb)
    decodable = {"baseline": plain, "grey": jpeg_bytes(rgb.convert("L")),
                 "4:4:4": jpeg_bytes(rgb, subsampling=0),
                 "orientation 1": jpeg_bytes(rgb, exif=upright.tobytes()),
                 "other XMP": with_xmp(plain, b"<x:xmpmeta>dc:title</x:xmpmeta>"),
                 "EXIF 1 over XMP": with_xmp(jpeg_bytes(rgb, exif=upright.tobytes()),
                                             b'<rdf tiff:Orientation="6"/>'),
                 "bytes after EOI": plain + b"trailing"}
    refused = {"PNG": b"\x89PNG\r\n\x1a\n" + plain, "CMYK": jpeg_bytes(rgb.convert("CMYK")),
               "progressive": jpeg_bytes(rgb, progressive=True),
               "orientation 6": jpeg_bytes(rgb, exif=turned.tobytes()),
               "XMP orientation": with_xmp(plain, b'<rdf tiff:Orientation="6"/>'),
               "EXIF without, XMP": with_xmp(jpeg_bytes(rgb, exif=Image.Exif().tobytes()),
                                             b'<rdf tiff:Orientation="6"/>'),
               "truncated": plain[:len(plain) * 2 // 3], "header only": plain[:200],
               "empty": b"", "malformed EXIF": (ASSETS / "malformed_exif.jpg").read_bytes()}
    try:
        refused["RGB-coded"] = jpeg_bytes(rgb, keep_rgb=True)  # Pillow >= 10.2
    except TypeError:
        pass
    for name, data in decodable.items():
        assert gpu_decodable(bytearray(data)), name
    for name, data in refused.items():
        assert not gpu_decodable(bytearray(data)), name


@pytest.fixture
def gpu_path_on_cpu(monkeypatch):
    """ClipEmbedder's GPU JPEG path, forced on the CPU; yields the number of JPEG files
    each batch sent to the decoder."""
    from candle_sklearn import _gpu_images, embedder
    monkeypatch.setattr(_gpu_images, "decodes_on", lambda device: True)
    monkeypatch.setattr(embedder.ClipEmbedder, "_may_decode_on_gpu",
                        lambda self: self.decode == "auto")  # as on CUDA
    sent = []
    original = _gpu_images.decode_jpegs

    def counting(datas, device):
        sent.append(len(datas))
        return original(datas, device)

    monkeypatch.setattr(_gpu_images, "decode_jpegs", counting)
    return sent


def routing_files(folder):
    """Four photo JPEGs, then a PNG, a CMYK JPEG and JPEGs turned by EXIF and by XMP."""
    paths = photo_jpegs(folder, JPEG_SIZES[:4])
    rgb = Image.open(paths[0]).convert("RGB")
    turned = Image.Exif()
    turned[0x0112] = 6
    others = {"image.png": lambda p: rgb.save(p),
              "cmyk.jpg": lambda p: rgb.convert("CMYK").save(p),
              "exif.jpg": lambda p: rgb.save(p, exif=turned.tobytes()),
              "xmp.jpg": lambda p: p.write_bytes(with_xmp(jpeg_bytes(rgb),
                                                          b'<rdf tiff:Orientation="8"/>'))}
    for name, write in others.items():
        write(Path(folder) / name)
        paths.append(str(Path(folder) / name))
    return paths


@pytest.mark.parametrize("workers", [0, 2])
def test_gpu_path_routes_each_file_and_matches_pil(tmp_path, gpu_path_on_cpu, workers):
    """The photos go to the decoder, in batches; the PNG, the CMYK JPEG and the turned
    JPEGs to PIL, which turns them upright; images in memory too. All embed as PIL's."""
    paths = routing_files(tmp_path)
    items = paths + [np.asarray(Image.open(paths[0]).convert("RGB"))]
    pil = embed(items, decode="pil")
    assert not gpu_path_on_cpu  # decode="pil": never the decoder
    got = embed(items, num_workers=workers, batch_size=3)
    assert [n for n in gpu_path_on_cpu if n] == [3, 1]  # the photos, in their batches
    np.testing.assert_allclose(got[4:], pil[4:], atol=1e-5)  # PIL's, as PIL's
    assert (got * pil).sum(1).min() > 0.9999
    # the turned JPEGs are turned: they embed as seen upright, not as stored
    from PIL import ImageOps
    for turned in (6, 7):  # EXIF, XMP
        stored = Image.open(paths[turned])
        np.testing.assert_allclose(got[turned], embed([ImageOps.exif_transpose(stored)])[0],
                                   atol=1e-5)
        assert not np.allclose(got[turned], embed([stored])[0], atol=1e-3)


def test_gpu_path_refusal_falls_back_per_image(tmp_path, gpu_path_on_cpu, monkeypatch):
    """One file that the decoder refuses neither fails the batch nor skips the file: the
    decoder takes the others, PIL that one; where PIL refuses it too, its error names the
    file."""
    import torch

    from candle_sklearn import _gpu_images
    paths = photo_jpegs(tmp_path, JPEG_SIZES[:4])
    refused = torch.frombuffer(bytearray(Path(paths[1]).read_bytes()), dtype=torch.uint8)
    original, decoded = _gpu_images._decode, []

    def decode(tensors, device):  # nvJPEG refusing one file fails the whole call
        if any(torch.equal(t, refused) for t in tensors):
            raise RuntimeError("Error while decoding JPEG images: nvjpeg status 7")
        decoded.extend(tensors)
        return original(tensors, device)

    monkeypatch.setattr(_gpu_images, "_decode", decode)
    np.testing.assert_allclose(embed(paths), embed(paths, decode="pil"), atol=1e-4)
    assert len(decoded) == 3  # one by one, after the batch failed
    # headers, EOI and all, but no quantisation tables: libjpeg refuses it, so does PIL
    data = Path(paths[0]).read_bytes()
    broken = tmp_path / "no_tables.jpg"
    broken.write_bytes(data.replace(b"\xff\xdb", b"\xff\xfe"))  # DQT segments to comments
    assert _gpu_images.gpu_decodable(bytearray(broken.read_bytes()))
    with pytest.raises(ImageInputError, match=r"image 2 \('.*no_tables.jpg'\) could not be"):
        embed(paths[:2] + [str(broken)] + paths[2:], num_workers=2)


def test_gpu_path_errors_name_the_file(tmp_path, gpu_path_on_cpu):
    """Truncated, missing and not-an-image files: PIL's errors, naming path and index."""
    paths = photo_jpegs(tmp_path, JPEG_SIZES[:3])
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(Path(paths[0]).read_bytes()[:3000])
    text = tmp_path / "text.jpg"
    text.write_text("not an image")
    for bad in (cut, text, tmp_path / "missing.jpg"):
        with pytest.raises(ImageInputError, match=rf"image 3 \('.*{bad.name}'\)"):
            embed(paths + [str(bad)], num_workers=2, batch_size=2)


def test_gpu_decoding_is_off_without_cuda(monkeypatch):
    """On the CPU (or any device but CUDA with nvJPEG) every image goes through PIL."""
    import torch

    from candle_sklearn import _gpu_images, embedder
    assert not _gpu_images.decodes_on(torch.device("cpu"))
    assert not tiny()._may_decode_on_gpu() and not tiny(decode="pil")._may_decode_on_gpu()
    # the intent (the cache key's decoding) needs a CUDA device and decode="auto" only
    monkeypatch.setattr(embedder, "resolve_device", lambda device: torch.device("cuda"))
    assert tiny()._may_decode_on_gpu() and not tiny(decode="pil")._may_decode_on_gpu()
    with pytest.raises(ValueError, match="decode"):
        tiny(decode="gpu").transform([GOOD])


def test_without_nvjpeg_a_cuda_run_embeds_and_caches_as_pil(monkeypatch, tmp_path):
    """A CUDA run that finds no nvJPEG (asked only when something must be encoded) gives
    PIL's features, cached under PIL's key: a decode="pil" run then finds them all."""
    from candle_sklearn import _gpu_images, embedder

    paths = photo_jpegs(tmp_path, JPEG_SIZES[:3])
    want = tiny(cache=False, decode="pil").transform(paths)
    asked = []
    monkeypatch.setattr(embedder.ClipEmbedder, "_may_decode_on_gpu", lambda self: True)
    monkeypatch.setattr(_gpu_images, "decodes_on", lambda device: asked.append(1) or False)
    MEMORY.clear()
    np.testing.assert_array_equal(tiny().transform(paths), want)
    assert asked == [1]
    monkeypatch.undo()
    monkeypatch.setattr(embedder.ClipEmbedder, "_encode_missing",
                        lambda *a, **k: pytest.fail("encoded again"))
    np.testing.assert_array_equal(tiny(decode="pil").transform(paths), want)
