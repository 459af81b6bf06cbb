"""Readers for the 11 base-to-new datasets and the 4 ImageNet variants in the layout that
CoOp and Dassl defined (``DATASETS.md`` of github.com/KaiyangZhou/CoOp), which the Candle
reference code reads too. They list paths, labels and class names; they never decode or
download an image.

Layouts (``<root>/<folder>/...``), as CoOp's ``datasets/*.py`` read them:

- split files ``split_zhou_<Name>.json``: ``{"train"|"val"|"test": [[path relative to
  the image folder, label, class name], ...]}``;
- ImageNet: ``images/train/<wnid>/*`` and ``images/val/<wnid>/*`` (the test set is the
  validation set), class names in ``classnames.txt`` (``<wnid> <name>`` per line);
- FGVC-Aircraft: ``variants.txt`` (one class per line, the label is the line number) and
  ``images_variant_{train,val,test}.txt`` (``<image id> <variant>`` per line);
- ImageNet-V2 (folders ``0``..``999``), -Sketch (1000 wnid folders), -A and -R (200 wnid
  folders each) with a copy of ImageNet's ``classnames.txt``: test sets only.
"""

import json
import os
from dataclasses import dataclass

import numpy as np
from sklearn.utils import Bunch

from ..exceptions import DatasetError
from ..templates import COOP_TEMPLATES, DEFAULT_TEMPLATE
from .folder import clean_class_name, list_images

