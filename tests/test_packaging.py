"""The package as an index sees it: metadata, long description, and an sdist that runs its
own tests."""

import configparser
import email
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import candle_sklearn

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not (ROOT / "setup.cfg").is_file(),
                                reason="needs the source tree (setup.cfg)")


def _metadata():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    """Build the sdist with setuptools' PEP 517 backend (what `python -m build` calls),
    in a subprocess run from the source tree, and unpack it."""
    out = tmp_path_factory.mktemp("sdist")
    code = ("import sys, setuptools.build_meta as backend; "
            "print(backend.build_sdist(sys.argv[1]))")
    run = subprocess.run([sys.executable, "-c", code, str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    archive = out / run.stdout.strip().splitlines()[-1]
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(out, **safe)
    top = out / names[0].split("/")[0]
    return top, {n.split("/", 1)[1] for n in names if "/" in n}


def _source_files(folder):
    """The project's files under ``folder``: git's list in a checkout (ignored outputs
    such as benchmarks/results are not sources), every file otherwise."""
    if (ROOT / ".git").exists():
        out = subprocess.run(["git", "ls-files", folder], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
        return {name for name in out if (ROOT / name).is_file()}
    return {str(p.relative_to(ROOT)) for p in (ROOT / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


@pytest.mark.slow  # builds the sdist
def test_sdist_carries_tests_docs_and_examples(sdist):
    _, names = sdist
    expected = {"LICENSE", "CITATION.cff", "CHANGELOG.md", "README.md", "setup.cfg",
                "pyproject.toml", "candle_sklearn/py.typed", "tests/conftest.py",
                "tests/assets/candle-test-tiny.json", "docs/guide.md", "docs/method.md",
                "candle_sklearn/weights/candle-tiny/open_clip_config.json"}
    assert expected <= names, sorted(expected - names)
    for folder in ("tests", "docs", "examples", "benchmarks", "candle_sklearn"):
        tracked = _source_files(folder)
        assert tracked <= names, sorted(tracked - names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


@pytest.mark.slow  # builds the sdist
def test_tests_run_from_the_unpacked_sdist(sdist):
    top, _ = sdist
    # one test that needs conftest.py and tests/assets; the package must be the sdist's
    code = ("import sys, pytest, candle_sklearn\n"
            "assert candle_sklearn.__file__.startswith(sys.argv[1]), candle_sklearn.__file__\n"
            "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', sys.argv[2]]))\n")
    test = "tests/test_templates.py::test_open_clip_zero_shot_classifier_matches_and_is_transposed"
    run = subprocess.run([sys.executable, "-c", code, str(top), test], cwd=top,
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "1 passed" in run.stdout


@pytest.mark.slow  # builds the sdist
def test_long_description_renders_on_an_index(sdist):
    top, _ = sdist
    info = email.message_from_string((top / "PKG-INFO").read_text(encoding="utf-8"))
    assert info["Description-Content-Type"] == "text/markdown"
    description = info.get_payload() or info["Description"]
    assert description.strip().startswith("# candle_sklearn")
    # pip install comes before any other command
    blocks = re.findall(r"```[a-z]*\n(.*?)```", description, flags=re.S)
    assert blocks and blocks[0].lstrip().startswith("pip install candle-sklearn")
    # every link and image is absolute (an index has no repository to resolve them in)
    targets = re.findall(r"\]\(([^)\s]+)\)", description)
    assert targets
    relative = [t for t in targets if not re.match(r"https?://", t)]
    assert not relative, relative
    project = _metadata()["metadata"]["url"]
    own = [t for t in targets if "candle-sklearn" in t]
    assert own and all(t.startswith(project) or t.startswith(
        project.replace("github.com", "raw.githubusercontent.com")) for t in own), own


def test_metadata_license_urls_and_typing():
    meta = _metadata()["metadata"]
    assert meta["license"] == "BSD-3-Clause" and meta["license_files"] == "LICENSE"
    assert "BSD 3-Clause License" in (ROOT / "LICENSE").read_text()
    assert meta["author"]
    urls = dict(line.split(" = ", 1) for line in meta["project_urls"].strip().splitlines())
    assert {"Source", "Issues", "Changelog", "Paper"} <= set(urls)
    assert urls["Paper"] == "https://arxiv.org/abs/2406.12638"
    assert "Typing :: Typed" in meta["classifiers"]
    assert "py.typed" in _metadata()["options.package_data"]["candle_sklearn"]
    assert (ROOT / "candle_sklearn" / "py.typed").is_file()


def test_changelog_has_a_version_policy_and_the_current_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## Version policy" in text
    assert f"## [{candle_sklearn.__version__}]" in text
    assert "FORMAT_VERSION" in text  # model files have their own version rule


def test_citation_cites_the_paper_and_this_package():
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert str(cff["version"]) == candle_sklearn.__version__
    assert cff["license"] == "BSD-3-Clause"
    paper = cff["preferred-citation"]
    assert [a["family-names"] for a in paper["authors"]] == ["Shi", "Zhang", "Wei", "Li"]
    assert paper["year"] == 2024 and "KDD" in paper["collection-title"]
    assert "2406.12638" in paper["doi"] and "2406.12638" in paper["url"]
