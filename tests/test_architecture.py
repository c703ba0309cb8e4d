"""The layer contracts (pyproject's [tool.importlinter]) cover the whole core and hold."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _contracts() -> list[dict]:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["tool"]["importlinter"]["contracts"]


def test_core_contract_lists_every_core_module():
    """A new core module cannot escape the 'core imports nothing above it' contract."""
    core = next(c for c in _contracts() if c["name"] == "The core imports nothing above it")
    on_disk = {
        f"bbi.{p.stem if p.is_file() else p.name}"
        for p in (ROOT / "bbi").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__")
        or (p.is_dir() and (p / "__init__.py").exists() and p.name != "app")
    }
    assert set(core["source_modules"]) == on_disk


def test_core_package_init_imports_only_the_core():
    tree = ast.parse((ROOT / "bbi" / "__init__.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            assert node.module.split(".")[0] == "bbi" and not node.module.startswith("bbi.app")


@pytest.mark.skipif(
    shutil.which("lint-imports", path=str(Path(sys.executable).parent)) is None,
    reason="import-linter is not installed",
)
def test_lint_imports_passes():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    proc = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
