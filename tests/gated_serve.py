"""``rtindex serve`` whose single writer a test holds, so that writes are provably queued
when the test signals the process (tests/test_drain.py).

Usage: ``python tests/gated_serve.py GATE_DIR serve FLAGS...``. In GATE_DIR the writer
appends a line to ``queued`` for each write it accepts and to ``applying`` for each batch
it is about to apply, then waits until the file ``release`` exists. Everything else is
the real command (signals, drain, final snapshot)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from rtindex.core.writer import Writer
from rtindex.service.cli import main

HOLD_AT_MOST = 120.0  # seconds: a test that never releases must not leave the process stuck forever


def _note(path: Path) -> None:
    with open(path, "a") as f:
        f.write("1\n")


def _install(gate: Path) -> None:
    submit, apply = Writer._submit, Writer._apply

    def gated_submit(self: Writer, write: Any) -> Any:
        future = submit(self, write)
        _note(gate / "queued")
        return future

    def gated_apply(self: Writer, batch: list[Any]) -> None:
        _note(gate / "applying")
        deadline = time.monotonic() + HOLD_AT_MOST
        while not (gate / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        apply(self, batch)

    Writer._submit = gated_submit  # type: ignore[method-assign]
    Writer._apply = gated_apply  # type: ignore[method-assign]


if __name__ == "__main__":
    _install(Path(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
