"""Importing the training modules stays cheap: no torch, diffusers, transformers or Qt."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import charstudio.training

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ["torch", "diffusers", "transformers", "safetensors", "PySide6"]


def test_training_modules_import_without_torch() -> None:
    names = [
        f"charstudio.training.{info.name}"
        for info in pkgutil.iter_modules(charstudio.training.__path__)
    ]
    assert {"charstudio.training.ti", "charstudio.training.cli_args"} <= set(names)
    code = (
        "import importlib, json, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert json.loads(out.stdout) == []
