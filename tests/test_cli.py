"""The command line and the functions behind it, end to end with the bundled tiny CLIP
on fixtures in the exact on-disk layouts: reproduce (base to new, all, transfer), fit,
predict, evaluate, and bad inputs (one line, non-zero exit, never a traceback)."""

import csv
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.utils import Bunch

from candle_sklearn._cache import TABLE
from candle_sklearn._clip import BUNDLED_DIR as WEIGHTS
from candle_sklearn.cli import main
from candle_sklearn.datasets import base_to_new_split, load_coop_dataset
from candle_sklearn.cli.reproduce import METHODS, reproduce
from candle_sklearn.cli.scores import LinearProbe
from candle_sklearn.cli.folders import fit_image_folder, load_model, predict_images

from .disk_layouts import (WORLD8, write_image_folder, write_imagenet, write_split_dataset,
                           write_variant)

TINY = ["--model", "candle-tiny", "--pretrained", "bundled", "--device", "cpu",
        "--num-workers", "0"]
FAST = ["--max-epochs", "3"]  # the paper's long tail (0.02; 0.01 for imagenet), few epochs
API = dict(model_name="candle-tiny", pretrained="bundled", device="cpu", num_workers=0,
           candle_params={"max_epochs": 3}, verbose=0)


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _cli(*args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore",
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "candle_sklearn", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data"))
    write_split_dataset(root)  # oxford_pets, 8 classes: 4 base, 4 new
    write_split_dataset(root, "dtd", "images", "split_zhou_DescribableTextures.json",
                        sub_folders=True, seed=3)
    write_imagenet(root)
    write_variant(root)  # imagenet_a: 3 of the 8 classes
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("folders")
    train = write_image_folder(str(root / "train"))  # 6 classes, 6 to 2 images
    test = write_image_folder(str(root / "test"), names=WORLD8, n=(2,) * 8, seed=7)
    new = root / "new.txt"
    new.write_text("# classes without images\nstriped_red_star\nsolid_green_circle\n")
    return train, test, str(new)


@pytest.fixture(scope="module")
def model_path(folders, tmp_path_factory):
    train, _, new = folders
    path = str(tmp_path_factory.mktemp("model") / "model.safetensors")
    fit_image_folder(train, new_classes=new, output=path, model_name="candle-tiny",
                     pretrained="bundled", device="cpu", num_workers=0,
                     candle_params={"max_epochs": 3}, verbose=0)
    return path


# ------------------------------------------------------------------ reproduce
@pytest.mark.slow  # a subprocess: the command line as a user runs it
def test_reproduce_command_line(data_root, tmp_path):
    out = tmp_path / "out"
    run = _cli("reproduce", "--dataset", "oxford_pets", "--root", data_root, *TINY, *FAST,
               "--seeds", "1", "2", "--output", out)
    assert run.returncode == 0, run.stderr
    rows = _csv(out / "results.csv")
    assert {"method", "seed", "base", "new", "hm", "joint_hm"} <= set(rows[0])
    # every method by default: Candle, zero-shot, the linear probe and the peers
    assert sorted((r["method"], r["seed"]) for r in rows) == sorted(
        (m, s) for m in METHODS for s in ("1", "2"))
    candle = [r for r in rows if r["method"].startswith("candle")]
    zero = [r for r in rows if "zero" in r["method"]]
    assert len(candle) == len(zero) == 2
    for r in candle + zero:
        values = [float(r[c]) for c in ("base", "new", "hm", "joint_hm")]
        assert all(0 <= v <= 1 for v in values)
        assert float(r["new"]) > 0.5  # 4 new classes: chance is 0.25
    assert len(_csv(out / "summary.csv")) == len(METHODS)
    # results on stdout, progress on stderr
    assert "mean ± std over seeds 1, 2" in run.stdout and "img/s" not in run.stdout
    assert "embedding cache" in run.stderr
    assert (out / "report.txt").read_text().strip() == run.stdout.strip()
    # every image embedded once: the training images of both seeds and the test set
    with sqlite3.connect(out / "cache" / "embeddings.sqlite") as con:
        (n,) = con.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()
    pets = load_coop_dataset("oxford_pets", data_root)
    drawn = [base_to_new_split(pets.train.labels, pets.test.labels, random_state=s).train
             for s in (1, 2)]
    assert n == len(np.unique(np.concatenate(drawn))) + 24  # nothing else is read


@pytest.mark.slow  # reproduce over every dataset of the fixture
def test_reproduce_all_datasets(data_root, tmp_path, capsys):
    out = tmp_path / "all"
    assert main(["reproduce", "--dataset", "all", "--root", data_root, *TINY, *FAST,
                 "--seeds", "1", "--output", str(out), "-q",
                 "--methods", "candle", "zero-shot", "linear-adapter"]) == 0
    summary = _csv(out / "summary.csv")
    assert {r["dataset"] for r in summary} == {"imagenet", "oxford_pets", "dtd", "average"}
    average = {r["method"]: r for r in summary if r["dataset"] == "average"}
    per = [r for r in summary if r["method"] == "candle" and r["dataset"] != "average"]
    assert float(average["candle"]["base"]) == pytest.approx(
        np.mean([float(r["base"]) for r in per]), abs=1e-5)
    assert set(average) == {"candle", "zero-shot", "linear-adapter"}
    assert "average over 3 datasets" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["one base class", "no test image"])
