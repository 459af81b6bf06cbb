"""Content fingerprints of weight files, so that caches key on the weights themselves
rather than on their name: a checkpoint overwritten in place gets a new fingerprint."""

import hashlib
import json
import os
import threading

_DIGESTS: dict = {}  # absolute path -> ((mtime_ns, size, inode, ctime_ns), sha256 hex)
_LOCK = threading.Lock()


def file_sha256(path):
    """SHA-256 of a file's bytes, computed once per path, modification and change time,
    size and inode (a copy that keeps the old modification time still changes the
    change time)."""
    path = os.path.abspath(path)
    st = os.stat(path)
    stamp = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)
    with _LOCK:
        cached = _DIGESTS.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    with _LOCK:
        _DIGESTS[path] = (stamp, digest)
    return digest


def combine(**parts):
    """One SHA-256 over JSON-able parts (weights digest, configs, options)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()
