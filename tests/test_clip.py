"""Models and weights (candle_sklearn._clip): pretrained tags, checkpoint files and
open_clip folders, offline behaviour, and a one-line error naming the file for weights
that cannot be used."""

import io
import json
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from candle_sklearn import CheckpointError, ClipEmbedder, WeightsUnavailableError, _clip

from . import conftest
from .conftest import ASSETS, TINY, save_random_tiny, touch_later

pytestmark = pytest.mark.usefixtures("fresh_embedding_cache")


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


def test_url_weights_are_looked_up_on_disk_only(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = {"url": "https://example.invalid/weights/model-abc.pt"}
    assert _clip._cached_checkpoint(cfg) is None  # nothing downloaded, no socket opened
    (tmp_path / ".cache" / "clip").mkdir(parents=True)
    (tmp_path / ".cache" / "clip" / "model-abc.pt").write_bytes(b"x")
    assert _clip._cached_checkpoint(cfg).endswith("model-abc.pt")


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


# ===================================================== silent garbage, item 4
def test_local_dir_without_weights_is_an_error_naming_the_folder(tmp_path):
    folder = tmp_path / "model_dir"
    folder.mkdir()
    cfg = json.loads((ASSETS / f"{TINY}.json").read_text())
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    with pytest.raises(WeightsUnavailableError, match=f"{folder}.*no weights file"):
        ClipEmbedder(TINY, f"local-dir:{folder}", device="cpu").transform(
            [np.zeros((8, 8, 3), np.uint8)])


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


def test_absolute_pretrained_names_the_same_weights_from_anywhere(tmp_path, monkeypatch):
    """What `candle-sklearn fit` stores: relative files and open_clip folders (prefixed
    or bare) made absolute; tags, "bundled" and None untouched."""
    from candle_sklearn._clip import absolute_pretrained

    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.pt").write_bytes(b"x")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "open_clip_config.json").write_text("{}")
    assert absolute_pretrained("w.pt") == str(tmp_path / "w.pt")
    assert absolute_pretrained("local-dir:folder") == f"local-dir:{tmp_path / 'folder'}"
    assert absolute_pretrained("folder") == str(tmp_path / "folder")
    (tmp_path / "bundled").write_bytes(b"x")  # a file of that name does not win
    for as_is in ("openai", "bundled", None, "missing.pt"):
        assert absolute_pretrained(as_is) == as_is