def test_reproduce_refuses_a_split_it_cannot_score_before_any_work(tmp_path, capsys, case):
    """With one base class `reproduce` died in the linear probe after Candle was fitted;
    with an empty test split it said only "the input is empty", after run.json was
    written."""
    root = str(tmp_path / "data")
    if case == "one base class":
        write_split_dataset(root, names=WORLD8[:2], n_train=(3, 3))
        match = r"oxford_pets, seed 1: the base-to-new split has 1 base class"
    else:
        write_split_dataset(root, n_test=0)
        match = "oxford_pets: the test split lists no image"
    out = tmp_path / "out"
    assert main(["reproduce", "--dataset", "oxford_pets", "--root", root, *TINY, *FAST,
                 "--seeds", "1", "--output", str(out), "-q"]) == 1
    assert re.search(match, capsys.readouterr().err)
    assert not (out / "run.json").exists() and not (out / "cache").exists()


def test_transfer_through_the_python_api(data_root, tmp_path):
    report = reproduce(train="imagenet", test=["imagenet_a", "oxford_pets"], root=data_root,
                       output=str(tmp_path / "xd"), seeds=(1,),
                       methods=("candle", "zero-shot", "linear-probe", "lift"), **API)
    rows = _csv(tmp_path / "xd" / "results.csv")
    by = {(r["target"], r["method"]): float(r["accuracy"]) for r in rows}
    # the source; domain generalisation to a class subset (matched by WordNet id), also
    # scored among the source classes; cross-dataset transfer (target classes are new)
    assert set(by) == {(t, m) for t in ("imagenet", "imagenet_a", "oxford_pets")
                       for m in ("candle", "zero-shot", "lift")} | {
        ("imagenet", "linear-probe"), ("imagenet_a", "linear-probe"),
        ("imagenet_a", "candle-source-classes")}
    assert by[("imagenet_a", "candle-source-classes")] > 1 / 3  # 3 classes
    assert by[("imagenet_a", "candle")] > 1 / 3 and by[("oxford_pets", "candle")] > 1 / 8
    # as base to new: per seed and mean ± std, with the averages over the targets (domain
    # generalisation and cross-dataset apart), in the report and in summary.csv
    head = [line.split() for line in report.splitlines() if line.startswith("method")]
    assert len(head) == 2 and all(h == ["method", "imagenet", "imagenet_a", "oxford_pets",
                                        "average", "(dg)", "average", "(xd)"] for h in head)
    assert "candle (seed 1)" in report and "mean ± std over seeds 1" in report
    summary = {(r["target"], r["method"]): r for r in _csv(tmp_path / "xd" / "summary.csv")}
    assert summary[("average (dg)", "candle")]["accuracy"] == rows[
        [(r["target"], r["method"]) for r in rows].index(("imagenet_a", "candle"))]["accuracy"]
    assert summary[("average (xd)", "linear-probe")]["accuracy"] == ""  # cannot score it
    assert summary[("oxford_pets", "zero-shot")]["n_seeds"] == "1"


# ------------------------------------------------------------------ fit, predict, evaluate
@pytest.mark.slow  # a subprocess: the command line as a user runs it
def test_fit_command_line_then_predict(folders, tmp_path, capsys):
    train, test, new = folders
    model = tmp_path / "m.safetensors"
    run = _cli("fit", train, "--new-classes", new, *TINY, "--max-epochs", "3", "-o", model)
    assert run.returncode == 0, run.stderr
    assert model.is_file() and "saved the fitted pipeline" in run.stderr
    assert run.stdout == ""
    assert main(["predict", str(model), os.path.join(test, "striped_red_star"),
                 os.path.join(test, "solid_red_*", "*.png"), "--top-k", "3", "-q"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert list(rows[0]) == ["path", "label", "class_1", "proba_1", "class_2", "proba_2",
                             "class_3", "proba_3"]
    assert len(rows) == 4 and all(r["label"] == r["class_1"] for r in rows)
    assert all(float(r["proba_1"]) >= float(r["proba_2"]) >= float(r["proba_3"]) for r in rows)
    # a class known only by name is among the top 3 for its images
    new = [r for r in rows if "striped_red_star" in r["path"]]
    assert len(new) == 2 and all("striped_red_star" in (r["class_1"], r["class_2"],
                                                        r["class_3"]) for r in new)


def test_console_script_is_declared():
    import configparser
    import importlib
    from pathlib import Path

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).parents[1] / "setup.cfg")
    scripts = dict(line.split(" = ") for line in
                   cfg["options.entry_points"]["console_scripts"].strip().splitlines())
    module, _, func = scripts["candle-sklearn"].partition(":")
    assert callable(getattr(importlib.import_module(module), func))


