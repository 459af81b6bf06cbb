"""Tiny datasets on disk in the exact layouts the readers expect (CoOp / Dassl, image
folders), made of image-world pictures that the bundled tiny CLIP knows."""

import json
import os

import numpy as np
from PIL import Image

from candle_sklearn.datasets import render_world_image, world_classes

# Eight compositions, stored as the split files store names: lower case, underscores.
WORLD8 = ["solid_red_circle", "solid_blue_square", "striped_green_triangle",
          "solid_yellow_star", "striped_purple_diamond", "solid_orange_cross",
          "striped_red_star", "solid_green_circle"]
assert all(n.replace("_", " ") in world_classes() for n in WORLD8)


def _save(path, name, rng):
    """A world image of ``name`` (any other name gets a fixed composition)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    name = name.replace("_", " ")
    if name not in world_classes():
        name = WORLD8[sum(map(ord, name)) % len(WORLD8)].replace("_", " ")
    arr = render_world_image(name, rng, domain="downstream")
    Image.fromarray(arr).save(path)


def write_split_dataset(root, folder="oxford_pets", image_dir="images",
                        split_file="split_zhou_OxfordPets.json", names=WORLD8,
                        n_train=(6, 5, 5, 4, 4, 3, 3, 2), n_val=1, n_test=3, seed=0,
                        sub_folders=False):
    """A split-file dataset: images named like Oxford Pets' (``<Name>_<i>.jpg``, flat)
    or DTD's (``<class>/<class>_<i>.jpg`` when ``sub_folders``)."""
    rng = np.random.default_rng(seed)
    base = os.path.join(root, folder)
    split = {"train": [], "val": [], "test": []}
    counter = 0
    for label, name in enumerate(names):
        sizes = {"train": n_train[label], "val": n_val, "test": n_test}
        for part, n in sizes.items():
            for _ in range(n):
                counter += 1
                stem = f"{name.title() if not sub_folders else name}_{counter}.jpg"
                rel = f"{name}/{stem}" if sub_folders else stem
                _save(os.path.join(base, image_dir, rel), name, rng)
                split[part].append([rel, label, name])
    with open(os.path.join(base, split_file), "w") as f:
        json.dump(split, f)
    return base


