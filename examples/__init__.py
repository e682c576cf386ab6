"""Worked examples (run from the repository root: python -m examples.<name>)."""
