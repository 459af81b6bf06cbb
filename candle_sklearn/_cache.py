"""Embedding caches keyed by (model fingerprint, image key): a process-wide one in
memory, shared by every clone of an embedder; an on-disk one (SQLite) that survives the
process; and a temporary on-disk one that the worker processes of a parallel search
share with their parent.

The disk cache repairs what it can (a corrupt file is moved aside and rebuilt, rows of
the wrong length are ignored) with an EmbeddingCacheWarning, raises an
EmbeddingCacheError naming the file where it cannot, and never loses finished
encodings: a failed write warns and leaves them in memory."""

import atexit
import collections
import hashlib
import multiprocessing
import os
import shutil
import sqlite3
import stat
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from .exceptions import EmbeddingCacheError, EmbeddingCacheWarning

FILE_NAME = "embeddings.sqlite"
# A name of our own, versioned: a foreign table in the same file cannot collide, and a
# change of layout starts afresh instead of misreading old rows.
TABLE = "candle_embeddings_v1"
_COLUMNS = ["model", "key", "dim", "vec", "checksum"]
_SQL_CHUNK = 500  # SQLite's bound-parameter limit is 999 in old builds


# The memory cache keeps at most this many MiB of embeddings (least recently used go
# first): a long-running service embedding a stream of new images must not grow forever.
MEMORY_LIMIT_ENV = "CANDLE_SKLEARN_MEMORY_CACHE_MB"
DEFAULT_MEMORY_LIMIT_MB = 4096  # 2 million 512-d embeddings


def _memory_limit_bytes():
    value = os.environ.get(MEMORY_LIMIT_ENV)
    try:
        mb = DEFAULT_MEMORY_LIMIT_MB if value is None else float(value)
    except ValueError:
        raise ValueError(f"{MEMORY_LIMIT_ENV}={value!r} is not a number of MiB") from None
    return mb * 2**20


class MemoryCache:
    """Embeddings by (model key, image key), least recently used evicted beyond
    ``CANDLE_SKLEARN_MEMORY_CACHE_MB`` (default 4096)."""

    def __init__(self):
        self._data = collections.OrderedDict()  # (model key, image key) -> vector
        self._bytes = 0
        self._lock = threading.Lock()

    def get_many(self, model_key, keys, dim=None):
        with self._lock:
            found = {}
            for k in keys:
                if (v := self._data.get((model_key, k))) is not None:
                    self._data.move_to_end((model_key, k))
                    found[k] = v
            return found

    def put_many(self, model_key, items):
        limit = _memory_limit_bytes()
        with self._lock:
            for k, v in items.items():
                v = v if v.base is None else v.copy()  # a row must not pin its batch
                if (old := self._data.pop((model_key, k), None)) is not None:
                    self._bytes -= old.nbytes
                self._data[(model_key, k)] = v
                self._bytes += v.nbytes
            while self._bytes > limit and self._data:
                self._bytes -= self._data.popitem(last=False)[1].nbytes

    def clear(self):
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def __len__(self):
        return len(self._data)


