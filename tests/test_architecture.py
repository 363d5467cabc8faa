"""The core stays Qt-free and imports torch only lazily; the code stays lint-clean."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = [
    "charstudio",
    "charstudio.atomic_files",
    "charstudio.portable_paths",
    "charstudio.catalog",
    "charstudio.catalog.importer",
    "charstudio.metadata",
    "charstudio.prompts",
    "charstudio.jobs",
    "charstudio.jobs.queue",
    "charstudio.engine",
    "charstudio.engine.sweeps",
    "charstudio.engine.grid_image",
    "charstudio.engine.samplers",
    "charstudio.engine.seeds",
    "charstudio.engine.philox",
    "charstudio.engine.conditioning",
    "charstudio.engine.embeddings",
    "charstudio.engine.model_loading",
    "charstudio.engine.model_hash",
    "charstudio.engine.sampling",
    "charstudio.engine.loras",
    "charstudio.engine.runtime",
    "charstudio.engine.requests",
    "charstudio.engine.runner",
    "charstudio.engine.generate",
    "charstudio.engine.regenerate",
    "charstudio.cli",
]
HEAVY = ["PySide6", "torch", "diffusers", "transformers", "facenet_pytorch"]


def test_core_imports_neither_qt_nor_torch() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for name in {CORE!r}: importlib.import_module(name)\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert json.loads(out.stdout) == []


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(f"{name} is not installed in this environment")
    return found


def test_import_contracts_hold() -> None:
    result = subprocess.run(
        [_tool("lint-imports"), "--no-cache"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_is_clean() -> None:
    result = subprocess.run(
        [
            _tool("ruff"),
            "check",
            "charstudio",
            "tests",
            "benchmarks",
            "main.py",
            "bootstrap.py",
            "run_tests.py",
            "relock.py",
            "packaging",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