def test_threads_flag_sets_torch_threads_for_the_command(model_path, folders, tmp_path,
                                                          monkeypatch, capsys):
    """fit, predict, evaluate and reproduce had no option for threads (issue 26, item 9)."""
    import torch

    _, test, _ = folders
    calls, set_threads = [], torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n) or set_threads(n))
    before = torch.get_num_threads()
    out = tmp_path / "p.csv"
    assert main(["predict", model_path, test, "-o", str(out), "-q", "--threads", "3"]) == 0
    assert calls[0] == 3 and torch.get_num_threads() == before and len(_csv(out)) == 16
    for command in ("fit", "predict", "evaluate", "reproduce"):
        with pytest.raises(SystemExit):
            main([command, "-h"])
        assert "--threads N" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["predict", model_path, test, "--threads", "0"])


def test_predict_api_and_csv_file(model_path, folders, tmp_path, capsys):
    _, test, _ = folders
    rows = predict_images(load_model(model_path), [test], top_k=100, verbose=0)
    assert len(rows) == 16 and "class_8" in rows[0] and "class_9" not in rows[0]
    out = tmp_path / "p.csv"
    assert main(["predict", model_path, test, "-o", str(out), "-q"]) == 0
    assert len(_csv(out)) == 16 and capsys.readouterr().out == ""


def test_predict_writes_file_names_that_are_not_utf8(model_path, folders, tmp_path):
    _, test, _ = folders
    inbox = os.fsencode(tmp_path / "inbox")
    os.makedirs(inbox)
    source = os.path.join(test, sorted(d for d in os.listdir(test) if d[0] != ".")[0])
    image = sorted(f for f in os.listdir(source) if f.endswith(".png"))[0]
    shutil.copy(os.path.join(source, image), os.path.join(inbox, b"caf\xe9.png"))
    out = tmp_path / "p.csv"
    assert main(["predict", model_path, os.fsdecode(inbox), "-o", str(out), "-q"]) == 0
    assert b"caf\xe9.png" in out.read_bytes()


def test_evaluate(model_path, folders, tmp_path, capsys):
    _, test, _ = folders
    plot = tmp_path / "lt.png"
    args = ["evaluate", model_path, test, "-o", str(tmp_path / "pc.csv"), "-q"]
    try:
        import matplotlib  # noqa: F401
        args += ["--plot", str(plot)]
    except ImportError:
        args += ["--plot", ""]
        plot = None
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "joint_hm" in out and "zero-shot" in out and "candle" in out
    rows = _csv(tmp_path / "pc.csv")
    kinds = {r["class"]: r["kind"] for r in rows}
    assert kinds["striped_red_star"] == "new" and kinds["solid_red_circle"] == "base"
    assert all(r["n_test"] == "2" for r in rows)
    assert plot is None or plot.stat().st_size > 0


def test_evaluate_writes_a_plot_only_where_asked_and_names_it(model_path, folders, tmp_path,
                                                               monkeypatch, capsys):
    """`evaluate` always wrote long_tail.png into the working directory, and `--plot X`
    saved X.png but reported X."""
    pytest.importorskip("matplotlib")
    _, test, _ = folders
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", model_path, test]) == 0
    assert os.listdir(tmp_path) == []
    capsys.readouterr()
    assert main(["evaluate", model_path, test, "--plot", "lt"]) == 0
    assert os.listdir(tmp_path) == ["lt.png"]
    assert "long-tail plot: lt.png" in capsys.readouterr().err


def test_evaluate_a_folder_of_some_classes(model_path, tmp_path):
    """Images predicted as a class that has no folder in the test set (here a folder of
    one class holding another class's images): the plot shows every class of the model."""
    pytest.importorskip("matplotlib")
    write_image_folder(str(tmp_path / "drawn"), names=[WORLD8[0]], n=(4,))
    test = tmp_path / "test"
    test.mkdir()
    (tmp_path / "drawn" / WORLD8[0]).rename(test / WORLD8[1])
    plot = tmp_path / "lt.png"
    assert main(["evaluate", model_path, str(test), "-o", str(tmp_path / "pc.csv"), "-q",
                 "--plot", str(plot)]) == 0
    rows = _csv(tmp_path / "pc.csv")
    assert [r["class"] for r in rows] == [WORLD8[1]] and float(rows[0]["candle"]) < 1
    assert plot.stat().st_size > 0


