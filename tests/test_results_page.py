"""docs/benchmarks.md is the page benchmarks/report.py makes of the figures kept in
benchmarks/results/: never edited by hand, never out of date."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "benchmarks" / "report.py"
pytestmark = pytest.mark.skipif(not REPORT.is_file(), reason="needs the source tree")


def test_results_page_is_generated_from_the_kept_figures():
    spec = importlib.util.spec_from_file_location("report", REPORT)
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    page = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert page == report.page(), "run `.venv/bin/python benchmarks/report.py`"
    assert page.count("\n") <= 200  # a results page, not a lab notebook
