"""Training captions: derived from a real sweep's prompts (what is constant becomes the token,
what the sweep varied stays), A1111 tag syntax kept, the artist's edits stored and preferred,
the bulk operations of the caption editor, and Export Picks writing the captions without
replacing a file it did not write."""

from __future__ import annotations

from pathlib import Path

import pytest

from charstudio.catalog import Project
from charstudio.catalog.export import export_images
from charstudio.engine.requests import GenerateRequest
from charstudio.jobs import run_job
from charstudio.training.captions import (
    add_tag,
    clear_caption,
    derive_captions,
    project_captions,
    remove_tag,
    replace_in_captions,
    set_caption,
    split_tags,
    tag_frequency,
    write_caption_files,
)

from .generation import generate_images, tiny_settings

TOKEN = "lea_c"
CHARACTER = (
    "photo of a 25yo French woman, chin length black hair in a bob cut, "
    "(green eyes:1.2), neutral gray background"
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def sweep_project(tmp_path: Path, model_dir: Path):
    """A project whose images come from one 3×2 sweep: framing on X (Prompt S/R), the light
    on Y, the character description the same in every prompt."""
    with Project.create(tmp_path / "proj", "Léa", token=TOKEN) as project:
        settings = tiny_settings(
            model_dir,
            prompt=f"an extreme closeup, {CHARACTER}, soft light",
            width=16,
            height=16,
            steps=1,
        )
        request = GenerateRequest(
            settings,
            x="Prompt S/R:an extreme closeup, a medium shot, a full body shot",
            y="Prompt S/R:soft light, hard light",
            save_grid=False,
        )
        ids = generate_images(project, request)
        assert len(ids) == 6
        yield project, ids


def test_split_tags_keeps_a1111_syntax() -> None:
    text = "a (red, blue:1.2) dress,  [blurry] ,\\(literal, x BREAK y, <lora:foo:0.7>, ,z"
    assert split_tags(text) == ["a (red, blue:1.2) dress", "[blurry]", "\\(literal", "x", "y", "z"]


def test_derived_from_a_real_sweep(sweep_project) -> None:
    project, ids = sweep_project
    captions = {c.image_id: c for c in project_captions(project, ids)}
    texts = {captions[i].text for i in ids}
    assert texts == {
        f"{TOKEN}, {framing}, {light}"
        for framing in ("an extreme closeup", "a medium shot", "a full body shot")
        for light in ("soft light", "hard light")
    }
    assert {c.source for c in captions.values()} == {"prompt"}
    # Only some images of the sweep picked: what is constant is still judged on the whole sweep.
    two = project_captions(project, ids[:1])
    assert two[0].text == captions[ids[0]].text


def test_image_without_a_prompt_gets_token_and_class_word(make_png, tmp_path: Path) -> None:
    from charstudio.catalog.importer import import_images

    with Project.create(tmp_path / "p", "Léa", token=TOKEN) as project:
        make_png(project.images_dir / "photo.png", infotext=None, size=16)
        run_job(import_images(project, [project.images_dir]))
        image = project.catalog.images()[0]
        assert project_captions(project, [image.id])[0].text == f"{TOKEN}, woman"
        project.catalog.set_setting("class_word", "man")
        caption = project_captions(project, [image.id])[0]
        assert (caption.text, caption.source) == (f"{TOKEN}, man", "class")


def test_derivation_rules_without_a_catalog() -> None:
    prompts = {
        1: "lea_c woman, red hair, front view",
        2: "lea_c woman, red hair, side view",
        3: "a portrait, red hair",  # alone in its group: all constant, but the axis value varies
        4: None,
    }
    out = derive_captions(
        prompts,
        {},
        token="lea_c",
        group_of={1: "a", 2: "a", 3: "b", 4: None},
        sweep_values={3: ["a portrait"]},
    )
    assert out == {
        1: "lea_c, front view",
        2: "lea_c, side view",
        3: "lea_c, a portrait",
        4: "lea_c, woman",
    }
    assert tag_frequency(out.values())["lea_c"] == 4


def test_edits_win_and_bulk_operations(sweep_project) -> None:
    project, ids = sweep_project
    first = ids[0]
    derived = project_captions(project, [first])[0].text
    set_caption(project.catalog, first, f"{TOKEN},  smiling ,a close view")
    caption = project_captions(project, [first])[0]
    assert (caption.text, caption.source, caption.derived) == (
        f"{TOKEN}, smiling, a close view",
        "edited",
        derived,
    )
    changed = replace_in_captions(project, ids, "soft light", "window light")
    soft = [c for c in project_captions(project, ids) if "window light" in c.text]
    assert len(changed) == len(soft) == 2 and first not in changed  # the edit had no soft light
    assert add_tag(project, ids, "smiling", first=True) == sorted(set(ids) - {first})
    assert all(c.text.startswith(f"{TOKEN}, smiling, ") for c in project_captions(project, ids))
    assert remove_tag(project, ids, "smiling") == sorted(ids)
    assert not any("smiling" in c.text for c in project_captions(project, ids))
    clear_caption(project.catalog, first)
    assert project_captions(project, [first])[0].text == derived


def test_write_never_replaces_another_caption(sweep_project) -> None:
    project, ids = sweep_project
    captions = project_captions(project, ids)
    stranger = project.file_path(captions[1].path).with_suffix(".txt")
    stranger.write_text("the artist's own words", encoding="utf-8")
    captions = project_captions(project, ids, use_sidecars=False)
    written, skipped = write_caption_files(project, captions)
    assert len(written) == 5 and [p for p, _ in skipped] == [stranger]
    assert stranger.read_text(encoding="utf-8") == "the artist's own words"
    assert written[0].read_text(encoding="utf-8") == captions[0].text
    # Sidecars are read back as the captions (a .txt beside the image wins over the prompt).
    assert project_captions(project, ids)[1].source == "sidecar"


def test_export_picks_writes_the_captions(sweep_project, tmp_path: Path) -> None:
    project, ids = sweep_project
    dest = tmp_path / "out"
    dest.mkdir()
    first = project.file_path(project.catalog.image(ids[0]).path)
    (dest / first.with_suffix(".txt").name).write_text("unrelated", encoding="utf-8")
    report = run_job(export_images(project, ids[:2], dest))
    assert (report.copied, report.captions, report.failed) == (2, 2, [])
    assert (dest / first.with_suffix(".txt").name).read_text(encoding="utf-8") == "unrelated"
    moved = dest / f"{first.stem}-1.txt"
    assert (dest / f"{first.stem}-1{first.suffix}").is_file()
    assert moved.read_text(encoding="utf-8") == project_captions(project, ids[:1])[0].text