# ------------------------------------------------------------------ bad inputs
@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    write_image_folder(str(root / "train"), names=WORLD8[:3], n=(3, 3, 3))
    (root / "train" / WORLD8[1] / "zz.png").write_bytes(b"not an image")
    (root / "empty" / "a").mkdir(parents=True)
    write_image_folder(str(root / "empty"), names=["b"], n=(1,))
    (root / "coop" / "oxford_pets" / "images").mkdir(parents=True)
    write_image_folder(str(root / "two"), names=WORLD8[:2], n=(2, 2))
    (root / "junk.safetensors").write_bytes(b"junk")
    (root / "no_weights").mkdir()  # an open_clip folder without its checkpoint
    (root / "no_weights" / "open_clip_config.json").write_text(
        (WEIGHTS / "candle-tiny" / "open_clip_config.json").read_text())
    return root


@pytest.mark.parametrize("args, message", [
    (["fit", "{root}/nope", "-o", "m"], "image folder {root}/nope not found"),
    (["fit", "{root}/empty", "-o", "m"], "class folder {root}/empty/a has no images"),
    (["fit", "{root}/train", "-o", "m", *TINY],
     f"image {{root}}/train/{WORLD8[1]}/zz.png could not be read"),
    (["reproduce", "--dataset", "pets9", "--root", "{root}"], "unknown dataset 'pets9'"),
    (["reproduce", "--dataset", "oxford_pets", "--root", "{root}/nope"], "is not a folder"),
    (["reproduce", "--dataset", "oxford_pets", "--root", "{root}/coop"],
     "split_zhou_OxfordPets.json not found; see https://github.com/KaiyangZhou/CoOp"),
    (["predict", "{root}/junk.safetensors", "{root}/train"],
     "{root}/junk.safetensors: not a readable safetensors file"),
    (["predict", "{root}/nope.safetensors", "{root}/train"],
     "model file {root}/nope.safetensors not found"),
    (["evaluate", "{model}", "{root}/empty"], "class folder {root}/empty/a has no images"),
    (["reproduce", "--dataset", "imagenet_a", "--root", "{root}"],
     "imagenet_a has no training set"),
    (["fit", "{root}/train", "-o", "m", "--model", "candle-tiny", "--pretrained",
      "local-dir:{root}/no_weights"], "the folder {root}/no_weights has an open_clip_config"),
    (["fit", "{root}/two", "-o", "m", *TINY, "--param", "lr=1e30", "--max-epochs", "3"],
     "CandleClassifier.fit diverged"),
    (["predict", "{model}", "{root}/train", "-o", "{root}/junk.safetensors/p.csv"],
     "{root}/junk.safetensors: "),
])
def test_bad_inputs_exit_with_one_line(broken, model_path, data_root, args, message, capsys,
                                       tmp_path):
    fill = {"root": str(broken), "model": model_path, "data": data_root}
    args = [a.format(**fill) for a in args]
    if args[0] == "fit":
        args[args.index("-o") + 1] = str(tmp_path / "m.safetensors")
    assert main([*args, "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(("candle-sklearn: error: ",
                                                "python -m candle_sklearn: error: ")), err
    assert message.format(**fill) in err[0]
    assert not (tmp_path / "m.safetensors").exists()
    assert not os.path.exists("candle_reproduce")  # nothing written before the checks


def test_unreadable_images_can_be_skipped(broken, tmp_path, capsys):
    model = tmp_path / "m.safetensors"
    assert main(["fit", str(broken / "train"), "-o", str(model), *TINY, "--max-epochs", "2",
                 "--on-error", "skip", "-q"]) == 0
    err = capsys.readouterr().err
    assert "warning: skipped 1 unreadable image(s)" in err and "zz.png" in err
    assert load_model(model).named_steps["candle"].class_counts_.sum() == 9


def test_a_class_of_unreadable_images_is_named_as_new(broken, tmp_path, capsys):
    """Every image of a class folder skipped: the class is trained by name only, and the
    command says so (it used to count it among the image classes; a review)."""
    train = tmp_path / "train"
    shutil.copytree(broken / "train", train)
    (train / "ghost").mkdir()
    (train / "ghost" / "0.png").write_bytes(b"not an image either")
    model = tmp_path / "m.safetensors"
    assert main(["fit", str(train), "-o", str(model), *TINY, "--max-epochs", "2",
                 "--on-error", "skip"]) == 0
    err = capsys.readouterr().err
    assert "no image of class folders ['ghost'] could be read" in err
    assert "9 images of 3 classes, 1 new classes" in err
    assert load_model(model).named_steps["candle"].new_classes_.tolist() == ["ghost"]


