"""The skip policy (tests/skip_policy.py): in CI an unexpected skip fails the run, an
expected one (no GPU) does not, and outside CI skips only get listed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

SKIPPING_TESTS = {
    "unexpected": "import pytest\n\ndef test_x():\n    pytest.skip('TensorFlow is not installed')\n",
    "module": "import pytest\n\npytest.importorskip('no_such_module_rtindex')\n\ndef test_x():\n    pass\n",
    "expected": (
        "import pytest\n\n@pytest.mark.skipif(True, reason='no CUDA device: none here')\ndef test_x():\n    pass\n"
    ),
    "xfail": "import pytest\n\n@pytest.mark.xfail(reason='known')\ndef test_x():\n    assert False\n",
}


def _run(tmp_path: Path, source: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run pytest with only this plugin on a one-test file, isolated from the project's config."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_one.py").write_text(source)
    environ = {k: v for k, v in os.environ.items() if k not in ("CI", "RTINDEX_STRICT_SKIPS")}
    environ["PYTHONPATH"] = str(TESTS)
    environ.update(env)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "skip_policy", "-p", "no:cacheprovider", "-q",
                           "test_one.py"], cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("kind", ["unexpected", "module"])
@pytest.mark.parametrize("env", [{"RTINDEX_STRICT_SKIPS": "1"}, {"CI": "true"}], ids=["strict", "ci"])
def test_an_unexpected_skip_fails_a_strict_run(tmp_path: Path, kind: str, env: dict[str, str]) -> None:
    run = _run(tmp_path, SKIPPING_TESTS[kind], **env)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "unexpected skips (these fail the run)" in run.stdout


@pytest.mark.parametrize("kind", ["expected", "xfail"])
def test_an_expected_skip_or_an_xfail_passes_a_strict_run(tmp_path: Path, kind: str) -> None:
    run = _run(tmp_path, SKIPPING_TESTS[kind], RTINDEX_STRICT_SKIPS="1")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "unexpected skips" not in run.stdout


def test_outside_ci_an_unexpected_skip_is_listed_but_passes(tmp_path: Path) -> None:
    run = _run(tmp_path, SKIPPING_TESTS["unexpected"], CI="true", RTINDEX_STRICT_SKIPS="0")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "TensorFlow is not installed" in run.stdout and "unexpected skips (set RTINDEX_STRICT_SKIPS=1" in run.stdout
