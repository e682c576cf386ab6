"""``rtindex serve`` as a child process for tests: flags only (RTINDEX_* variables of the
caller are dropped), JSON logs to a file the test can read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def clean_env() -> dict[str, str]:
    """The caller's environment minus RTINDEX_* settings: only the flags configure the server."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("RTINDEX_")}, "PYTHONUNBUFFERED": "1"}


class ServerProcess:
    def __init__(self, log_path: Path, *flags: str, timeout: float = 120.0,
                 launcher: Sequence[str] = ("-m", "rtindex"), env: dict[str, str] | None = None) -> None:
        """launcher: what runs the ``rtindex`` command (e.g. a test script wrapping it);
        env: variables to set on top of ``clean_env()``."""
        self.log_path = log_path
        self._log = open(log_path, "a")  # noqa: SIM115 - closed in wait()/kill()
        self.proc = subprocess.Popen(
            [sys.executable, *launcher, "serve", "--port", "0", "--log-format", "json", *flags],
            stderr=self._log, stdout=self._log, text=True, env={**clean_env(), **(env or {})},
        )
        self._start = log_path.stat().st_size if log_path.exists() else 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events():
                if event.get("msg") == "listening":
                    self.port = int(event["address"].rsplit(":", 1)[1])
                    self.target = f"127.0.0.1:{self.port}"
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"server did not start (exit code {self.proc.poll()}); log: {log_path}")

    def events(self) -> list[dict]:
        """JSON log lines written by this process so far (other lines skipped)."""
        out = []
        with open(self.log_path) as f:
            f.seek(self._start)
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def tail(self, lines: int = 40) -> str:
        """The last lines this process wrote to its log: what to print when a test
        gives up waiting on it."""
        with open(self.log_path) as f:
            f.seek(self._start)
            return "".join(f.readlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: no drain, no final snapshot (a crash)."""
        self.proc.kill()
        self.proc.wait(30)
        self._log.close()

    def terminate(self, timeout: float = 60) -> int:
        self.proc.terminate()
        code = self.proc.wait(timeout)
        self._log.close()
        return code
