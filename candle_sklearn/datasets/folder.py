"""Image folders: one sub-folder per class (torchvision's ``ImageFolder`` layout), loose
files, folders and globs to predict on, and text files of class names."""

import glob
import os
import warnings
from collections import Counter

import numpy as np
from sklearn.utils import Bunch

from ..exceptions import DatasetError

#: Extensions read as images (torchvision's ``IMG_EXTENSIONS``), compared in lower case.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def clean_class_name(name):
    """The clean-up the reference applies before prompting: underscores become spaces."""
    return str(name).replace("_", " ")


def _is_image(name, extensions):
    return not name.startswith(".") and name.lower().endswith(extensions)


def list_images(folder, extensions=IMG_EXTENSIONS, recursive=True):
    """Sorted paths of the image files in ``folder`` (and its sub-folders when
    ``recursive``); hidden files and hidden folders are skipped."""
    extensions = tuple(e.lower() for e in extensions)
    if not recursive:  # the fast path for ImageNet-sized class folders
        prefix = os.path.join(folder, "")
        with os.scandir(folder) as entries:
            names = [e.name for e in entries if _is_image(e.name, extensions)
                     and not e.is_dir()]
        names.sort()
        return [prefix + name for name in names]
    return sorted(_walk_images(folder, extensions))


def _walk_images(folder, extensions, skipped=None):
    """The image files under ``folder`` (lower-case ``extensions``), unsorted; the visible
    files that are not images are counted by extension into ``skipped`` (a Counter)."""
    found, listed = [], set()
    for parent, dirs, files in os.walk(folder, followlinks=True, onerror=_unreadable):
        # links are followed, but each folder is listed once: a link back up the tree
        # (a loop) or a second link to the same folder would list its images again
        st = os.stat(parent)
        if (st.st_dev, st.st_ino) in listed:
            dirs[:] = []
            continue
        listed.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # first name wins
        for f in files:
            if _is_image(f, extensions):
                found.append(os.path.join(parent, f))
            elif skipped is not None and not f.startswith("."):
                skipped[os.path.splitext(f)[1].lower()] += 1
    return found


def _unreadable(exc):
    """os.walk skips a folder it cannot open; its images must not vanish silently."""
    raise DatasetError(f"{exc.filename}: folder could not be read "
                       f"({exc.strerror or exc})") from None


def load_image_folder(root, *, extensions=IMG_EXTENSIONS, allow_empty=False):
    """List an image folder with one sub-folder per class.

    As torchvision's ``ImageFolder``: classes are the sub-folder names, sorted; images
    are the files with an image extension (any case) anywhere below a class folder;
    hidden files and folders are skipped. Nothing is decoded.

    Parameters
    ----------
    root : str or path
    extensions : tuple of str, default=IMG_EXTENSIONS
    allow_empty : bool, default=False
        Keep class folders without images (as classes without training images) instead
        of raising.

    Returns
    -------
    data : Bunch
        ``paths`` (object array of str), ``labels`` (the class folder of each image),
        ``classes`` (sorted folder names) and ``class_names`` (the names used in prompts:
        underscores become spaces).

    Raises
    ------
    DatasetError
        ``root`` is not a folder, has no class folder, or a class folder has no image.

    Examples
    --------
    >>> from candle_sklearn.datasets import load_image_folder
    >>> data = load_image_folder("photos/train")  # doctest: +SKIP
    >>> pipe.fit(data.paths, data.labels)  # doctest: +SKIP
    """
    root = os.path.expanduser(os.fspath(root))
    if not os.path.isdir(root):
        raise DatasetError(f"image folder {root} not found (or not a folder)")
    with os.scandir(root) as entries:
        classes = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DatasetError(f"image folder {root} has no class sub-folders (expected "
                           f"{os.path.join(root, '<class>', '<image>')})")
    paths, labels = [], []
    for name in classes:
        found = list_images(os.path.join(root, name), extensions)
        if not found and not allow_empty:
            raise DatasetError(f"class folder {os.path.join(root, name)} has no images "
                               f"(extensions {', '.join(extensions)})")
        paths.extend(found)
        labels.extend([name] * len(found))
    return Bunch(paths=np.array(paths, dtype=object), labels=np.array(labels, dtype=object),
                 classes=np.array(classes, dtype=object),
                 class_names=np.array([clean_class_name(c) for c in classes], dtype=object))


def find_images(inputs, extensions=IMG_EXTENSIONS):
    """Image paths from ``inputs``: files (taken as given), folders (their images,
    recursively) and glob patterns (``*``, ``?``, ``[...]``, ``**``), in input order,
    each path once.

    Warns (``UserWarning``) when inputs name an image already found (``./a.jpg`` and
    ``a.jpg``, a file inside a folder also given, a link), and when folders hold files
    that are skipped because their extension is not in ``extensions`` (a ``.gif``, say),
    with their count: the output then has fewer rows than the user may expect.

    Raises
    ------
    DatasetError
        An input that is neither a file nor a folder, or a folder or pattern that
        matches no image.
    """
    lowered = tuple(e.lower() for e in extensions)
    seen, out, repeated = set(), [], []  # by real path: ./a.jpg, a.jpg and a link: one
    skipped, counted = Counter(), set()  # files skipped, in folders counted once each
    for item in inputs:
        item = os.path.expanduser(os.fspath(item))
        if os.path.isfile(item):
            found = [item]
        elif os.path.isdir(item):
            folder = os.path.realpath(item)  # a folder given twice: its skipped files once
            found = sorted(_walk_images(item, lowered, None if folder in counted else skipped))
            counted.add(folder)
        elif glob.has_magic(item):
            found = sorted(p for p in glob.glob(item, recursive=True)
                           if os.path.isfile(p) and _is_image(os.path.basename(p), extensions))
        else:
            raise DatasetError(f"{item}: no such file or folder")
        if not found:
            raise DatasetError(f"{item}: no images found (extensions {', '.join(extensions)})")
        for path in found:
            if (real := os.path.realpath(path)) not in seen:
                seen.add(real)
                out.append(path)
            else:
                repeated.append(path)
    if repeated:
        warnings.warn(f"{len(repeated)} input(s) named an image already listed (for example "
                      f"{repeated[0]}); each image is read once, so there are "
                      f"{len(out)} images", UserWarning, stacklevel=2)
    if skipped:
        kinds = ", ".join(f"{n} {ext or 'without extension'}"
                          for ext, n in skipped.most_common())
        warnings.warn(f"skipped {sum(skipped.values())} file(s) in the folders that are not "
                      f"images by their extension ({kinds}); images are "
                      f"{', '.join(extensions)}", UserWarning, stacklevel=2)
    return out


def read_class_names(path):
    """Class names from a text file (UTF-8, with or without a byte-order mark), one per
    line; blank lines and lines starting with ``#`` are skipped, surrounding spaces
    stripped. A ``#`` inside a line is part of the name."""
    path = os.path.expanduser(os.fspath(path))
    try:
        with open(path, encoding="utf-8-sig") as f:  # Notepad's BOM is no class name
            names = [s.strip() for s in f]
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"class-name file {path} could not be read: "
                           f"{getattr(exc, 'strerror', None) or exc}") from None
    names = [s for s in names if s and not s.startswith("#")]
    if dup := sorted(s for s, n in Counter(names).items() if n > 1):
        raise DatasetError(f"class-name file {path} repeats {dup[:5]}")
    return names
