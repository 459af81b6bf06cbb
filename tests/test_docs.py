"""The documentation builds offline without a warning, and its gallery shows figures.

The build (``bash tools/run.sh docs`` does the same into docs/_build/html) runs from a copy
of docs/ and examples/, so that the pages Sphinx generates next to its sources never land in
the checkout, and with every HTTP(S) request sent to a closed local port, so that a build
that tried to fetch anything (an intersphinx inventory, a remote image) would warn and fail.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

for _module in ("sphinx", "sphinx_gallery", "numpydoc", "pydata_sphinx_theme", "myst_parser",
                "matplotlib"):
    pytest.importorskip(_module, reason="the docs extra: pip install 'candle-sklearn[docs]'")

ROOT = Path(__file__).resolve().parent.parent
DOCS, EXAMPLES = ROOT / "docs", ROOT / "examples"
pytestmark = [pytest.mark.slow,  # a Sphinx build that runs the gallery
              pytest.mark.skipif(not (DOCS / "conf.py").is_file(),
                                 reason="needs the source tree (docs/conf.py)")]
GENERATED = ("_build", "generated", "auto_examples", "sg_execution_times.rst")
PAGES = ("guide", "method", "benchmarks", "reproducing")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    top = tmp_path_factory.mktemp("site")
    shutil.copytree(DOCS, top / "docs", ignore=shutil.ignore_patterns(*GENERATED))
    shutil.copytree(EXAMPLES, top / "examples",
                    ignore=shutil.ignore_patterns("__pycache__", "*.png"))
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens, a request fails at once
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "http_proxy": closed,
           "https_proxy": closed, "HTTP_PROXY": closed, "HTTPS_PROXY": closed,
           "no_proxy": "", "NO_PROXY": ""}
    out = top / "html"
    run = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going",
                          "-q", str(top / "docs"), str(out)],
                         capture_output=True, text=True, env=env, cwd=top, timeout=900)
    return run, out


def test_builds_without_a_warning(site):
    run, out = site
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    assert "WARNING" not in run.stderr and "ERROR" not in run.stderr, run.stderr[-5000:]
    assert (out / "index.html").is_file()


def test_markdown_pages_are_pages_of_the_site(site):
    _, out = site
    index = (out / "index.html").read_text(encoding="utf-8")
    for page in PAGES + tuple(p.stem for p in DOCS.glob("scaling.md")):
        html = out / f"{page}.html"
        assert html.is_file(), page
        assert f'href="{page}.html"' in index, page
        title = (DOCS / f"{page}.md").read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
        assert re.sub(r"[`*]", "", title) in re.sub(r"<[^>]+>", "", html.read_text("utf-8"))


def test_api_reference_is_generated_from_the_docstrings(site):
    _, out = site
    api = (out / "api.html").read_text(encoding="utf-8")
    for name in ("CandleClassifier", "ClipEmbedder", "CandlePipeline", "make_candle_pipeline",
                 "save", "load", "LongTailDisplay", "BaseNewSplit", "ZeroShotClassifier",
                 "LinearProbeClassifier", "make_clip_like_features", "ImageInputError",
                 "WeightsUnavailableError", "text_features_from_open_clip"):
        assert name in api, name
    clf = (out / "generated" / "candle_sklearn.CandleClassifier.html").read_text("utf-8")
    # numpydoc's sections and the methods' own docstrings
    assert "Parameters" in clf and "Attributes" in clf and "Examples" in clf
    assert "predict_log_proba" in clf and "calibrated" in clf
    assert "set_predict_proba_request" not in clf  # scikit-learn's, not ours
    display = out / "generated" / "candle_sklearn.metrics.LongTailDisplay.html"
    assert "from_estimator" in display.read_text("utf-8")


def test_gallery_runs_every_example_and_shows_its_figures(site):
    _, out = site
    examples = sorted(p.stem for p in EXAMPLES.glob("plot_*.py"))
    assert len(examples) >= 4
    index = (out / "auto_examples" / "index.html").read_text(encoding="utf-8")
    for name in examples:
        page = (out / "auto_examples" / f"{name}.html").read_text(encoding="utf-8")
        images = re.findall(r'<img[^>]+src="\.\./(_images/sphx_glr_' + name + r'_\d+\.png)"',
                            page)
        assert images, f"{name}: no figure on its gallery page"
        for image in images:
            png = (out / image).read_bytes()
            assert png.startswith(b"\x89PNG") and len(png) > 5000, image
        assert "sphx-glr-script-out" in page, f"{name}: no printed output"  # it ran
        assert f"{name}.html" in index


def test_the_three_figures_of_the_issue_are_in_the_gallery(site):
    _, out = site
    text = {p.stem: p.read_text(encoding="utf-8") for p in EXAMPLES.glob("plot_*.py")}
    assert any("LongTailDisplay" in t and "plt.show()" in t for t in text.values())
    assert any('{"tau":' in t and "plt.show()" in t for t in text.values())
    assert any("best_new_class_bias" in t and "plt.show()" in t for t in text.values())


def test_site_loads_nothing_remote(site):
    _, out = site
    remote = []
    for html in out.rglob("*.html"):
        remote += re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="https?://[^"]+"',
                             html.read_text(encoding="utf-8"))
    assert not remote, remote[:5]
