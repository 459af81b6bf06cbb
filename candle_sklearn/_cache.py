"""Embedding caches keyed by (model, image key): a process-wide one in memory, shared
by every clone of an embedder, and an optional on-disk one (SQLite) that survives the
process."""

import sqlite3
import threading
from pathlib import Path

import numpy as np


class MemoryCache:
    def __init__(self):
        self._data = {}
        self._lock = threading.Lock()

    def get_many(self, model_key, keys):
        with self._lock:
            table = self._data.get(model_key, {})
            return {k: table[k] for k in keys if k in table}

    def put_many(self, model_key, items):
        with self._lock:
            self._data.setdefault(model_key, {}).update(items)

    def clear(self):
        with self._lock:
            self._data.clear()

    def __len__(self):
        return sum(len(t) for t in self._data.values())


class DiskCache:
    """Embeddings in ``directory/embeddings.sqlite``; safe across processes."""

    def __init__(self, directory):
        self.path = Path(directory).expanduser() / "embeddings.sqlite"

    def _connect(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=60)
        con.execute("CREATE TABLE IF NOT EXISTS emb (model TEXT, key TEXT, dim INTEGER, "
                    "vec BLOB, PRIMARY KEY (model, key))")
        return con

    def get_many(self, model_key, keys):
        found = {}
        con = self._connect()
        try:
            for start in range(0, len(keys), 500):  # SQLite's bound-parameter limit
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                rows = con.execute(f"SELECT key, vec FROM emb WHERE model = ? AND key IN "
                                   f"({marks})", [model_key, *chunk])
                found.update((k, np.frombuffer(v, dtype=np.float32)) for k, v in rows)
        finally:
            con.close()
        return found

    def put_many(self, model_key, items):
        con = self._connect()
        try:
            with con:
                con.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?, ?, ?)",
                                [(model_key, k, len(v), np.asarray(v, np.float32).tobytes())
                                 for k, v in items.items()])
        finally:
            con.close()


MEMORY = MemoryCache()


def caches_for(setting):
    """The caches a ``cache`` parameter asks for: False, True or a directory."""
    if setting is False or setting is None:
        return []
    if setting is True:
        return [MEMORY]
    return [MEMORY, DiskCache(setting)]
