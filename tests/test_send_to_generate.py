"""Send to Generate (A1111's "Send to txt2img") and the grid's right-click menu."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QSettings

from charstudio.catalog import Project
from charstudio.catalog.importer import import_images
from charstudio.catalog.records import ImageRecord
from charstudio.engine.requests import GenerateRequest
from charstudio.engine.sweeps import GenerationSettings
from charstudio.jobs import run_job
from charstudio.presenters.send_to_generate import request_from_image
from tests.conftest import a1111_infotext

CURRENT = GenerateRequest(
    GenerationSettings(prompt="old", model="/models/deliberate_v2.safetensors", vae="/v/ft.pt"),
    x="Prompt S/R:a, b",
)


def record(**fields) -> ImageRecord:
    base = {"path": "images/a.png", "sha256": "0" * 64, "file_size": 1, "file_mtime": 0.0}
    base |= {"width": 512, "height": 768, "format": "PNG"}
    return ImageRecord(**(base | fields))


def test_an_a1111_image_becomes_one_image_with_its_settings(tmp_path: Path) -> None:
    model = tmp_path / "v1-5-pruned-emaonly.safetensors"
    model.write_bytes(b"x")
    sent = request_from_image(
        record(infotext=a1111_infotext(1234), model="v1-5-pruned-emaonly"),
        checkpoints=[tmp_path / "other.safetensors", model],
        current=CURRENT,
    )
    settings = sent.request.settings
    assert settings.prompt.startswith("an extreme closeup front shot photo of a 25yo")
    assert settings.negative_prompt == "jewellery, clothes, (blurry:1.2)"
    assert (settings.seed, settings.steps, settings.sampler, settings.schedule_type) == (
        1234,
        30,
        "DPM++ 2M",
        "Karras",
    )
    assert (settings.width, settings.height, settings.cfg_scale) == (512, 512, 7)
    assert settings.model == str(model)  # found by the infotext's model name
    assert settings.vae == "/v/ft.pt"  # the form's VAE stays
    assert (settings.batch_size, settings.batch_count) == (1, 1)
    assert sent.request.x is None and sent.request.plan().image_count == 1
    assert sent.request.plan().images[0].seed == 1234
    assert sent.notes == []


def test_a_checkpoint_not_in_the_folders_keeps_the_forms_and_says_so() -> None:
    sent = request_from_image(
        record(infotext=a1111_infotext(5), model="v1-5-pruned-emaonly"),
        checkpoints=[],
        current=CURRENT,
    )
    assert sent.request.settings.model == "/models/deliberate_v2.safetensors"
    assert sent.notes == [
        "checkpoint v1-5-pruned-emaonly is not in the model folders; "
        "keeping deliberate_v2.safetensors"
    ]


def test_catalog_fields_stand_in_for_missing_infotext_and_a_photo_is_refused() -> None:
    sent = request_from_image(
        record(prompt="a portrait", seed=77, steps=20, sampler="Euler a", cfg_scale=5.0),
        checkpoints=[],
        current=CURRENT,
    )
    settings = sent.request.settings
    assert (settings.prompt, settings.seed, settings.steps, settings.sampler) == (
        "a portrait",
        77,
        20,
        "Euler a",
    )
    assert (settings.width, settings.height) == (512, 768)
    with pytest.raises(ValueError, match=r"a\.png has no generation settings"):
        request_from_image(record(), checkpoints=[], current=CURRENT)


@pytest.fixture
def window(qtbot, make_png, tmp_path: Path):
    from charstudio.ui.main_window import MainWindow

    root = tmp_path / "proj"
    with Project.create(root, "Anna") as project:
        make_png(project.images_dir / "a.png", seed=4242)
        make_png(project.images_dir / "photo.png", seed=1, infotext=None)
        run_job(import_images(project, [project.images_dir]))
    window = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat))
    qtbot.addWidget(window)
    window.open_project(root)
    yield window
    window.close()


def test_right_click_menu_offers_decisions_and_send_to_generate(window) -> None:
    shown = []
    model = window.model
    rows = {Path(model.record(model.id_at(r)).path).name: r for r in range(model.rowCount())}
    for name in ("a.png", "photo.png"):
        rect = window.grid.visualRect(window.model.index(rows[name]))
        shown.append(window.image_menu_at(rect.center()))
    generated, photo = shown
    titles = [a.text() for a in generated.actions()]
    assert {"Set Flag", "Set Rating", "Set Color Label", "Send to Generate"} <= set(titles)
    flags = next(a.menu() for a in generated.actions() if a.text() == "Set Flag")
    assert "Pick" in [a.text() for a in flags.actions()]
    send = {a.text(): a for a in photo.actions()}["Send to Generate"]
    assert not send.isEnabled()  # an imported photo has no settings to send
    # Right-clicking selected the image; "Pick" from the menu decides it like the P key.
    next(a for a in flags.actions() if a.text() == "Pick").trigger()
    assert window.project.catalog.decision(window.model.id_at(rows["photo.png"])).flag == "pick"
    {a.text(): a for a in generated.actions()}["Send to Generate"].trigger()
    settings = window.generate_panel.current_request().settings
    assert settings.seed == 4242 and settings.prompt.startswith("an extreme closeup")
    assert "Sent a.png to Generate" in window.statusBar().currentMessage()
