"""Shared by the benchmarks: markdown tables and writing a report to bench/results/."""

from __future__ import annotations

from pathlib import Path


def table(header: list[str], rows: list[list[object]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(out + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def write_report(path: str | Path, text: str) -> None:
    """Print ``text`` and save it (bench/results/ is not committed: results are per machine)."""
    print(text)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(f"\nwritten to {out}")
