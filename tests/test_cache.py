"""The embedding caches (candle_sklearn._cache): in memory, on disk (SQLite) and per
session. A damaged, read-only or unusable cache file never stops a run, never loses a
finished encoding and never serves a wrong row; the property-based tests (hypothesis)
round-trip and damage cache files at random."""

import os
import sqlite3
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from candle_sklearn import EmbeddingCacheError, _cache
from candle_sklearn._cache import MEMORY, DiskCache
from candle_sklearn.exceptions import EmbeddingCacheWarning

from ._fuzz import fuzz, given, st
from .conftest import tiny

pytestmark = pytest.mark.usefixtures("fresh_embedding_cache")


def test_cache_takes_numpy_booleans():
    assert _cache.caches_for(np.False_) == []
    assert _cache.caches_for(np.True_)[0] is MEMORY


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


# ====================================================================== session cache


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


def test_the_main_process_removes_its_session_folder_at_exit():
    """Registered at import: a parent whose workers alone embed (cross_val_score with
    n_jobs=2) still owns their shared folder."""
    assert _cache._CLEANUP_REGISTERED


# ===================================================================== property-based


# ---------------------------------------------------------------- caches
BIG = float(np.float32(1e30))


vectors = st.integers(1, 48).flatmap(lambda d: st.lists(
    st.lists(st.floats(-BIG, BIG, width=32), min_size=d, max_size=d), min_size=1,
    max_size=12))


@pytest.mark.slow  # 80 generated cases
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


@pytest.mark.slow  # 120 generated cases
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
