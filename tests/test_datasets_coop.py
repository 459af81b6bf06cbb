"""Readers of the reference benchmarks on disk (candle_sklearn.datasets.coop): the CoOp /
Dassl layouts, on generated fixtures in the exact layouts."""

import json
import os

import numpy as np
import pytest

from candle_sklearn.datasets import (BASE_TO_NEW_DATASETS, DATASETS, IMAGENET_VARIANTS,
                                     DatasetError, dataset_spec, find_coop_datasets,
                                     load_coop_dataset)

from .disk_layouts import (REAL_SPLITS, WNIDS, WORLD8, write_aircraft, write_imagenet,
                           write_real_split, write_split_dataset, write_variant)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("coop"))
    write_split_dataset(root)  # oxford_pets
    write_split_dataset(root, "dtd", "images", "split_zhou_DescribableTextures.json",
                        sub_folders=True, n_train=(2,) * 8, n_test=1)
    write_split_dataset(root, "stanford_cars", "", "split_zhou_StanfordCars.json",
                        n_train=(1,) * 8, n_test=1)
    write_split_dataset(root, "SUN397", "", "split_zhou_SUN397.json",  # the reference's own
                        n_train=(1,) * 8, n_test=1)                    # folder name
    write_aircraft(root)
    write_imagenet(root, n_train=(2,) * 8, n_val=1)
    write_variant(root)  # imagenet-adversarial: 3 of the 8 classes
    write_variant(root, "imagenetv2", "imagenetv2-matched-frequency-format-val", keep=range(8),
                  n=1, numbered=True)
    return root


def test_split_file_dataset(root):
    pets = load_coop_dataset("oxford_pets", root)
    assert pets.classes.tolist() == list(range(8))
    assert pets.raw_class_names.tolist() == WORLD8
    assert pets.class_names[0] == "solid red circle"  # underscores become spaces
    assert pets.template == "a photo of a {}, a type of pet."
    assert (len(pets.train.paths), len(pets.val.paths), len(pets.test.paths)) == (32, 8, 24)
    assert np.bincount(pets.train.labels).tolist() == [6, 5, 5, 4, 4, 3, 3, 2]
    assert all(p.startswith(os.path.join(root, "oxford_pets", "images") + os.sep)
               for p in pets.train.paths)
    assert all(os.path.isfile(p) for p in pets.test.paths)
    with open(os.path.join(root, "oxford_pets", "split_zhou_OxfordPets.json")) as f:
        first = json.load(f)["train"][0]
    assert pets.train.paths[0].endswith(first[0]) and pets.train.labels[0] == first[1]


def test_other_image_folders(root):
    dtd = load_coop_dataset("dtd", root)
    assert dtd.template == "{} texture." and os.path.isfile(dtd.train.paths[0])
    assert os.sep + os.path.join("images", WORLD8[0]) + os.sep in dtd.train.paths[0]
    cars = load_coop_dataset("Stanford-Cars", root)  # names: any case, - or _
    assert cars.image_dir == cars.folder and os.path.isfile(cars.test.paths[0])
    sun = load_coop_dataset("sun397", root)  # found under the alternative folder SUN397/
    assert sun.folder.endswith("SUN397") and os.path.isfile(sun.train.paths[0])


def test_fgvc_aircraft(root):
    air = load_coop_dataset("fgvc_aircraft", root)
    assert air.class_names.tolist() == ["707-320", "A300B4", "Cessna 172", "F/A-18"]
    assert air.template == "a photo of a {}, a type of aircraft."
    assert np.bincount(air.train.labels).tolist() == [3, 2, 2, 1]
    assert all(os.path.isfile(p) for p in air.train.paths)
    assert len(air.val.labels) == len(air.test.labels) == 4


def test_imagenet_and_variants(root):
    inet = load_coop_dataset("imagenet", root)
    assert inet.class_ids.tolist() == sorted(WNIDS)  # labels follow sorted folders
    assert inet.class_names[0] == "solid red circle" and inet.val is None
    assert len(inet.train.labels) == 16 and len(inet.test.labels) == 8
    a = load_coop_dataset("imagenet_a", root)  # README.txt is not a class
    assert a.class_ids.tolist() == [WNIDS[i] for i in (1, 3, 5)]
    assert a.class_names.tolist() == [WORLD8[i].replace("_", " ") for i in (1, 3, 5)]
    assert a.train is None and a.test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    v2 = load_coop_dataset("imagenet_v2", root)  # folders 0..7 index classnames.txt
    assert v2.class_ids.tolist() == WNIDS and len(v2.test.labels) == 8


# The per-dataset prompts of ../shared/candle-method.md, section 5 (CoOp's templates).
METHOD_TABLE = {
    "imagenet": ("a photo of a {}.", 1000), "caltech101": ("a photo of a {}.", 100),
    "oxford_pets": ("a photo of a {}, a type of pet.", 37),
    "stanford_cars": ("a photo of a {}.", 196),
    "oxford_flowers": ("a photo of a {}, a type of flower.", 102),
    "food101": ("a photo of {}, a type of food.", 101),
    "fgvc_aircraft": ("a photo of a {}, a type of aircraft.", 100),
    "sun397": ("a photo of a {}.", 397), "dtd": ("{} texture.", 47),
    "eurosat": ("a centered satellite photo of {}.", 10),
    "ucf101": ("a photo of a person doing {}.", 101),
    "imagenetv2": ("a photo of a {}.", 1000), "imagenet_sketch": ("a photo of a {}.", 1000),
    "imagenet_a": ("a photo of a {}.", 200), "imagenet_r": ("a photo of a {}.", 200),
}


