"""Every Examples section of the package's docstrings runs as written (doctest)."""

import doctest
import importlib
import pkgutil

import pytest

import candle_sklearn

MODULES = sorted(info.name for info in pkgutil.walk_packages(candle_sklearn.__path__,
                                                             "candle_sklearn.")
                 if not info.name.endswith("__main__"))
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _examples(name):
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, name)
    return [test for test in tests if test.examples]


def test_the_public_api_has_examples():
    with_examples = {test.name for name in MODULES for test in _examples(name)}
    for name in ("CandleClassifier", "ClipEmbedder", "LongTailDisplay", "ZeroShotClassifier",
                 "BaseNewSplit"):
        assert any(n.rsplit(".", 1)[-1] == name for n in with_examples), name


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")  # LongTailDisplay's example draws
    monkeypatch.chdir(tmp_path)  # an example that writes a file writes it here
    report = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in _examples(name):
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
