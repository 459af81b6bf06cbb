"""Embed image files in chunks, so that a run over a whole dataset shows progress, keeps
what it encoded in the embedder's cache as it goes, and either stops at the first
unreadable image or skips unreadable images with a warning."""

import numbers
import os
import warnings

import numpy as np
from tqdm.auto import tqdm

from .._images import to_pil
from ..exceptions import ImageInputError, SkippedImageWarning

ON_ERROR = ("stop", "skip")


def _unreadable(paths):
    """``{index: reason}`` of the paths that cannot be opened and decoded."""
    bad = {}
    for i, path in enumerate(paths):
        try:
            to_pil(path, i)
        except ImageInputError as exc:
            bad[i] = str(exc).split(": ", 1)[-1].splitlines()[0]
    return bad


def embed_files(embedder, paths, *, on_error="stop", chunk_size=None, desc="embedding",
                verbose=1):
    """Features of image files through a fitted :class:`~candle_sklearn.ClipEmbedder`.

    Parameters
    ----------
    embedder : fitted ClipEmbedder
    paths : sequence of str
    on_error : {"stop", "skip"}, default="stop"
        At an unreadable image: raise :class:`ImageInputError` naming it, or leave it
        out with a :class:`SkippedImageWarning` naming it.
    chunk_size : int, default=None
        Images per ``transform`` call (each call's embeddings reach the cache at once, and
        the progress bar moves); default 16 batches.
    desc : str
        Label of the progress bar (stderr), shown when ``verbose``.

    Returns
    -------
    features : ndarray of shape (n_kept, embed_dim)
    kept : ndarray of bool of shape (len(paths),)
        Which paths were embedded (all of them with ``on_error="stop"``).
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ImageInputError("no images: the list of paths is empty")
    chunk_size = 16 * embedder.batch_size if chunk_size is None else chunk_size
    if not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    kept = np.ones(len(paths), dtype=bool)
    out = []
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not verbose) as bar:
        for start in range(0, len(paths), chunk_size):
            chunk = paths[start:start + chunk_size]
            try:
                out.append(embedder.transform(chunk))
            except ImageInputError as exc:
                bad = _unreadable(chunk)
                if not bad:  # not a file's fault: report the embedder's own message
                    raise ImageInputError(str(exc).splitlines()[0]) from None
                if on_error == "stop":
                    i, reason = next(iter(bad.items()))
                    raise ImageInputError(f"image {chunk[i]} could not be read: {reason} "
                                          "(--on-error skip / on_error='skip' leaves such "
                                          "images out)") from None
                listed = "; ".join(f"{chunk[i]} ({r})" for i, r in bad.items())
                warnings.warn(f"skipped {len(bad)} unreadable image(s): {listed}",
                              SkippedImageWarning, stacklevel=2)
                good = [p for i, p in enumerate(chunk) if i not in bad]
                kept[[start + i for i in bad]] = False
                if good:
                    out.append(embedder.transform(good))
            bar.update(len(chunk))
    if not out:
        raise ImageInputError("none of the images could be read")
    return np.concatenate(out), kept
