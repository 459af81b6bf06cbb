"""The example scripts run as a user would copy them."""

import runpy
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each script embeds images or fits models (seconds each)

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path, capsys):
    runpy.run_path(str(path), run_name="__main__")
    assert capsys.readouterr().out.strip()