@pytest.mark.parametrize("command", ["fit", "predict", "evaluate", "reproduce", "demo"])
def test_help_reads_like_a_man_page(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "examples:" in out and "exit status:" in out
    assert max(map(len, out.splitlines())) <= 100  # readable in a terminal


def test_main_help_lists_commands_examples_and_environment(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for word in ("fit", "predict", "evaluate", "reproduce", "demo", "examples:",
                 "environment:", "HF_HUB_OFFLINE", "exit status:"):
        assert word in out


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["reproduce", "--root", "x"])  # --dataset or --train is required
    assert exit_.value.code == 2
    assert "one of the arguments --dataset --train is required" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["reproduce", "--dataset", "dtd", "--root", "x", "--test", "y"], "--test goes with"),
    (["fit", "train", "-o", "m.safetensors", "--param", "nope=1"],
     "--param nope: not a CandleClassifier parameter"),
    (["reproduce", "--dataset", "oxford_pets", "--root", "x", "--param", "classes=3"],
     "--param classes: not a CandleClassifier parameter"),
    # a bad value is a usage error too, found before any image is embedded
    (["fit", "train", "-o", "m.safetensors", "--param", "tau=-1"],
     "--param: The 'tau' parameter of CandleClassifier must be"),
    (["fit", "train", "-o", "m.safetensors", "--num-workers", "-1"], "must be at least 0"),
    (["demo", "--features", "--plot", "p.png"], "the --features demo makes no plot"),
    (["reproduce", "--dataset", "dtd", "--root", "x", "--methods", "candle", "svm"],
     "--methods: unknown method(s) ['svm']"),
])
def test_combinations_argparse_cannot_see_are_usage_errors(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_embed_files_skips_or_stops_chunk_by_chunk(broken):
    import warnings

    from candle_sklearn import ClipEmbedder
    from candle_sklearn.cli.embedding import embed_files
    from candle_sklearn.exceptions import SkippedImageWarning
    from candle_sklearn._images import ImageInputError
    from candle_sklearn.datasets import load_image_folder

    paths = list(load_image_folder(broken / "train").paths)
    bad = [i for i, p in enumerate(paths) if p.endswith("zz.png")]
    emb = ClipEmbedder("candle-tiny", "bundled", device="cpu", num_workers=0).fit(paths[:1])
    with pytest.warns(SkippedImageWarning, match="zz.png"):
        X, kept = embed_files(emb, paths, on_error="skip", chunk_size=2, verbose=0)
    assert np.flatnonzero(~kept).tolist() == bad and X.shape == (len(paths) - 1, 64)
    good = [p for i, p in enumerate(paths) if i not in bad]
    np.testing.assert_allclose(X, emb.transform(good), rtol=1e-5)  # rows stay aligned
    with warnings.catch_warnings(), pytest.raises(ImageInputError, match="zz.png"):
        warnings.simplefilter("error")
        embed_files(emb, paths, chunk_size=2, verbose=0)


def test_embed_files_refuses_no_paths_and_a_bad_chunk_size(broken):
    from candle_sklearn import ClipEmbedder
    from candle_sklearn.cli.embedding import embed_files
    from candle_sklearn._images import ImageInputError

    emb = ClipEmbedder("candle-tiny", "bundled", device="cpu", num_workers=0)
    with pytest.raises(ImageInputError, match="the list of paths is empty"):
        embed_files(emb, [], verbose=0)
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="chunk_size must be an int >= 1"):
            embed_files(emb, [broken / "train"], chunk_size=bad, verbose=0)


# ------------------------------------------------------------------ baselines' scores


def test_private_linear_probe_wrapper_spreads_scores(small_data):
    d = small_data
    scores = LinearProbe().fit(d.X_train, d.y_train).scores(d.X_test, d.classes, tau=1.0)
    assert scores.shape == (len(d.X_test), len(d.classes))
    assert np.isneginf(scores[:, np.isin(d.classes, d.new_classes)]).all()


