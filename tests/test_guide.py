"""The user guide's code runs as written."""

import re
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # a grid search on 30 classes: 3 candidates, 3 folds, refit

GUIDE = Path(__file__).parents[1] / "docs" / "guide.md"


def _python_blocks(section):
    text = GUIDE.read_text(encoding="utf-8")
    start = text.index(f"## {section}")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end if end > 0 else None], re.S)


def test_model_selection_section_selects_tau_by_a_finite_score(capsys):
    blocks = _python_blocks("Model selection that sees new classes")
    assert blocks
    namespace = {}
    for code in blocks:
        exec(compile(code, str(GUIDE), "exec"), namespace)  # noqa: S102 - our own docs
    search = namespace["search"]
    scores = search.cv_results_["mean_test_score"]
    assert np.isfinite(scores).all() and (scores > 0).all()
    # prefer_default refits the default tau, or the best-scoring one where it is better
    best = search.cv_results_["params"][int(np.argmax(scores))]["tau"]
    assert search.best_params_["tau"] in (1.0, best)
    assert "tau" in capsys.readouterr().out
