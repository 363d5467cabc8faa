"""A1111's "Random number generator source" end to end: written as ``RNG`` in every image's
infotext, honoured when an image is regenerated, NV by default."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402
from PIL.PngImagePlugin import PngInfo  # noqa: E402

from charstudio.catalog import Project  # noqa: E402
from charstudio.engine.regenerate import regenerate_image, settings_from_infotext  # noqa: E402
from charstudio.engine.requests import GenerateRequest  # noqa: E402
from charstudio.engine.sweeps import GenerationSettings  # noqa: E402
from charstudio.jobs import run_job  # noqa: E402
from charstudio.metadata.imagefile import read_infotext  # noqa: E402
from charstudio.metadata.infotext import format_infotext, parse_infotext  # noqa: E402

from .generation import generate_images, tiny_settings  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PROMPT = "a closeup photo of a woman, neutral gray background"
INFOTEXT = "a woman\nSteps: 3, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 32x32, Model: tiny-sd"


def settings(model_dir: Path, **changes) -> GenerationSettings:
    # Euler a is ancestral: its step noise comes from the RNG source too.
    defaults = {"prompt": PROMPT, "negative_prompt": "", "seed": 4321}
    return tiny_settings(model_dir, **{**defaults, **changes})


generate = generate_images


def image_file(project: Project, image_id: int) -> Path:
    return project.file_path(project.catalog.image(image_id).path)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def copy_with_infotext(source: Path, target: Path, infotext: str) -> Path:
    info = PngInfo()
    info.add_text("parameters", infotext)
    with Image.open(source) as image:
        image.save(target, pnginfo=info)
    return target


def regenerate_imported(tmp_path: Path, file: Path, model_dir: Path, name: str):
    from charstudio.catalog.importer import import_images

    with Project.create(tmp_path / name, name) as other:
        run_job(import_images(other, [file]))
        (image_id,) = [r.id for r in other.catalog.images()]
        return run_job(regenerate_image(other, image_id, model=str(model_dir)))


# --- settings and infotext ----------------------------------------------------------------------


def test_nv_is_the_default_and_names_are_a1111s() -> None:
    assert GenerationSettings(prompt="").rng == "NV"
    assert GenerationSettings(prompt="", rng="cpu").rng == "CPU"
    with pytest.raises(ValueError, match="rng"):
        GenerationSettings(prompt="", rng="TPU")


def test_every_image_writes_its_rng() -> None:
    for rng in ("NV", "CPU", "GPU"):
        params = GenerationSettings(prompt="a", rng=rng).to_params(7)
        assert params.settings["RNG"] == rng
    # One RNG key, the settings' own, even when extras carry a stale one.
    params = GenerationSettings(prompt="a", extra_params=(("RNG", "CPU"),)).to_params(7)
    assert format_infotext(params).count("RNG:") == 1 and params.settings["RNG"] == "NV"


def test_reading_rng_as_a1111_does() -> None:
    assert settings_from_infotext(INFOTEXT + ", RNG: CPU", model=None).rng == "CPU"
    assert settings_from_infotext(INFOTEXT + ", RNG: NV", model=None).rng == "NV"
    # A missing key is A1111's default, GPU ...
    assert settings_from_infotext(INFOTEXT, model=None).rng == "GPU"
    # ... except in charstudio's own images from before it wrote the key (torch CPU noise).
    old = INFOTEXT + ", Version: charstudio 0.1.0"
    assert settings_from_infotext(old, model=None).rng == "CPU"


def test_requests_stored_before_the_setting_keep_cpu_noise() -> None:
    params = GenerateRequest(GenerationSettings(prompt="a")).to_params()
    assert params["settings"]["rng"] == "NV"
    del params["settings"]["rng"]
    assert GenerateRequest.from_params(params).settings.rng == "CPU"


# --- generation ---------------------------------------------------------------------------------


def test_the_rng_source_draws_the_noise(project, model_dir) -> None:
    nv, cpu = (
        generate(project, GenerateRequest(settings(model_dir, rng=rng)))[0] for rng in ("NV", "CPU")
    )
    for image_id, rng in ((nv, "NV"), (cpu, "CPU")):
        assert parse_infotext(read_infotext(image_file(project, image_id))).settings["RNG"] == rng
    assert not np.array_equal(pixels(image_file(project, nv)), pixels(image_file(project, cpu)))


@pytest.mark.parametrize("rng", ["NV", "CPU"])
def test_an_image_regenerates_with_the_rng_its_infotext_names(
    project, model_dir, tmp_path, rng
) -> None:
    (image_id,) = generate(project, GenerateRequest(settings(model_dir, rng=rng)))
    # From its job (the same batch) and, imported elsewhere, from its infotext alone.
    assert run_job(regenerate_image(project, image_id)).identical is True
    result = regenerate_imported(tmp_path, image_file(project, image_id), model_dir, "other")
    assert result.identical is True
    assert parse_infotext(result.infotext).settings["RNG"] == rng


@pytest.mark.skipif(torch.cuda.is_available(), reason="without CUDA, GPU noise is computed as NV")
def test_a1111_default_gpu_images_regenerate_without_cuda(project, model_dir, tmp_path) -> None:
    (image_id,) = generate(project, GenerateRequest(settings(model_dir, rng="NV")))
    file = image_file(project, image_id)
    text = read_infotext(file)
    # The same image as A1111 writes it with its default source: no RNG key, no Version.
    a1111 = text.replace(", RNG: NV", "").split(", Version:")[0]
    assert "RNG" not in a1111 and a1111 != text
    copy = copy_with_infotext(file, tmp_path / "a1111.png", a1111)
    result = regenerate_imported(tmp_path, copy, model_dir, "a1111")
    assert result.identical is True
    assert parse_infotext(result.infotext).settings["RNG"] == "GPU"


def test_the_command_line_sets_the_rng_and_variation() -> None:
    from charstudio.cli import _generate_request, build_parser

    base = ["generate", "proj", "--model", "m", "--prompt", "a"]
    request = _generate_request(build_parser().parse_args(base))
    assert request.settings.rng == "NV"
    args = ["--rng", "cpu", "--subseed", "9", "--subseed-strength", "0.5"]
    settings = _generate_request(build_parser().parse_args(base + args)).settings
    assert (settings.rng, settings.subseed, settings.subseed_strength) == ("CPU", 9, 0.5)
