"""``rtindex serve`` as a child process for the benchmarks: flags only (the caller's
RTINDEX_* settings are dropped), JSON logs drained in a thread so a long run never
blocks on a full pipe. Returns once the server listens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading


def start_server(*flags: str) -> tuple[subprocess.Popen, int]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RTINDEX_")}, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rtindex", "serve", "--port", "0", "--log-format", "json",
                             *flags], stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    for line in proc.stderr:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("msg") == "listening":
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
            return proc, int(event["address"].rsplit(":", 1)[1])
    raise RuntimeError(f"rtindex serve exited with {proc.wait()} before listening")
