"""Hypothesis settings shared by the property-based tests. Runs are reproducible
(derandomized); CANDLE_FUZZ_RANDOM=1 explores new cases.

The property-based tests live in the test file of the module they check, beside its
other tests. Without hypothesis (the ``fuzz`` extra) the names imported from here are
stand-ins: ``@given`` tests skip, naming what is missing, and the file's other tests run.
"""

import os

import pytest

try:
    from hypothesis import HealthCheck, event, given, settings
    from hypothesis import strategies as st
except ImportError:  # the fuzz extra is not installed
    HAVE_HYPOTHESIS = False
else:
    HAVE_HYPOTHESIS = True


if HAVE_HYPOTHESIS:
    def fuzz(n):
        """Settings for ``n`` generated cases, no deadline, no example database."""
        return settings(max_examples=n, deadline=None, database=None,
                        derandomize=os.environ.get("CANDLE_FUZZ_RANDOM") != "1",
                        suppress_health_check=[HealthCheck.too_slow,
                                               HealthCheck.function_scoped_fixture])
else:
    class _AnyStrategy:
        """Stands for ``hypothesis.strategies`` and every strategy built from it at import
        time (calls, ``.map``, ``.filter``, ``@st.composite``...); never drawn from."""

        def __call__(self, *args, **kwargs):
            return self

        def __getattr__(self, name):
            return self

    st = _AnyStrategy()

    def fuzz(n):
        return lambda test: test

    def given(*args, **kwargs):
        def skipped(test):
            def stand_in():
                pytest.skip("needs hypothesis (pip install 'candle-sklearn[fuzz]')")
            stand_in.__name__, stand_in.__qualname__ = test.__name__, test.__qualname__
            stand_in.__doc__, stand_in.__module__ = test.__doc__, test.__module__
            return stand_in
        return skipped

    def event(*args, **kwargs):
        pass