def test_every_dataset_is_known_with_its_template():
    assert set(DATASETS) == set(METHOD_TABLE) and len(BASE_TO_NEW_DATASETS) == 11
    assert IMAGENET_VARIANTS == ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
    for name, (template, n_classes) in METHOD_TABLE.items():
        assert (DATASETS[name].template, DATASETS[name].n_classes) == (template, n_classes)
    # names: lower case, "-" or "_", and the folder names of the layouts
    for alias, name in [("Caltech-101", "caltech101"), ("food-101", "food101"),
                        ("OXFORD_PETS", "oxford_pets"), ("imagenet-sketch", "imagenet_sketch"),
                        ("imagenet-adversarial", "imagenet_a"),
                        ("imagenet-rendition", "imagenet_r"), ("ImageNet-V2", "imagenetv2"),
                        ("FGVC-Aircraft", "fgvc_aircraft")]:
        assert dataset_spec(alias).name == name


@pytest.mark.parametrize("dataset", sorted(REAL_SPLITS))
def test_real_split_files(dataset, tmp_path):
    """Every split-file dataset, with its real paths and class-name quirks."""
    write_real_split(str(tmp_path), dataset)
    data = load_coop_dataset(dataset, tmp_path)
    raw = [name for _, name in REAL_SPLITS[dataset][3]]
    assert data.raw_class_names.tolist() == raw
    assert data.class_names.tolist() == [n.replace("_", " ") for n in raw]
    assert data.template == METHOD_TABLE[dataset][0]
    for part in (data.train, data.val, data.test):
        assert part.labels.tolist() == list(range(len(raw)))
        assert all(os.path.isfile(p) for p in part.paths)  # paths, nothing decoded
        assert all(isinstance(p, str) for p in part.paths)


def test_imagenet_sketch_and_r(tmp_path):
    write_variant(str(tmp_path), "imagenet-sketch", "images", keep=range(8), n=1)
    write_variant(str(tmp_path), "imagenet-rendition", "imagenet-r", keep=(0, 2, 7), n=1)
    sketch = load_coop_dataset("imagenet_sketch", tmp_path)
    assert sketch.class_ids.tolist() == WNIDS and sketch.test.labels.tolist() == list(range(8))
    r = load_coop_dataset("imagenet_r", tmp_path)
    assert r.class_ids.tolist() == [WNIDS[i] for i in (0, 2, 7)]
    assert r.class_names[2] == "solid green circle" and r.template == "a photo of a {}."


def test_find_datasets(root):
    # The 11 base-to-new datasets present, in the paper's order; variants are test sets.
    assert find_coop_datasets(root) == ["imagenet", "oxford_pets", "stanford_cars",
                                        "fgvc_aircraft", "sun397", "dtd"]


def test_missing_and_malformed(root, tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'pets2'.*oxford_pets"):
        load_coop_dataset("pets2", root)
    with pytest.raises(DatasetError, match=r"caltech-101.*DATASETS.md#caltech101"):
        load_coop_dataset("caltech101", root)
    (tmp_path / "eurosat" / "2750").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"split_zhou_EuroSAT.json not found.*#eurosat"):
        load_coop_dataset("eurosat", tmp_path)
    bad = tmp_path / "eurosat" / "split_zhou_EuroSAT.json"
    bad.write_text(json.dumps({"train": [["a.jpg", 0, "Forest"], ["b.jpg", 0, "River"]],
                               "val": [], "test": []}))
    with pytest.raises(DatasetError, match="label 0 is named both 'Forest' and 'River'"):
        load_coop_dataset("eurosat", tmp_path)
    for train, val in [([["a.jpg", 0]], []), ([[123, 0, "Forest"]], []),
                       ([["a.jpg", 0.9, "Forest"]], []), ([["a.jpg", True, "Forest"]], []),
                       ([], [["a.jpg", 0, None]])]:
        bad.write_text(json.dumps({"train": train, "val": val, "test": []}))
        with pytest.raises(DatasetError, match=r"(train|val)\[0\] is .*expected \[image "
                                               r"path, integer label, class name\]"):
            load_coop_dataset("eurosat", tmp_path)
    bad.write_text(json.dumps({"train": [], "val": None, "test": []}))
    with pytest.raises(DatasetError, match="'val' is None; expected a list"):
        load_coop_dataset("eurosat", tmp_path)
    bad.write_text(json.dumps({"train": [["a.jpg", 0, "Forest"], ["b.jpg", 1, "Forest"]],
                               "val": [], "test": []}))
    with pytest.raises(DatasetError, match="class 'Forest' has two labels, 0 and 1"):
        load_coop_dataset("eurosat", tmp_path)
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="not a readable split file"):
        load_coop_dataset("eurosat", tmp_path)
    with pytest.raises(DatasetError, match="is not a folder"):
        load_coop_dataset("dtd", tmp_path / "nope")


def test_aircraft_unknown_variant(tmp_path):
    base = write_aircraft(str(tmp_path))
    with open(os.path.join(base, "images_variant_test.txt"), "a") as f:
        f.write("1 Boeing 999\n")
    with pytest.raises(DatasetError, match="line 5: variant 'Boeing 999'"):
        load_coop_dataset("fgvc_aircraft", tmp_path)


def test_check_without_listing(root, tmp_path):
    from candle_sklearn.datasets import check_coop_dataset

    assert check_coop_dataset("fgvc_aircraft", root).name == "fgvc_aircraft"
    (tmp_path / "oxford_pets" / "images").mkdir(parents=True)
    with pytest.raises(DatasetError, match="split_zhou_OxfordPets.json not found"):
        check_coop_dataset("oxford_pets", tmp_path)
    (tmp_path / "imagenet-sketch" / "images").mkdir(parents=True)
    with pytest.raises(DatasetError, match="classnames.txt not found.*#imagenet-sketch"):
        check_coop_dataset("imagenet_sketch", tmp_path)
