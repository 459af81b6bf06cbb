"""Hypothesis settings shared by the property-based suites (imported after
``pytest.importorskip("hypothesis")``). Runs are reproducible (derandomized);
CANDLE_FUZZ_RANDOM=1 explores new cases."""

import os

from hypothesis import HealthCheck, settings


def fuzz(n):
    """Settings for ``n`` generated cases, no deadline, no example database."""
    return settings(max_examples=n, deadline=None, database=None,
                    derandomize=os.environ.get("CANDLE_FUZZ_RANDOM") != "1",
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