def test_private_baselines_follow_classes_in_any_order():
    from candle_sklearn.cli.scores import nearest_class_mean_scores

    X = np.array([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9]])
    y = np.array(["b", "b", "a", "a"])
    classes = np.array(["b", "a", "c"])  # not sorted; "c" has no training image
    for scores in (LinearProbe().fit(X, y).scores(X, classes),
                   nearest_class_mean_scores(X, y, X, classes)):
        assert np.isneginf(scores[:, 2]).all()
        np.testing.assert_array_equal(classes[scores.argmax(1)], y)
    with pytest.raises(ValueError, match=r"labels not in classes: \['b'\]"):
        nearest_class_mean_scores(X, y, X, np.array(["a", "c"]))


def test_fit_shows_progress_and_a_summary_and_says_when_it_is_zero_shot(folders, tmp_path,
                                                                        capsys):
    """`fit` was silent for 10 to 45 s after "fitting Candle", and nothing said when the
    model predicts as zero-shot CLIP (few images per class)."""
    train, _, new = folders
    model = tmp_path / "m.safetensors"
    assert main(["fit", train, "--new-classes", new, "-o", str(model), *TINY,
                 "--max-epochs", "3"]) == 0
    err = capsys.readouterr().err
    assert "CandleClassifier.fit" in err and "epoch" in err  # the training's progress
    assert re.search(r"fitted in \d+ steps .* last epoch's loss [\d.]+; new-class bias "
                     r"\S+ and zero-shot weight 1 \(few images per class\)", err)
    assert "predicts as zero-shot CLIP" in err and "--param new_class_bias=0" in err
    assert main(["fit", train, "--new-classes", new, "-o", str(model), *TINY,
                 "--max-epochs", "3", "--param", "new_class_bias=0"]) == 0
    err = capsys.readouterr().err
    assert "zero-shot weight 0 (fixed)" in err and "predicts as zero-shot" not in err
    assert main(["fit", train, "-o", str(model), *TINY, "--max-epochs", "3", "-q"]) == 0
    assert "fitted in" not in capsys.readouterr().err


def test_fit_that_collapses_fails_on_the_command_line(folders, tmp_path, capsys):
    """`fit --param lr=1` (any lr of 1 or more) exited 0 with a model that predicted every
    class about equally. (With the reference recipe: from the default's whitened start,
    these 22 images are fitted to a zero loss at any lr up to 10, and nothing collapses.)"""
    train, _, _ = folders
    model = tmp_path / "collapsed.safetensors"
    status = main(["fit", train, "-o", str(model), *TINY, "--max-epochs", "5",
                   "--param", "lr=1", "--param", "recipe=reference", "-q"])
    assert status == 1
    assert "collapsed" in capsys.readouterr().err
    assert not model.exists()


@pytest.mark.parametrize("output", ["", "{folder}"])
def test_fit_checks_its_output_path_before_any_work(tmp_path, capsys, output):
    """`fit -o FOLDER` and `-o ''` failed only after embedding and training, naming a
    temporary file."""
    output = output.format(folder=tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", str(tmp_path / "no-such-train-folder"), "-o", output])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert ("is a folder" in err) if output else ("empty" in err)


@pytest.mark.slow  # two subprocesses at once
def test_two_predictions_at_once_share_one_cache_folder(folders, tmp_path,
                                                       fresh_embedding_cache):
    """Two `predict` processes on one on-disk embedding cache (SQLite), at the same
    time: neither loses a row or fails, both give the same predictions, and the cache
    then holds each image once."""
    train, _, new = folders
    cache = tmp_path / "cache"
    model = tmp_path / "model.safetensors"
    fit_image_folder(train, new_classes=new, output=model, model_name="candle-tiny",
                     pretrained="bundled", device="cpu", num_workers=0, cache_dir=cache,
                     candle_params={"max_epochs": 3}, verbose=0)

    def cached():
        with sqlite3.connect(cache / "embeddings.sqlite") as con:
            return con.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()[0]

    trained = cached()  # the training images, embedded by fit (memory cache emptied)
    assert trained > 0
    images = write_image_folder(str(tmp_path / "inbox"), names=WORLD8,
                                n=(20,) * len(WORLD8), seed=11)  # 160 images, none cached
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore",
           "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen([sys.executable, "-m", "candle_sklearn", "predict", str(model),
                              images, "--top-k", "3", "-q", "-o", str(tmp_path / f"{i}.csv")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for i in range(2)]
    for run in runs:
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr
        assert "Error" not in stderr and "Traceback" not in stderr, stderr
    first, second = (_csv(tmp_path / f"{i}.csv") for i in range(2))
    assert len(first) == len(second) == 20 * len(WORLD8)
    assert sorted(r["path"] for r in first) == sorted(
        os.path.join(images, name, f"{i}.png") for name in WORLD8 for i in range(20))
    by_path = {r["path"]: r for r in second}
    for row in first:
        assert row["label"] == by_path[row["path"]]["label"]
        assert float(row["proba_1"]) == pytest.approx(float(by_path[row["path"]]["proba_1"]))
    assert cached() == trained + 20 * len(WORLD8)


