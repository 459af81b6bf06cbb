"""Weight fingerprints (candle_sklearn._fingerprint): the content hash, computed once per
file state."""

from candle_sklearn import _clip

from .conftest import TINY, save_random_tiny, touch_later


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
