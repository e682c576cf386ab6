"""Waiting for a condition in tests: an explicit condition with a deadline, never a bare
sleep whose length stands in for "long enough" (too short on a loaded machine, wasted
time on a fast one) and never a loop that spins forever when the condition never holds."""

from __future__ import annotations

import time
from collections.abc import Callable

POLL_S = 0.01  # how often the condition is re-checked; short against any timeout used here


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Return as soon as ``condition()`` is truthy; fail the test after ``timeout``
    seconds, saying what was awaited. ``condition`` may itself raise (e.g. assert that a
    background thread has not failed) to stop the wait early."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL_S)