@pytest.mark.parametrize("pretrained", ["bogus-tag", "openai", "missing.pt"])
def test_a_bad_pretrained_is_named_in_the_command_line_s_words(folders, tmp_path, capsys,
                                                               pretrained, monkeypatch):
    """A bad --pretrained with the bundled model reported "unknown open_clip model
    'candle-tiny'", and the errors gave Python advice (ClipEmbedder(pretrained=...))."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    train, _, _ = folders
    args = ["fit", train, "-o", str(tmp_path / "m.safetensors"), "--model", "candle-tiny",
            "--pretrained", pretrained, "--device", "cpu", "-q"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert pretrained in err and "unknown open_clip model" not in err
    assert "pretrained=" not in err and "ClipEmbedder(" not in err


def test_a_model_file_works_from_another_directory_and_machine(folders, tmp_path,
                                                                monkeypatch, capsys):
    """A model fitted with a relative --cache-dir made every later predict create that
    folder under its working directory, a relative --pretrained local-dir: broke from
    another directory, and predict could override neither (issue 26, item 3)."""
    train, test, _ = folders
    fit_dir, weights = tmp_path / "fit", tmp_path / "fit" / "ckpt"
    fit_dir.mkdir()
    import candle_sklearn

    shutil.copytree(os.path.join(os.path.dirname(candle_sklearn.__file__), "weights",
                                 "candle-tiny"), weights)
    monkeypatch.chdir(fit_dir)
    assert main(["fit", train, "-o", "m.safetensors", "--model", "candle-tiny",
                 "--pretrained", "local-dir:ckpt", "--cache-dir", "cache", "--device", "cpu",
                 "--num-workers", "0", "--max-epochs", "3", "-q"]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model = str(fit_dir / "m.safetensors")
    assert main(["predict", model, test, "-o", "p.csv", "-q"]) == 0  # weights found
    assert sorted(os.listdir(elsewhere)) == ["p.csv"]  # and no cache folder made here
    assert len(_csv(elsewhere / "p.csv")) == 16
    shutil.rmtree(fit_dir / "cache", ignore_errors=True)  # as on another machine
    moved = tmp_path / "moved"
    shutil.move(str(weights), moved)
    assert main(["predict", model, test, "-o", "q.csv", "-q"]) == 1  # weights not found
    assert main(["predict", model, test, "-o", "q.csv", "-q", "--pretrained",
                 f"local-dir:{moved}", "--cache-dir", "here"]) == 0
    assert not (fit_dir / "cache").exists()
    loaded = load_model(model, pretrained=f"local-dir:{moved}", cache_dir="here")
    assert loaded.named_steps["clip"].cache == str(elsewhere / "here")
    assert main(["predict", model, test, "-o", "r.csv", "-q", "--pretrained",
                 f"local-dir:{moved}"]) == 0
    assert "is not here: embeddings are cached in memory" in capsys.readouterr().err
    assert not (fit_dir / "cache").exists()


def test_mean_std_table_keeps_its_columns_apart():
    """`reproduce`'s mean ± std table ran columns together: 0.587±0.02518.746±20.329."""
    from candle_sklearn.cli.tables import format_table

    rows = {"Candle": {"hm": (0.587, 0.025), "seconds": (18.746, 20.329)},
            "zero-shot CLIP": {"hm": (0.5, 0.0), "seconds": float("nan")}}
    lines = format_table(rows, columns=("hm", "seconds")).splitlines()
    assert lines[2].split()[-2:] == ["0.587±0.025", "18.746±20.329"]
    assert lines[3].split()[-2:] == ["0.500±0.000", "--"]
    assert len({len(line) for line in lines}) == 1  # aligned


