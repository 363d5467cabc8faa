"""Importing the analysis package stays cheap: heavy libraries load inside the functions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = [
    "charstudio.analysis",
    "charstudio.analysis.clustering",
    "charstudio.analysis.detection",
    "charstudio.analysis.duplicates",
    "charstudio.analysis.flags",
    "charstudio.analysis.job",
    "charstudio.analysis.pipeline",
    "charstudio.analysis.recognition",
    "charstudio.analysis.results",
    "charstudio.analysis.sharpness",
    "charstudio.analysis.similarity",
    "charstudio.analysis.weights",
]
HEAVY = ["torch", "torchvision", "facenet_pytorch", "imagehash", "PIL", "scipy", "PySide6"]


@pytest.mark.parametrize("module", MODULES)
def test_importing_loads_no_heavy_library(module: str) -> None:
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert json.loads(out.stdout) == []