COOP_DOCS = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lives under the root and how it is read."""

    name: str  # the name users pass: the reference's config name
    title: str  # the reference's class name (for messages)
    layouts: tuple  # (folder, image folder) pairs: CoOp's first, then other known ones
    kind: str  # "split" (split JSON), "imagenet", "aircraft" or "variant"
    n_classes: int
    split_file: str = ""
    anchor: str = ""  # section of CoOp's DATASETS.md

    @property
    def source(self):
        return f"{COOP_DOCS}#{self.anchor}"

    @property
    def template(self):
        """CoOp's prompt for the dataset (the ImageNet variants use ImageNet's)."""
        return COOP_TEMPLATES.get(self.name, DEFAULT_TEMPLATE)


_SPECS = [
    # (folder, image folder) pairs: CoOp's first, then those of Candle's own datasets/*.py
    # (from Dassl). Templates come from candle_sklearn.templates.COOP_TEMPLATES.
    DatasetSpec("imagenet", "ImageNet", (("imagenet", "images"),), "imagenet", 1000,
                anchor="imagenet"),
    DatasetSpec("caltech101", "Caltech101", (("caltech-101", "101_ObjectCategories"),
                                             ("caltech101", "101_ObjectCategories")),
                "split", 100, "split_zhou_Caltech101.json", "caltech101"),
    DatasetSpec("oxford_pets", "OxfordPets", (("oxford_pets", "images"),
                                              ("oxford-iiit-pet", "images")),
                "split", 37, "split_zhou_OxfordPets.json", "oxfordpets"),
    DatasetSpec("stanford_cars", "StanfordCars", (("stanford_cars", ""),), "split", 196,
                "split_zhou_StanfordCars.json", "stanfordcars"),
    DatasetSpec("oxford_flowers", "OxfordFlowers", (("oxford_flowers", "jpg"),
                                                    ("flowers-102", "jpg")),
                "split", 102, "split_zhou_OxfordFlowers.json", "flowers102"),
    DatasetSpec("food101", "Food101", (("food-101", "images"),), "split", 101,
                "split_zhou_Food101.json", "food101"),
    DatasetSpec("fgvc_aircraft", "FGVCAircraft", (("fgvc_aircraft", "images"),
                                                  ("fgvc-aircraft-2013b/data", "images")),
                "aircraft", 100, anchor="fgvcaircraft"),
    DatasetSpec("sun397", "SUN397", (("sun397", "SUN397"), ("SUN397", "")), "split", 397,
                "split_zhou_SUN397.json", "sun397"),
    DatasetSpec("dtd", "DescribableTextures", (("dtd", "images"), ("dtd/dtd", "images")),
                "split", 47, "split_zhou_DescribableTextures.json", "dtd"),
    DatasetSpec("eurosat", "EuroSAT", (("eurosat", "2750"),), "split", 10,
                "split_zhou_EuroSAT.json", "eurosat"),
    DatasetSpec("ucf101", "UCF101", (("ucf101", "UCF-101-midframes"),), "split", 101,
                "split_zhou_UCF101.json", "ucf101"),
    DatasetSpec("imagenetv2", "ImageNetV2",
                (("imagenetv2", "imagenetv2-matched-frequency-format-val"),), "variant",
                1000, anchor="imagenetv2"),
    DatasetSpec("imagenet_sketch", "ImageNetSketch", (("imagenet-sketch", "images"),),
                "variant", 1000, anchor="imagenet-sketch"),
    DatasetSpec("imagenet_a", "ImageNetA", (("imagenet-adversarial", "imagenet-a"),),
                "variant", 200, anchor="imagenet-a"),
    DatasetSpec("imagenet_r", "ImageNetR", (("imagenet-rendition", "imagenet-r"),),
                "variant", 200, anchor="imagenet-r"),
]
DATASETS = {spec.name: spec for spec in _SPECS}
#: The 11 datasets of the base-to-new table, in the paper's order.
BASE_TO_NEW_DATASETS = tuple(s.name for s in _SPECS if s.kind != "variant")
#: The ImageNet variants (test sets only) for domain generalisation.
IMAGENET_VARIANTS = tuple(s.name for s in _SPECS if s.kind == "variant")
_ALIASES = {"imagenet_v2": "imagenetv2", "flowers102": "oxford_flowers", "pets": "oxford_pets",
            "describable_textures": "dtd",
            # every folder name of a known layout names its dataset too ("caltech-101",
            # "food-101", "imagenet-adversarial", "oxford-iiit-pet", ...)
            **{folder.lower().replace("-", "_"): spec.name for spec in _SPECS
               for folder, _ in spec.layouts if "/" not in folder}}


def dataset_spec(name):
    """The :class:`DatasetSpec` of ``name`` (case and ``-``/``_`` insensitive)."""
    key = str(name).strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[key]


def _locate(spec, root):
    """``(dataset folder, image folder)`` of the first known layout present under root."""
    root = os.path.abspath(os.path.expanduser(os.fspath(root)))
    if not os.path.isdir(root):
        raise DatasetError(f"data root {root} is not a folder")
    for folder, images in spec.layouts:
        path = os.path.join(root, folder)
        if os.path.isdir(path):
            return path, os.path.join(path, images) if images else path
    tried = " or ".join(os.path.join(root, f) for f, _ in spec.layouts)
    raise DatasetError(f"{spec.name}: folder {tried} not found; see {spec.source} for how "
                       "to get it")


def dataset_folder(name, root):
    """The folder of dataset ``name`` under ``root``, or None when it is not there."""
    try:
        return _locate(dataset_spec(name), root)[0]
    except DatasetError:
        return None


def _need_file(spec, path):
    if not os.path.isfile(path):
        raise DatasetError(f"{spec.name}: {path} not found; see {spec.source} for where it "
                           "comes from")
    return path


def _need_dir(spec, path):
    if not os.path.isdir(path):
        raise DatasetError(f"{spec.name}: image folder {path} not found; see {spec.source}")
    return path


def _split(paths, labels):
    return Bunch(paths=np.array(paths, dtype=object), labels=np.asarray(labels, dtype=np.int64))


def _result(spec, folder, image_dir, names, class_ids, train, val, test):
    names = [str(n) for n in names]
    return Bunch(name=spec.name, title=spec.title, folder=folder, image_dir=image_dir,
                 template=spec.template, classes=np.arange(len(names)),
                 raw_class_names=np.array(names, dtype=object),
                 class_names=np.array([clean_class_name(n) for n in names], dtype=object),
                 class_ids=np.array(class_ids, dtype=object), train=train, val=val, test=test)


# ----------------------------------------------------------------- split JSON files
def _read_split_file(spec, path, image_dir):
    try:
        with open(path, encoding="utf-8") as f:
            split = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{spec.name}: {path} is not a readable split file: {exc}") from None
    if not isinstance(split, dict) or not {"train", "val", "test"} <= split.keys():
        raise DatasetError(f"{spec.name}: {path} must hold a JSON object with 'train', 'val' "
                           "and 'test' lists")
    names, labels_of = {}, {}
    parts = {}
    prefix = os.path.join(image_dir, "")
    for part in ("train", "val", "test"):
        if not isinstance(split[part], list):
            raise DatasetError(f"{spec.name}: {path}: {part!r} is {_short(split[part])}; "
                               "expected a list of [image path, label, class name]")
        paths, labels = [], []
        for i, item in enumerate(split[part]):
            if not _is_entry(item):
                raise DatasetError(f"{spec.name}: {path}: {part}[{i}] is {_short(item)}; "
                                   "expected [image path, integer label, class name]")
            rel, label, name = item
            if names.setdefault(label, name) != name:
                raise DatasetError(f"{spec.name}: {path}: label {label} is named both "
                                   f"{names[label]!r} and {name!r}")
            if labels_of.setdefault(name, label) != label:
                raise DatasetError(f"{spec.name}: {path}: class {name!r} has two labels, "
                                   f"{labels_of[name]} and {label}")
            paths.append(prefix + rel)
            labels.append(label)
        parts[part] = (paths, labels)
    return names, parts


def _is_entry(item):
    """``[path, label, name]`` with a string path and name and an integer label (JSON's
    0.9 or true is no label)."""
    return (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
            and isinstance(item[1], int) and not isinstance(item[1], bool)
            and isinstance(item[2], str))


def _short(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _load_split_dataset(spec, folder, image_dir):
    path = _need_file(spec, os.path.join(folder, spec.split_file))
    _need_dir(spec, image_dir)
    names, parts = _read_split_file(spec, path, image_dir)
    labels = sorted(names)
    if labels != list(range(len(labels))):
        # Labels are indices into the class list everywhere downstream: renumber gaps away.
        remap = {old: new for new, old in enumerate(labels)}
        parts = {k: (p, [remap[y] for y in ys]) for k, (p, ys) in parts.items()}
    ordered = [names[y] for y in labels]
    return _result(spec, folder, image_dir, ordered, ordered,
                   *(_split(*parts[k]) for k in ("train", "val", "test")))


# ----------------------------------------------------------------- FGVC-Aircraft
def _read_lines(spec, path):
    _need_file(spec, path)
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def _load_aircraft(spec, folder, image_dir):
    _need_dir(spec, image_dir)
    variants = _read_lines(spec, os.path.join(folder, "variants.txt"))
    label_of = {name: i for i, name in enumerate(variants)}
    parts = []
    for part in ("train", "val", "test"):
        path = os.path.join(folder, f"images_variant_{part}.txt")
        paths, labels = [], []
        for n, line in enumerate(_read_lines(spec, path), 1):
            image_id, _, variant = line.partition(" ")
            if variant not in label_of:
                raise DatasetError(f"{spec.name}: {path}, line {n}: variant {variant!r} is "
                                   "not in variants.txt")
            paths.append(os.path.join(image_dir, image_id + ".jpg"))
            labels.append(label_of[variant])
        parts.append(_split(paths, labels))
    return _result(spec, folder, image_dir, variants, variants, *parts)


# ----------------------------------------------------------------- ImageNet and variants
def read_imagenet_classnames(path):
    """``{wnid: class name}`` from a ``classnames.txt`` (``<wnid> <name>`` per line), in
    file order."""
    names = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            wnid, _, name = line.strip().partition(" ")
            if wnid:
                names[wnid] = name.strip()
    return names


def _classnames(spec, folder):
    return read_imagenet_classnames(_need_file(spec, os.path.join(folder, "classnames.txt")))


def _subfolders(spec, path):
    _need_dir(spec, path)
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _list_class_folders(spec, image_dir, folders, labels):
    paths, ys = [], []
    for folder, label in zip(folders, labels):
        found = list_images(os.path.join(image_dir, folder), recursive=False)
        paths.extend(found)
        ys.extend([label] * len(found))
    return _split(paths, ys)


def _name_of(spec, names, wnid, path):
    if wnid not in names:
        raise DatasetError(f"{spec.name}: folder {wnid!r} has no line in {path}")
    return names[wnid]


def _load_imagenet(spec, folder, image_dir):
    names = _classnames(spec, folder)
    txt = os.path.join(folder, "classnames.txt")
    wnids = _subfolders(spec, os.path.join(image_dir, "train"))
    if not wnids:
        raise DatasetError(f"{spec.name}: no class folders in {os.path.join(image_dir, 'train')}")
    label_of = {w: i for i, w in enumerate(wnids)}
    train = _list_class_folders(spec, os.path.join(image_dir, "train"), wnids, range(len(wnids)))
    val_wnids = _subfolders(spec, os.path.join(image_dir, "val"))
    if extra := sorted(set(val_wnids) - set(label_of)):
        raise DatasetError(f"{spec.name}: validation folders {extra[:5]} have no training "
                           "folder")
    test = _list_class_folders(spec, os.path.join(image_dir, "val"), val_wnids,
                               [label_of[w] for w in val_wnids])
    return _result(spec, folder, image_dir, [_name_of(spec, names, w, txt) for w in wnids],
                   wnids, train, None, test)


def _load_variant(spec, folder, image_dir):
    names = _classnames(spec, folder)
    txt = os.path.join(folder, "classnames.txt")
    if spec.name == "imagenetv2":  # folders 0..999 index classnames.txt's order
        wnids = list(names)
        folders = [f for f in _subfolders(spec, image_dir) if f.isdigit()]
        folders.sort(key=int)
        if bad := [f for f in folders if int(f) >= len(wnids)]:
            raise DatasetError(f"{spec.name}: folders {bad[:5]} have no line in {txt}")
        wnids = [wnids[int(f)] for f in folders]
    else:  # wnid folders; -A and -R hold 200 of the 1000 classes
        folders = wnids = _subfolders(spec, image_dir)
    if not folders:
        raise DatasetError(f"{spec.name}: no class folders in {image_dir}")
    test = _list_class_folders(spec, image_dir, folders, range(len(folders)))
    return _result(spec, folder, image_dir, [_name_of(spec, names, w, txt) for w in wnids],
                   wnids, None, None, test)


_LOADERS = {"split": _load_split_dataset, "aircraft": _load_aircraft,
            "imagenet": _load_imagenet, "variant": _load_variant}


def load_coop_dataset(name, root):
    """List the images of a reference dataset in the CoOp layout under ``root``.

    Parameters
    ----------
    name : str
        ``"imagenet"``, ``"caltech101"``, ``"oxford_pets"``, ``"stanford_cars"``,
        ``"oxford_flowers"``, ``"food101"``, ``"fgvc_aircraft"``, ``"sun397"``, ``"dtd"``,
        ``"eurosat"``, ``"ucf101"``, or an ImageNet variant: ``"imagenetv2"``,
        ``"imagenet_sketch"``, ``"imagenet_a"``, ``"imagenet_r"``.
    root : str or path
        The folder that holds the datasets (CoOp's ``$DATA``).

    Returns
    -------
    data : Bunch
        ``train``, ``val`` and ``test``: each a Bunch of ``paths`` (object array of str)
        and ``labels`` (int array), or None where the dataset has no such split (ImageNet
        has no ``val``: its validation set is the test set; the variants have ``test``
        only). ``classes``: the labels ``0..n-1``; ``class_names``: their names with the
        reference's clean-up (underscores to spaces), ``raw_class_names`` as on disk,
        ``class_ids`` (WordNet ids for the ImageNet family, else the raw names);
        ``template``: the dataset's prompt; ``name``, ``title``, ``folder``, ``image_dir``.

    Raises
    ------
    DatasetError
        Unknown name, or a missing folder or file: the message names it and where the
        dataset comes from.

    Examples
    --------
    >>> from candle_sklearn.datasets import load_coop_dataset
    >>> pets = load_coop_dataset("oxford_pets", "~/data")  # doctest: +SKIP
    >>> pets.train.paths[0], pets.class_names[pets.train.labels[0]]  # doctest: +SKIP
    ('/home/me/data/oxford_pets/images/Abyssinian_1.jpg', 'abyssinian')
    """
    spec = dataset_spec(name)
    folder, image_dir = _locate(spec, root)
    return _LOADERS[spec.kind](spec, folder, image_dir)


def check_coop_dataset(name, root):
    """Raise :class:`DatasetError` if the folders and index files of dataset ``name`` are
    not under ``root`` (without listing any image); return its :class:`DatasetSpec`."""
    spec = dataset_spec(name)
    folder, image_dir = _locate(spec, root)
    _need_dir(spec, image_dir)
    files = {"split": [spec.split_file], "imagenet": ["classnames.txt"],
             "variant": ["classnames.txt"],
             "aircraft": ["variants.txt", *(f"images_variant_{p}.txt"
                                            for p in ("train", "val", "test"))]}[spec.kind]
    for f in files:
        _need_file(spec, os.path.join(folder, f))
    return spec


def find_coop_datasets(root, names=BASE_TO_NEW_DATASETS):
    """The datasets among ``names`` whose folder exists under ``root``."""
    return [n for n in names if dataset_folder(n, root) is not None]


__all__ = ["BASE_TO_NEW_DATASETS", "DATASETS", "IMAGENET_VARIANTS", "DatasetSpec",
           "check_coop_dataset", "dataset_folder", "dataset_spec", "find_coop_datasets",
           "load_coop_dataset", "read_imagenet_classnames"]