def test_help_and_the_package_import_load_no_heavy_library():
    """`candle-sklearn --help` took 5.2 s (issue 26, item 10): neither it nor
    `import candle_sklearn` may import torch, open_clip or scikit-learn."""
    code = ("import sys, contextlib, io\n"
            "import candle_sklearn\n"
            "from candle_sklearn.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n"
            "        main(['--help'])\n"
            "    except SystemExit:\n"
            "        pass\n"
            "print(sorted(m for m in ('torch', 'open_clip', 'sklearn', 'torchvision')\n"
            "             if m in sys.modules))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert run.stdout.strip() == "[]"


def test_predict_csv_probabilities_are_calibrated(folders, tmp_path):
    """The CSV's proba_1 printed 1.000000 on wrong labels (issue 26, item 2): with enough
    images a class for the held-out calibration, the command line's probabilities are
    divided by the fitted temperature."""
    train = write_image_folder(str(tmp_path / "train"), names=WORLD8[:6], n=(8,) * 6, seed=3)
    _, test, new = folders
    model = tmp_path / "m.safetensors"
    assert main(["fit", train, "--new-classes", new, "-o", str(model), *TINY, *FAST,
                 "-q"]) == 0
    loaded = load_model(model)
    candle = loaded.named_steps["candle"]
    assert candle.calibration_["method"] == "held-out classes" and candle.temperature_ != 1
    out = tmp_path / "p.csv"
    assert main(["predict", str(model), test, "-o", str(out), "-q", "--top-k", "1"]) == 0
    rows = _csv(out)
    paths = [r["path"] for r in rows]
    np.testing.assert_allclose([float(r["proba_1"]) for r in rows],
                               loaded.predict_proba(paths).max(axis=1), atol=1e-6)


def test_predict_says_what_it_skipped_and_what_it_read_once(model_path, folders, tmp_path,
                                                            capsys):
    """`.gif` files were skipped with no count, and duplicate inputs gave fewer rows than
    inputs without a word (issue 26, item 4)."""
    _, test, _ = folders
    inbox = tmp_path / "inbox"
    shutil.copytree(test, inbox)
    (inbox / WORLD8[0] / "anim.gif").write_bytes(b"GIF89a")
    one = str(inbox / WORLD8[0] / "0.png")
    out = tmp_path / "p.csv"
    assert main(["predict", model_path, str(inbox), one, "-o", str(out), "-q"]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 file(s)" in err and "1 .gif" in err
    assert "1 input(s) named an image already listed" in err and "there are 16 images" in err
    assert len(_csv(out)) == 16


def test_reproduce_warms_every_method_up_before_the_timed_seeds(data_root, monkeypatch,
                                                                 tmp_path):
    """The first seed's seconds included a one-off start-up (47 s against 2 to 6 s): every
    method now runs once, untimed and quiet, on two images a class before the seeds."""
    from candle_sklearn.cli import reproduce as rep

    calls = []
    monkeypatch.setattr(rep, "_run_seed", lambda name, data, split, train, X, y, text, seed,
                        device, params, verbose, methods: calls.append(
                            (seed, verbose, np.bincount(data.train.labels[split.train]),
                             np.bincount(y))) or [])
    rep.base_to_new("oxford_pets", data_root, model_name="candle-tiny", pretrained="bundled",
                    device="cpu", num_workers=0, seeds=(1, 2), methods=("zero-shot",),
                    verbose=1, cache_dir=str(tmp_path / "cache"))
    assert [(seed, verbose) for seed, verbose, *_ in calls] == [(1, 0), (1, 1), (2, 1)]
    (_, _, warm, warm_test), (_, _, first, test) = calls[:2]
    assert warm.max() <= 2 and (warm > 0).sum() == (first > 0).sum() and first.max() > 2
    assert warm_test.max() <= 2 and (warm_test > 0).sum() == (test > 0).sum() < test.sum()


@pytest.mark.parametrize("message, expected", [
    ("Pass a writable folder as cache=, or cache=True to keep embeddings in memory only",
     "Pass a writable folder as --cache-dir, or no --cache-dir to keep embeddings in memory "
     "only"),
    ("image 3 ('/data/device=phone/IMG_1.jpg') could not be read",
     "image 3 ('/data/device=phone/IMG_1.jpg') could not be read"),
    ("runs/pretrained=openai/cat: no such file", "runs/pretrained=openai/cat: no such file"),
    ("saved with ClipEmbedder(model_name='ViT-B-16', pretrained='/home/me/my weights.pt') here",
     "saved with --model ViT-B-16 --pretrained '/home/me/my weights.pt' here"),
    ("device='cuda' was requested; use device='auto' or 'cpu'",
     "--device cuda was requested; use --device auto or 'cpu'"),
])
def test_python_advice_becomes_flags_and_nothing_else_changes(message, expected):
    from candle_sklearn.cli.main import _as_flags

    assert _as_flags(message) == expected


def test_the_zero_shot_warning_does_not_depend_on_the_bias():
    """With zero_shot_weight_ = 1 the head is unused whatever the new-class bias."""
    from candle_sklearn.cli.folders import _warn_if_zero_shot

    fitted = Bunch(zero_shot_weight_=1.0, new_class_bias_=2.0, calibration_=None)
    with pytest.warns(UserWarning, match="predicts as zero-shot CLIP"):
        _warn_if_zero_shot(fitted)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_if_zero_shot(Bunch(zero_shot_weight_=0.5, new_class_bias_=0.0,
                                 calibration_=None))
