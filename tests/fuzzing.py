"""Settings shared by the property-based (hypothesis) tests of the edges: a bounded
number of examples, generated from a fixed seed so a failure in CI reproduces anywhere.

Environment (for a longer hunt on a workstation, not for CI):
- ``RTINDEX_FUZZ_SCALE``: multiplies every test's number of examples (default 1).
- ``RTINDEX_FUZZ_RANDOM=1``: new random examples each run instead of the fixed ones
  (hypothesis then prints the seed of a failure: ``@seed(...)`` reproduces it).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings


def fuzz(max_examples: int) -> settings:
    """Settings for one property: ``max_examples`` (times ``RTINDEX_FUZZ_SCALE``), no
    per-example deadline (a loaded CI machine must not turn a slow example into a
    failure), no example database (nothing written into the repository)."""
    scale = float(os.environ.get("RTINDEX_FUZZ_SCALE", "1"))
    return settings(
        max_examples=max(1, round(max_examples * scale)),
        deadline=None,
        derandomize=os.environ.get("RTINDEX_FUZZ_RANDOM") != "1",
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
