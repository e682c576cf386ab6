"""A pytest plugin: in CI a skipped test fails the run unless its reason is expected.

A skip looks like a pass in a green run: a missing extra (TensorFlow, NVRTC) or an empty
parameter set would silently drop whole test files. Strict mode is on when
``RTINDEX_STRICT_SKIPS=1`` (scripts/test.sh sets it) or, without that variable, when
``CI=true``; then any skip whose reason does not start with one of ``EXPECTED_SKIPS``
is listed at the end of the run and the exit status is 1. ``-ra`` (pyproject.toml)
prints every skip's reason either way.

tests/conftest.py loads it; ``pytest -p skip_policy`` loads it elsewhere (its own test).
"""

from __future__ import annotations

import os

import pytest

# reason prefixes a CI run may skip for: the GPU tests on a machine without a GPU (CI has
# none), and the no-GPU tests on a machine with one
EXPECTED_SKIPS = ("no CUDA device", "a GPU is present")

_unexpected: list[str] = []  # "nodeid: reason" of each unexpected skip of this session


def strict() -> bool:
    flag = os.environ.get("RTINDEX_STRICT_SKIPS")
    if flag is not None:
        return flag == "1"
    return os.environ.get("CI", "").lower() == "true"


def _reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")


def _note(report: pytest.CollectReport | pytest.TestReport) -> None:
    if not report.skipped or hasattr(report, "wasxfail"):  # an xfail is reported as skipped too
        return
    reason = _reason(report)
    if not reason.startswith(EXPECTED_SKIPS):
        _unexpected.append(f"{report.nodeid or report.fspath}: {reason}")


def pytest_sessionstart(session: pytest.Session) -> None:
    _unexpected.clear()


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _note(report)  # a module that skips as a whole (pytest.importorskip, allow_module_level)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _note(report)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # a run whose only module skipped as a whole collected no tests (exit status 5): that fails too
    if _unexpected and strict() and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _unexpected:
        return
    verdict = "these fail the run" if strict() else "set RTINDEX_STRICT_SKIPS=1 or CI=true to fail on them"
    terminalreporter.section(f"unexpected skips ({verdict})", red=strict(), yellow=not strict())
    terminalreporter.line(f"expected skip reasons start with: {', '.join(EXPECTED_SKIPS)}")
    for line in _unexpected:
        terminalreporter.line(line)