def write_aircraft(root, names=("707-320", "A300B4", "Cessna 172", "F/A-18"), n=(3, 2, 2, 1),
                   seed=0):
    """FGVC-Aircraft's files: variants.txt and images_variant_{train,val,test}.txt (names
    with spaces and slashes), images/<id>.jpg (world images stand in)."""
    rng = np.random.default_rng(seed)
    base = os.path.join(root, "fgvc_aircraft")
    with open(os.path.join(_mkdir(base), "variants.txt"), "w") as f:
        f.write("\n".join(names) + "\n")
    image_id = 1000000
    for part in ("train", "val", "test"):
        lines = []
        for label, name in enumerate(names):
            for _ in range(n[label] if part == "train" else 1):
                image_id += 1
                _save(os.path.join(base, "images", f"{image_id}.jpg"), WORLD8[label], rng)
                lines.append(f"{image_id} {name}")
        with open(os.path.join(base, f"images_variant_{part}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return base


WNIDS = [f"n0{1440764 + 17 * i}" for i in range(len(WORLD8))]


def write_classnames(path, wnids=WNIDS, names=WORLD8):
    with open(path, "w") as f:
        f.write("".join(f"{w} {n.replace('_', ' ')}\n" for w, n in zip(wnids, names)))


def write_imagenet(root, n_train=(5, 5, 4, 4, 3, 3, 2, 2), n_val=2, seed=0):
    """imagenet/images/{train,val}/<wnid>/*.JPEG and classnames.txt."""
    rng = np.random.default_rng(seed)
    base = os.path.join(root, "imagenet")
    for part in ("train", "val"):
        for label, (wnid, name) in enumerate(zip(WNIDS, WORLD8)):
            for i in range(n_train[label] if part == "train" else n_val):
                _save(os.path.join(base, "images", part, wnid, f"{wnid}_{i}.JPEG"), name, rng)
    write_classnames(os.path.join(base, "classnames.txt"))
    return base


def write_variant(root, folder="imagenet-adversarial", image_dir="imagenet-a",
                  keep=(1, 3, 5), n=2, seed=1, numbered=False):
    """An ImageNet variant: wnid folders (or 0..999 for -V2) of a class subset, a copy
    of classnames.txt and, for -A/-R, the README.txt that the reference skips."""
    rng = np.random.default_rng(seed)
    base = os.path.join(root, folder)
    for label in keep:
        sub = str(label) if numbered else WNIDS[label]
        for i in range(n):
            _save(os.path.join(base, image_dir, sub, f"{i}.jpg"), WORLD8[label], rng)
    with open(os.path.join(base, image_dir, "README.txt"), "w") as f:
        f.write("not a class\n")
    write_classnames(os.path.join(base, "classnames.txt"))
    return base


def write_image_folder(root, names=WORLD8[:6], n=(6, 5, 4, 3, 2, 2), seed=0, ext=".png"):
    """<root>/<class>/<i>.png, plus a hidden file and a hidden folder to be skipped."""
    rng = np.random.default_rng(seed)
    for name, k in zip(names, n):
        for i in range(k):
            _save(os.path.join(root, name, f"{i}{ext}"), name, rng)
    with open(os.path.join(root, names[0], ".DS_Store"), "w") as f:
        f.write("junk")
    os.makedirs(os.path.join(root, ".thumbnails"), exist_ok=True)
    return root


def _mkdir(path):
    os.makedirs(path, exist_ok=True)
    return path


#: The split-file datasets with image paths and class names as the real split files
#: have them (CoOp's renamed classes, paths whose folder is not the class name, names
#: with spaces, capitals and slashes in the path): dataset -> (folder, image folder,
#: split file, [(path pattern, class name), ...]).
REAL_SPLITS = {
    "caltech101": ("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json",
                   [("Faces/image_{i:04d}.jpg", "face"),
                    ("Leopards/image_{i:04d}.jpg", "leopard"),
                    ("yin_yang/image_{i:04d}.jpg", "yin_yang")]),
    "oxford_pets": ("oxford_pets", "images", "split_zhou_OxfordPets.json",
                    [("Abyssinian_{i}.jpg", "abyssinian"),
                     ("american_bulldog_{i}.jpg", "american_bulldog")]),
    "stanford_cars": ("stanford_cars", "", "split_zhou_StanfordCars.json",
                      [("cars_train/{i:05d}.jpg", "2000 AM General Hummer SUV"),
                       ("cars_test/{i:05d}.jpg", "2012 Acura TL Sedan")]),
    "oxford_flowers": ("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json",
                       [("image_{i:05d}.jpg", "pink primrose"),
                        ("image_1{i:04d}.jpg", "globe thistle")]),
    "food101": ("food-101", "images", "split_zhou_Food101.json",
                [("apple_pie/{i}.jpg", "apple_pie"),
                 ("baby_back_ribs/{i}.jpg", "baby_back_ribs")]),
    "sun397": ("sun397", "SUN397", "split_zhou_SUN397.json",
               [("a/abbey/sun_{i}.jpg", "abbey"),
                ("a/apartment_building/outdoor/sun_{i}.jpg", "outdoor apartment_building")]),
    "dtd": ("dtd", "images", "split_zhou_DescribableTextures.json",
            [("banded/banded_{i:04d}.jpg", "banded"),
             ("zigzagged/zigzagged_{i:04d}.jpg", "zigzagged")]),
    "eurosat": ("eurosat", "2750", "split_zhou_EuroSAT.json",
                [("AnnualCrop/AnnualCrop_{i}.jpg", "Annual Crop Land"),
                 ("HerbaceousVegetation/HerbaceousVegetation_{i}.jpg",
                  "Herbaceous Vegetation Land")]),
    "ucf101": ("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json",
               [("Apply_Eye_Makeup/v_ApplyEyeMakeup_g{i:02d}_c01.jpg", "Apply_Eye_Makeup"),
                ("Yo_Yo/v_YoYo_g{i:02d}_c01.jpg", "Yo_Yo")]),
}


def write_real_split(root, dataset, seed=0):
    """``dataset`` of :data:`REAL_SPLITS` with one image per class in each of train,
    val and test (world images stand in)."""
    folder, image_dir, split_file, classes = REAL_SPLITS[dataset]
    rng = np.random.default_rng(seed)
    base = os.path.join(root, folder)
    split, i = {"train": [], "val": [], "test": []}, 0
    for part in split:
        for label, (pattern, name) in enumerate(classes):
            i += 1
            rel = pattern.format(i=i)
            _save(os.path.join(base, image_dir, rel), WORLD8[label], rng)
            split[part].append([rel, label, name])
    with open(os.path.join(_mkdir(base), split_file), "w") as f:
        json.dump(split, f)
    return base
