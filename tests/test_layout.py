"""The package layers import one way (service -> consumers/snapshots -> core -> kernels),
and the light entry points stay light."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# folder -> the rtindex subpackages its modules may not import
FORBIDDEN = {
    "kernels": ("rtindex.core", "rtindex.service", "rtindex.api", "rtindex.consumers", "rtindex.snapshots"),
    "rtindex/core": ("rtindex.service", "rtindex.api", "rtindex.consumers", "rtindex.snapshots"),
    "consumers": ("rtindex.service", "rtindex.snapshots"),
    "snapshots": ("rtindex.service", "rtindex.consumers"),
    "rtindex/api": ("rtindex.service", "rtindex.consumers", "rtindex.snapshots", "rtindex.kernels"),
}


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_layers_import_only_downwards(folder: str) -> None:
    wrong = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in imported_modules(path):
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[folder]):
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "imports against the layering (service -> consumers/snapshots -> core -> kernels):\n" + "\n".join(wrong)


def test_api_imports_from_core_only_the_result_types() -> None:
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / "rtindex/api").rglob("*.py"))
        for name in imported_modules(path)
        if name.startswith("rtindex.core") and not name.startswith("rtindex.core.results")
    ]
    assert not wrong, "\n".join(wrong)


def loaded_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


HEAVY = ("numba", "tensorflow", "cupy", "rtindex.core.index", "rtindex.kernels.beam_search")


def test_grpc_client_import_loads_no_engine_numba_or_tensorflow() -> None:
    loaded = loaded_after("import rtindex.client")
    assert "rtindex.api.client" in loaded  # the statement did import the client
    assert not [m for m in HEAVY if m in loaded]


def test_cli_help_loads_no_engine_numba_grpc_or_tensorflow() -> None:
    loaded = loaded_after("from rtindex.service.cli import build_parser\nbuild_parser()")
    assert not [m for m in (*HEAVY, "grpc") if m in loaded]


def test_top_level_names_load_on_first_use() -> None:
    assert not [m for m in HEAVY if m in loaded_after("import rtindex")]
    assert "rtindex.core.index" in loaded_after("import rtindex\nrtindex.Index")
