"""Sphinx configuration of the candle_sklearn documentation.

Build it with ``bash tools/run.sh docs`` (HTML in docs/_build/html). The build is offline:
no intersphinx inventory is fetched, the theme and its assets come with the installed
package, and the gallery runs the examples on synthetic features and the bundled tiny CLIP.
"""

import importlib.util
import os
import re
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EXAMPLES = ROOT / "examples"  # beside docs/, in a checkout or an unpacked sdist

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded at build time
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
warnings.filterwarnings("ignore", category=DeprecationWarning, module="open_clip")

import torch  # noqa: E402

import candle_sklearn  # noqa: E402

# The gallery's examples run in this process. They are small, and one torch thread keeps
# the build's time steady when it shares the cores: on 2 cores at load average 8, the
# build took 255 s with torch's default of two threads and 67 s with one.
torch.set_num_threads(1)

project = "candle_sklearn"
author = "the candle_sklearn developers"
copyright = "the candle_sklearn developers"  # noqa: A001 (Sphinx's name)
release = candle_sklearn.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "long_tail_demo.png"]
# sphinx-gallery's timing page is written on every build and listed in no toctree
exclude_patterns += ["sg_execution_times.rst"]

# -- API reference: autosummary stubs from the docstrings, parsed by numpydoc ---------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True}
autodoc_typehints = "none"  # the numpydoc sections document the types
autodoc_inherit_docstrings = False
numpydoc_show_class_members = False  # the class template lists the members itself
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set = set()

# -- Markdown pages (docs/*.md, written for GitHub) -----------------------------------------
myst_enable_extensions: list = []  # as GitHub renders them: no "$" math, no extras
myst_heading_anchors = 3

# -- Gallery: examples/plot_*.py run at build time, their figures shown ----------------------
sphinx_gallery_conf = {
    "examples_dirs": str(EXAMPLES),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "abort_on_example_error": True,
    "reset_modules": ("matplotlib",),
    "write_computation_times": False,
    "show_memory": False,
    "min_reported_time": 1,
    "recommender": {"enable": False},
    "show_api_usage": False,
    "first_notebook_cell": None,
}

# -- Offline: no inventories, no remote assets ---------------------------------------------
intersphinx_mapping: dict = {}

# -- HTML ----------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"candle_sklearn {release}"
html_static_path: list = []
html_show_sourcelink = False
html_theme_options = {
    "github_url": "https://github.com/candle-sklearn/candle-sklearn",
    "navbar_end": ["theme-switcher", "navbar-icon-links"],
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_context = {"default_mode": "light"}


# -- Pages that exist only in some checkouts -----------------------------------------------
# docs/scaling.md and candle_sklearn.distributed are optional: a toctree entry or an
# automodule of something missing would be a warning, so index.rst and api.rst carry
# placeholders filled here with whatever exists.
def _optional_pages():
    return [name for name in ("scaling",) if (HERE / f"{name}.md").is_file()]


def _distributed_section():
    if importlib.util.find_spec("candle_sklearn.distributed") is None:
        return ""
    return ("Distributed embedding\n"
            "---------------------\n\n"
            ".. automodule:: candle_sklearn.distributed\n"
            "   :members:\n\n")


def _fill_placeholders(app, docname, source):
    if docname == "index":
        pages = "".join(f"   {page}\n" for page in _optional_pages())
        source[0] = source[0].replace("   .. optional pages\n", pages)
    elif docname == "api":
        source[0] = source[0].replace(".. distributed section\n", _distributed_section())


def _skip_member(app, what, name, obj, skip, options):
    # scikit-learn adds set_{method}_request to estimators whose methods take extra
    # arguments (metadata routing); they are scikit-learn's, documented there
    if name.startswith("set_") and name.endswith("_request"):
        return True
    # Python's own exception methods (add_note, with_traceback)
    if getattr(obj, "__objclass__", None) is BaseException:
        return True
    return None


# In the type of a numpydoc entry ("X : ndarray of shape (n_samples, n_features_in_)"), a
# name ending in "_" would read as a reST reference: quote it as code, as scikit-learn
# does by hand. Runs before numpydoc parses the docstring.
_TYPE_LINE = re.compile(r"^(\s*[\w*, ]+ : )(.*)$")
_TRAILING_UNDERSCORE = re.compile(r"(?<![`\w])([A-Za-z]\w*_)(?![`\w])")


def _quote_attribute_names(app, what, name, obj, options, lines):
    for i, line in enumerate(lines):
        if match := _TYPE_LINE.match(line):
            lines[i] = match[1] + _TRAILING_UNDERSCORE.sub(r"``\1``", match[2])


def setup(app):
    app.connect("source-read", _fill_placeholders)
    app.connect("autodoc-process-docstring", _quote_attribute_names, priority=100)
    app.connect("autodoc-skip-member", _skip_member)

