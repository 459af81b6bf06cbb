"""Image folders (candle_sklearn.datasets.folder): one sub-folder per class, image paths
and globs, class-name files; on generated folders."""

import os

import pytest
from PIL import Image

from candle_sklearn.datasets import DatasetError, find_images, load_image_folder, read_class_names

from .disk_layouts import write_image_folder


# ------------------------------------------------------------------ image folders
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("folder"))
    write_image_folder(root, names=["b_class", "a_class", "c_class"], n=(2, 1, 1))
    nested = os.path.join(root, "c_class", "more")
    os.makedirs(nested)
    os.replace(os.path.join(root, "c_class", "0.png"), os.path.join(nested, "X.PNG"))
    with open(os.path.join(root, "a_class", "notes.txt"), "w") as f:
        f.write("not an image")
    return root


def test_image_folder(folder):
    data = load_image_folder(folder)
    assert data.classes.tolist() == ["a_class", "b_class", "c_class"]  # sorted
    assert data.class_names.tolist() == ["a class", "b class", "c class"]
    assert data.labels.tolist() == ["a_class", "b_class", "b_class", "c_class"]
    assert data.paths[-1].endswith(os.path.join("c_class", "more", "X.PNG"))  # any case
    assert not any(".DS_Store" in p or p.endswith(".txt") for p in data.paths)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_image_folder(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no class sub-folders"):
        load_image_folder(tmp_path)
    write_image_folder(str(tmp_path), names=["a"], n=(1,))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"class folder .*empty has no images"):
        load_image_folder(tmp_path)
    data = load_image_folder(tmp_path, allow_empty=True)
    assert data.classes.tolist() == ["a", "empty"] and data.labels.tolist() == ["a"]


def test_find_images(folder):
    one = os.path.join(folder, "a_class", "0.png")
    with pytest.warns(UserWarning, match="already listed"):
        found = find_images([one, os.path.join(folder, "b_class"),
                             os.path.join(folder, "**", "*.PNG"), one])
    assert found[0] == one and len(found) == len(set(found)) == 4
    with pytest.raises(DatasetError, match="no such file or folder"):
        find_images([os.path.join(folder, "missing.png")])
    with pytest.raises(DatasetError, match="no images found"):
        find_images([os.path.join(folder, "*.gif")])


def test_read_class_names(tmp_path):
    path = tmp_path / "new.txt"
    path.write_text("# unseen\nsnow_leopard\n\n  red panda  \n")
    assert read_class_names(path) == ["snow_leopard", "red panda"]
    path.write_text("a\nb\na\n")
    with pytest.raises(DatasetError, match=r"repeats \['a'\]"):
        read_class_names(path)
    with pytest.raises(DatasetError, match="could not be read"):
        read_class_names(tmp_path / "missing.txt")


def test_read_class_names_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "new.txt"
    path.write_bytes("\ufefftabby cat\nbird # a note\n".encode("utf-8"))  # Notepad
    assert read_class_names(path) == ["tabby cat", "bird # a note"]


def test_linked_folders_are_listed_once(tmp_path):
    """Links are followed, but a loop (a link back up) or a second link to a folder
    would list its images again: each folder is listed once, under its first name."""
    root, more = tmp_path / "root", tmp_path / "more"
    write_image_folder(str(root), names=["cats", "dogs"], n=(2, 1))
    write_image_folder(str(more), names=["cats"], n=(1,), seed=1)
    os.symlink(".", root / "cats" / "self")  # a loop
    os.symlink(more / "cats", root / "cats" / "b_more")  # the same folder twice
    os.symlink(more / "cats", root / "cats" / "a_more")
    data = load_image_folder(root)
    assert len(data.paths) == 4 and len({os.path.realpath(p) for p in data.paths}) == 4
    assert data.labels.tolist() == ["cats"] * 3 + ["dogs"]
    assert any(os.path.join("a_more", "0.png") in p for p in data.paths)  # first name


def test_an_unreadable_sub_folder_is_an_error_not_a_silent_gap(tmp_path, monkeypatch):
    write_image_folder(str(tmp_path), names=["cats"], n=(1,))
    (tmp_path / "cats" / "2023").mkdir()
    real_scandir = os.scandir

    def scandir(path="."):  # as chmod 000 would (root ignores permissions)
        if os.fspath(path).endswith("2023"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DatasetError, match=r"2023: folder could not be read \(Permission"):
        load_image_folder(tmp_path)


def test_find_images_takes_each_file_once_however_it_is_named(folder, monkeypatch):
    monkeypatch.chdir(folder)
    with pytest.warns(UserWarning, match=r"named an image already listed .* there are 1"):
        found = find_images(["a_class/0.png", "./a_class/0.png", "a_class"])
    assert found == ["a_class/0.png"]


def test_find_images_counts_the_files_it_skips(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    for name in ("b.gif", "c.gif", "notes.txt", ".hidden.gif"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.warns(UserWarning, match=r"skipped 3 file\(s\) .* \(2 \.gif, 1 \.txt\)"):
        assert find_images([tmp_path]) == [str(tmp_path / "a.png")]
    with pytest.warns(UserWarning, match=r"skipped 3 file\(s\)"):  # a folder given twice
        assert find_images([tmp_path, tmp_path]) == [str(tmp_path / "a.png")]
