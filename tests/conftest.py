"""Shared fixtures. Tests run offline and offscreen; nothing is downloaded."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Model-hash caches and the like go to a throwaway folder, never the user's own cache.
if "CHARSTUDIO_TEST_KEEP_CACHE" not in os.environ:
    import tempfile

    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="charstudio-test-cache-")

import errno
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

A1111_INFOTEXT = (
    "an extreme closeup front shot photo of a 25yo French woman, chin length straight black "
    "hair in a bob cut with bangs, (neutral gray background:1.3), neutral face expression\n"
    "Negative prompt: jewellery, clothes, (blurry:1.2)\n"
    "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: {seed}, "
    "Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, "
    'Lora hashes: "fr3nch: 1a2b3c4d5e6f", Version: v1.10.1'
)


def a1111_infotext(seed: int) -> str:
    return A1111_INFOTEXT.format(seed=seed)


@pytest.fixture
def make_png() -> Callable[..., Path]:
    """Write a small PNG like A1111 does (noise pixels, ``parameters`` text chunk)."""

    def make(path: Path, *, seed: int = 1, infotext: str | None = "", size: int = 64) -> Path:
        rng = random.Random(seed)
        image = Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))
        info = PngImagePlugin.PngInfo()
        text = a1111_infotext(seed) if infotext == "" else infotext
        if text is not None:
            info.add_text("parameters", text)
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, pnginfo=info)
        return path

    return make


_REAL_REPLACE = os.replace


@pytest.fixture
def two_drives(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every folder is its own drive: ``os.replace`` between folders fails with EXDEV (Windows:
    error 17), as between two volumes. Returns the refused (source, target) pairs."""
    refused: list[tuple[str, str]] = []

    def replace(src: object, dst: object) -> None:
        a, b = os.fspath(src), os.fspath(dst)  # type: ignore[arg-type]
        if os.path.dirname(os.path.abspath(a)) != os.path.dirname(os.path.abspath(b)):
            refused.append((a, b))
            raise OSError(errno.EXDEV, "Invalid cross-device link", a, None, b)
        _REAL_REPLACE(a, b)

    monkeypatch.setattr(os, "replace", replace)
    return refused


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SD model as a diffusers folder, written once per test module (modules with
    a model of their own define their own ``model_dir``)."""
    from .tiny_sd import tiny_components, write_diffusers_folder

    return write_diffusers_folder(tmp_path_factory.mktemp("models") / "tiny-sd", tiny_components(5))


@pytest.fixture
def project(tmp_path: Path):
    """A new project in ``tmp_path / "proj"`` (modules that need another define their own)."""
    from charstudio.catalog import Project

    with Project.create(tmp_path / "proj", "Demo") as project:
        yield project