def _corrupt(exc):
    """SQLite errors that mean the file itself is damaged (not busy, not read-only)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return (name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
            or "malformed" in str(exc) or "unsupported file format" in str(exc))


def _reason(exc):
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class DiskCache:
    """Embeddings in ``directory/embeddings.sqlite``; safe across processes.

    ``strict=False`` (the automatic session cache) turns every problem into a warning:
    the user never asked for that cache, so it must never stop them.
    """

    def __init__(self, directory, *, strict=True):
        self.path = Path(directory).expanduser() / FILE_NAME
        self.strict = strict
        self._opened = None  # (device, inode) of the file last opened

    def _identity(self):
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    # ------------------------------------------------------------ opening
    def _connect(self):
        """A connection with our table in place; corrupt files are moved aside."""
        for attempt in range(2):
            try:
                return self._try_connect()
            except sqlite3.DatabaseError as exc:
                if not _corrupt(exc) or attempt:
                    raise self._error("cannot be opened", exc) from None
                self._move_aside(f"{type(exc).__name__}: {exc}")
        raise AssertionError("unreachable")  # pragma: no cover

    def _try_connect(self):
        if self.path.is_dir():
            raise EmbeddingCacheError(
                f"the embedding cache {self.path} is a directory, not a file; remove it "
                "or pass another folder as cache=")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.path, timeout=60)
        except (OSError, sqlite3.Error) as exc:
            raise self._error("cannot be created", exc) from None
        self._opened = self._identity()
        try:
            columns = [row[1] for row in con.execute(f"PRAGMA table_info({TABLE})")]
            if columns and columns != _COLUMNS:
                con.close()
                self._move_aside(f"table {TABLE} has columns {columns}")
                return self._try_connect()
            if not columns:
                con.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (model TEXT, key TEXT, "
                            "dim INTEGER, vec BLOB, checksum BLOB, PRIMARY KEY (model, key))")
                con.commit()
        except sqlite3.OperationalError as exc:
            if "readonly" not in str(exc):  # read-only and new: nothing to read
                con.close()
                raise
        except BaseException:
            con.close()
            raise
        return con

    def _error(self, what, exc):
        return EmbeddingCacheError(
            f"the embedding cache {self.path} {what}: {_reason(exc)}. Pass a writable "
            "folder as cache=, or cache=True to keep embeddings in memory only")

    def _move_aside(self, why):
        """Rename an unreadable cache file (and its journal) and start a new one."""
        if self._opened is not None and self._identity() != self._opened:
            return  # another process moved it and started a new one: keep that one
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.bad-{stamp}-{os.getpid()}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return  # another process moved it already
        except OSError as exc:
            raise EmbeddingCacheError(
                f"the embedding cache {self.path} is unreadable ({why}) and could not be "
                f"moved aside ({_reason(exc)}); delete it, or pass another folder as "
                "cache=") from None
        for suffix in ("-journal", "-wal", "-shm"):
            companion = self.path.with_name(self.path.name + suffix)
            try:  # gone already (SQLite or another process removed it) is fine
                os.replace(companion, aside.with_name(aside.name + suffix))
            except FileNotFoundError:
                pass
            except OSError as exc:
                warnings.warn(f"could not move {companion} aside: {_reason(exc)}",
                              EmbeddingCacheWarning, stacklevel=4)
        warnings.warn(f"the embedding cache {self.path} was unreadable ({why}); moved it "
                      f"to {aside.name} and started a new one", EmbeddingCacheWarning,
                      stacklevel=4)

    # ------------------------------------------------------------ reading
    def get_many(self, model_key, keys, dim=None):
        """Cached embeddings of ``keys`` (rows of the wrong length are left out)."""
        try:
            return self._read(model_key, keys, dim)
        except EmbeddingCacheError as exc:
            if self.strict:
                raise
            warnings.warn(str(exc), EmbeddingCacheWarning, stacklevel=3)
            return {}

    def _read(self, model_key, keys, dim):
        found, bad = {}, 0
        for attempt in range(2):
            con = self._connect()
            try:
                rows = []
                for start in range(0, len(keys), _SQL_CHUNK):
                    chunk = keys[start:start + _SQL_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    rows += con.execute(f"SELECT key, dim, vec, checksum FROM {TABLE} WHERE model = ? "
                                        f"AND key IN ({marks})", [model_key, *chunk]).fetchall()
                break
            except sqlite3.DatabaseError as exc:
                if "no such table" in str(exc):  # read-only file without our table
                    return {}
                if not _corrupt(exc) or attempt:
                    raise self._error("cannot be read", exc) from None
                self._move_aside(f"{type(exc).__name__}: {exc}")
            finally:
                con.close()
        else:  # pragma: no cover
            rows = []
        for key, row_dim, vec, checksum in rows:
            emb = _decode(model_key, key, vec, checksum, row_dim, dim)
            if emb is None:
                bad += 1
            else:
                found[key] = emb
        if bad:
            warnings.warn(f"{bad} cached embedding(s) in {self.path} were damaged (wrong "
                          "length, checksum or values); they were ignored and are encoded again",
                          EmbeddingCacheWarning, stacklevel=4)
        return found

    # ------------------------------------------------------------ writing
    def put_many(self, model_key, items):
        """Store embeddings; on failure warn (they stay in the memory cache)."""
        rows = []
        for k, v in items.items():
            vec = np.asarray(v, np.float32).tobytes()
            rows.append((model_key, k, len(v), vec, _checksum(model_key, k, vec)))
        for attempt in range(2):
            try:
                self._write(rows)
                return True
            except (sqlite3.Error, OSError, ValueError) as exc:  # EmbeddingCacheError too
                if isinstance(exc, sqlite3.DatabaseError) and _corrupt(exc) and not attempt:
                    try:
                        self._move_aside(f"{type(exc).__name__}: {exc}")
                        continue
                    except EmbeddingCacheError as moved:
                        exc = moved
                warnings.warn(
                    f"could not store {len(rows)} new embedding(s) in {self.path} "
                    f"({_reason(exc)}); they are kept in this process's memory, but another "
                    "process will encode them again", EmbeddingCacheWarning, stacklevel=3)
                return False
        return False  # pragma: no cover


    def _write(self, rows):
        con = self._connect()
        try:
            with con:
                con.executemany(f"INSERT OR REPLACE INTO {TABLE} VALUES (?, ?, ?, ?, ?)", rows)
        finally:
            con.close()


def _checksum(model_key, key, vec):
    """Eight bytes over a row's identity and vector: a flipped bit, a truncated blob or
    a row copied under another key is detected rather than served."""
    h = hashlib.blake2b(digest_size=8)
    for part in (model_key.encode(), key.encode("utf-8", "surrogatepass"), vec):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.digest()


def _decode(model_key, key, vec, checksum, row_dim, dim):
    """The float32 vector of a row, or None when the row is damaged."""
    if not (isinstance(vec, bytes) and isinstance(key, str) and isinstance(row_dim, int)):
        return None
    if len(vec) != 4 * row_dim:
        return None
    if (dim is not None and row_dim != dim) or checksum != _checksum(model_key, key, vec):
        return None
    emb = np.frombuffer(vec, dtype=np.float32)
    return emb if np.isfinite(emb).all() else None


MEMORY = MemoryCache()


# ---------------------------------------------- the session cache of a search
def _session_root():
    try:
        user = str(os.getuid())
    except AttributeError:  # pragma: no cover - Windows
        import getpass
        user = getpass.getuser()
    return Path(tempfile.gettempdir()) / f"candle_sklearn-{user}"


def _session_folder(pid):
    return _session_root() / f"session-{pid}"


def _private_session_root():
    """The session root, made private to this user (mode 0700); None, with a warning,
    where it is a link or another user's: whoever can write there could plant rows
    (their checksums are no secret) that this user's workers would read."""
    root = _session_root()
    try:
        root.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(root)
        if hasattr(os, "getuid") and not stat.S_ISLNK(st.st_mode) \
                and st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.chmod(root, 0o700)  # made by an older version, with default permissions
            st = os.lstat(root)
    except OSError:
        return None
    if hasattr(os, "getuid") and (stat.S_ISLNK(st.st_mode) or st.st_uid != os.getuid()
                                  or st.st_mode & 0o077):
        warnings.warn(f"{root} is not private to this user (a link, another user's, or "
                      "open to others): the embedding cache shared by a parallel search's "
                      "workers is off", EmbeddingCacheWarning, stacklevel=3)
        return None
    return root


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _sweep_stale_sessions():
    """Remove the session folders of parents that died without cleaning up."""
    if sys.platform == "win32":  # pragma: no cover - os.kill(pid, 0) would kill
        return
    try:
        entries = list(_session_root().glob("session-*"))
    except OSError:
        return
    for entry in entries:
        pid = entry.name.split("-", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


_SWEPT = []
_CLEANUP_REGISTERED = []


def clear_session_cache():
    """Remove this process's session cache (its workers' shared embeddings)."""
    shutil.rmtree(_session_folder(os.getpid()), ignore_errors=True)


def session_cache():
    """In a worker process (joblib, multiprocessing): a temporary disk cache shared with
    its parent and siblings, so that the folds of a parallel search do not each encode
    every image again. In the parent: that cache when its workers made one (a refit
    then reads what they encoded); it is removed when the parent exits."""
    parent = multiprocessing.parent_process()
    if parent is None:
        _register_cleanup()
        folder = _session_folder(os.getpid())
        if not folder.is_dir() or _private_session_root() is None:
            return None
        return DiskCache(folder, strict=False)
    if _private_session_root() is None:
        return None
    if not _SWEPT:
        _SWEPT.append(True)
        _sweep_stale_sessions()
    return DiskCache(_session_folder(parent.pid), strict=False)


def _register_cleanup():
    """Remove this process's session folder when it exits. Registered at import in a
    main process too: a parent that never embeds itself (``cross_val_score(...,
    n_jobs=2)``) still owns what its workers wrote."""
    if not _CLEANUP_REGISTERED:
        _CLEANUP_REGISTERED.append(True)
        atexit.register(clear_session_cache)


def caches_for(setting, *, disk=True):
    """The caches a ``cache`` parameter asks for: False, True or a directory.
    ``disk=False`` (random weights, which no other process shares) keeps to memory."""
    if not isinstance(setting, (str, os.PathLike)) and setting is not None:
        setting = bool(setting)  # numpy's True_ and False_ are booleans too
    if setting is False or setting is None:
        return []
    caches = [MEMORY]
    if not disk:
        return caches
    if setting is True:
        session = session_cache()
        return caches + [session] if session is not None else caches
    return caches + [DiskCache(setting)]


if multiprocessing.parent_process() is None:
    _register_cleanup()
