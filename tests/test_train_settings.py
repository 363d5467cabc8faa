"""Textual-inversion settings without a model: A1111 learning-rate schedules, validation
messages, JSON round trips, token-name warnings, templates with [name]/[filewords], tag
shuffling and dropout, batch planning and the command-line options."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import pytest

from charstudio.catalog import Project
from charstudio.training.cli_args import train_ti_arguments, train_ti_params_from_args
from charstudio.training.embedding_init import init_rows
from charstudio.training.lr_schedule import ScheduleError, parse_rate_schedule
from charstudio.training.settings import TrainSettingsError, TrainTISettings
from charstudio.training.templates import (
    DEFAULT_TEMPLATE,
    caption_from_filename,
    fixed_texts,
    render_template,
    sample_text,
    template_lines,
)
from charstudio.training.token_names import token_name_problems, token_name_warnings

# -- learning-rate schedules ---------------------------------------------------------------


def test_a_plain_number_is_a_fixed_rate() -> None:
    schedule = parse_rate_schedule("0.002")
    assert schedule.entries == ((0.002, None),)
    assert [schedule.rate_at(s) for s in (0, 1, 149)] == [0.002] * 3
    assert schedule.end_step(150) == 150


def test_a1111_schedule_rates_apply_until_their_step() -> None:
    schedule = parse_rate_schedule("0.005:100, 1e-3:1000, 1e-5")
    assert schedule.entries == ((0.005, 100), (1e-3, 1000), (1e-5, None))
    # rate_at(k) is the rate of the update made after k steps: 0.005 for steps 1..100.
    assert schedule.rate_at(0) == schedule.rate_at(99) == 0.005
    assert schedule.rate_at(100) == schedule.rate_at(999) == 1e-3
    assert schedule.rate_at(1000) == schedule.rate_at(5000) == 1e-5
    assert schedule.end_step(150) == 150  # cut to max steps, as A1111


def test_a_schedule_ending_with_a_step_stops_training_there() -> None:
    schedule = parse_rate_schedule("0.01:20, 0.001:60,")  # a trailing comma is fine
    assert schedule.end_step(150) == 60
    assert schedule.end_step(40) == 40
    assert parse_rate_schedule("0.01:20, 0.001:-1").end_step(150) == 150  # -1: to the end
    assert TrainTISettings(learning_rate="0.01:20, 0.001:60").end_step() == 60


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("  , ", "is empty"),
        ("fast", "'fast' is not a number"),
        ("0.01:ten", "must be a whole number"),
        ("0.01:0", "at least 1"),
        ("-0.01", "positive"),
        ("nan", "positive"),
        ("0.01:10:20", "more than one ':'"),
        ("0.01:100, 0.001:50", "steps must increase"),
        ("0.01, 0.001:100", "runs to the end"),
    ],
)
def test_bad_schedules_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_rate_schedule(text)


# -- settings ------------------------------------------------------------------------------


def test_defaults_are_the_workflows_and_survive_json(tmp_path: Path) -> None:
    settings = TrainTISettings(name="fr3nchl4dy")
    assert (settings.init_text, settings.vectors, settings.learning_rate) == ("woman", 2, "0.002")
    assert (settings.max_steps, settings.save_every, settings.preview_every) == (150, 1, 5)
    assert settings.template == DEFAULT_TEMPLATE and settings.latent_sampling == "once"
    assert (settings.width, settings.height) == (512, 512)
    assert settings.problems() == []
    data = json.loads(json.dumps(settings.to_json()))
    assert TrainTISettings.from_json(data) == settings
    changed = settings.replace(learning_rate="0.005:100, 1e-3", shuffle_tags=True)
    assert TrainTISettings.from_json(changed.to_json()) == changed
    with Project.create(tmp_path / "p", "Léa", token="l3a") as project:
        assert TrainTISettings.for_project(project).name == "l3a"


def test_from_json_refuses_unknown_keys_and_fills_defaults() -> None:
    assert TrainTISettings.from_json({"vectors": 4}).vectors == 4
    assert TrainTISettings.from_json({"tag_dropout": 0}).tag_dropout == 0.0
    with pytest.raises(TrainSettingsError, match=r"unknown training setting.*learningrate"):
        TrainTISettings.from_json({"learningrate": "0.1"})


def test_validation_lists_every_problem_in_words() -> None:
    bad = TrainTISettings(
        name="my char",
        vectors=0,
        learning_rate="x",
        batch_size=0,
        max_steps=0,
        width=500,
        latent_sampling="sometimes",
        tag_dropout=1.5,
        clip_grad_mode="value",
        clip_grad_value="-1",
        template="a photo of a woman",
        preview_sampler="Nope",
    )
    problems = bad.problems()
    expected = [
        "letters, digits",
        "vectors per token must be at least 1",
        "learning rate: 'x' is not a number",
        "batch size must be at least 1",
        "max steps must be at least 1",
        "width must be a multiple of 8",
        "latent sampling must be one of once, deterministic, random",
        "tag dropout must be between 0 and 1",
        "gradient clipping value",
        "contains [name]",
        "preview sampler",
    ]
    for fragment in expected:
        assert any(fragment in p for p in problems), (fragment, problems)
    with pytest.raises(TrainSettingsError) as raised:
        bad.validate()
    assert raised.value.problems == problems
    assert TrainTISettings(template="").problems() == [
        "the prompt template is empty; it needs at least one line with [name]"
    ]
    assert "at most 75" in TrainTISettings(vectors=76).problems()[0]


def test_batch_plan_follows_a1111_clamping() -> None:
    settings = TrainTISettings()
    assert settings.batch_plan(8) == (8, 1, [])  # the workflow: 8 images, batch 8
    assert settings.batch_plan(5)[:2] == (5, 1)  # default batch = the images, up to 8
    assert settings.batch_plan(20)[:2] == (8, 1)
    assert settings.replace(batch_size=4, gradient_accumulation=2).batch_plan(8)[:2] == (4, 2)
    batch, accumulation, notes = settings.replace(batch_size=4, gradient_accumulation=4).batch_plan(
        8
    )
    assert (batch, accumulation) == (4, 2) and "lowered to 2" in notes[0]
    batch, accumulation, notes = settings.replace(batch_size=6).batch_plan(3)
    assert (batch, accumulation) == (3, 1) and "only 3 images" in notes[0]
    with pytest.raises(TrainSettingsError):
        settings.batch_plan(0)


def test_warnings_flag_likely_mistakes() -> None:
    lines = "a photo of [name]\na photo of a woman"
    warnings = TrainTISettings(name="fr3nchl4dy", template=lines).warnings()
    assert any("lack [name]" in w for w in warnings)
    warnings = TrainTISettings(name="fr3nchl4dy", shuffle_tags=True).warnings()
    assert any("[filewords]" in w for w in warnings)
    warnings = TrainTISettings(name="fr3nchl4dy", init_text="a french woman", vectors=2).warnings()
    assert any("only the first 2" in w for w in warnings)
    assert TrainTISettings(name="fr3nchl4dy").warnings() == []


# -- token names ---------------------------------------------------------------------------


def test_names_that_already_mean_something_give_a_warning() -> None:
    assert token_name_warnings("fr3nchl4dy") == []
    assert token_name_warnings("xqzlorp") == []
    single = token_name_warnings("woman")
    assert len(single) == 1 and "single word CLIP already knows" in single[0]
    assert "single word" in token_name_warnings("Emma")[0]  # prompts are lowercased
    words = token_name_warnings("red_hair")
    assert len(words) == 1 and "red, hair" in words[0]
    assert any("single word" in w for w in TrainTISettings(name="woman").warnings())


def test_names_must_be_typeable_file_names() -> None:
    assert token_name_problems("fr3nchl4dy") == []
    assert "needs a name" in token_name_problems("")[0]
    for bad in ("my char", "a/b", "x:y", "ça"):
        assert "letters, digits" in token_name_problems(bad)[0]
    assert "longer than" in token_name_problems("x" * 65)[0]


# -- templates and captions ----------------------------------------------------------------


def test_templates_fill_name_and_filewords() -> None:
    assert template_lines("\n a photo of [name] \n\n[filewords], [name]\n") == [
        "a photo of [name]",
        "[filewords], [name]",
    ]
    line = "a photo of [name], [filewords]"
    text = render_template(line, name="fr3nch", caption="red hair, bob cut")
    assert text == "a photo of fr3nch, red hair, bob cut"
    # [filewords] is filled first, so a caption cannot inject the name.
    assert render_template("[filewords]", name="n", caption="[name]") == "n"


def test_tag_shuffle_and_dropout_work_on_comma_separated_tags() -> None:
    caption = "a,b,c,d,e,f"
    shuffled = {
        render_template(
            "[filewords]", name="n", caption=caption, rng=random.Random(i), shuffle_tags=True
        )
        for i in range(20)
    }
    assert len(shuffled) > 5
    assert all(sorted(s.split(",")) == list("abcdef") for s in shuffled)
    kept = [
        render_template(
            "[filewords]", name="n", caption=caption, rng=random.Random(i), tag_dropout=0.5
        )
        for i in range(50)
    ]
    counts = [len(k.split(",")) if k else 0 for k in kept]
    assert min(counts) < 6 and 0 < sum(counts) / len(counts) < 6
    assert all(set(k.split(",")) <= set("abcdef") for k in kept if k)
    # Dropout 0 and no shuffle keep the caption exactly (spaces included, as A1111).
    assert render_template("[filewords]", name="n", caption="a, b", rng=random.Random()) == "a, b"
    everything = render_template(
        "[filewords]", name="n", caption=caption, rng=random.Random(0), tag_dropout=1.0
    )
    assert everything == ""


def test_a_random_line_per_sample_and_fixed_lines_without_shuffling() -> None:
    lines = ["one [name]", "two [name]", "three [name]"]
    rng = random.Random(1)
    seen = {sample_text(lines, name="n", caption="", rng=rng) for _ in range(30)}
    assert seen == {"one n", "two n", "three n"}
    first = fixed_texts(lines, name="n", captions=["a"] * 12, seed=7)
    assert fixed_texts(lines, name="n", captions=["a"] * 12, seed=7) == first
    assert len(set(first)) > 1  # one line chosen per image, not one for all


def test_captions_from_file_names_drop_leading_numbers() -> None:
    assert caption_from_filename(Path("00012-3456-a woman, red hair.png")) == "a woman, red hair"
    assert caption_from_filename(Path("portrait.png")) == "portrait"


# -- initialization rule -------------------------------------------------------------------


def test_init_rows_stretch_the_init_tokens_like_a1111() -> None:
    assert init_rows(1, 2) == [0, 0]  # "woman", 2 vectors: woman, woman
    assert init_rows(2, 4) == [0, 0, 1, 1]  # stretched, not cycled (0, 1, 0, 1)
    assert init_rows(2, 2) == [0, 1]
    assert init_rows(3, 5) == [0, 0, 1, 1, 2]


# -- command line --------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train_ti_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_arguments_become_job_params(tmp_path: Path) -> None:
    template = tmp_path / "style.txt"
    template.write_text("a photo of [name], [filewords]\n", encoding="utf-8")
    with Project.create(tmp_path / "p", "Léa", token="l3a") as project:
        args = parse(
            str(project.root),
            "--model", "v1-5",
            "--vectors", "4",
            "--lr", "0.005:100, 1e-3",
            "--batch-size", "4",
            "--grad-accum", "2",
            "--steps", "80",
            "--template", str(template),
            "--images", "12", str(tmp_path / "extra.png"),
            "--preview-sampler", "Euler a",
        )  # fmt: skip
        params = train_ti_params_from_args(project, args)
        settings = TrainTISettings.from_json(params["settings"])
        assert settings.name == "l3a" and settings.vectors == 4
        assert settings.learning_rate == "0.005:100, 1e-3" and settings.max_steps == 80
        assert (settings.batch_size, settings.gradient_accumulation) == (4, 2)
        assert settings.template.startswith("a photo of [name]")
        assert settings.preview_sampler == "Euler a"
        assert params["model"] == "v1-5" and params["resume_run_id"] is None
        assert params["images"] == [12, str((tmp_path / "extra.png").resolve())]
        json.dumps(params)  # the queue stores them
        defaults = train_ti_params_from_args(project, parse(str(project.root), "--model", "m"))
        assert defaults["images"] == "picks"
        assert TrainTISettings.from_json(defaults["settings"]) == TrainTISettings(name="l3a")
        with pytest.raises(ValueError, match="--model is required"):
            train_ti_params_from_args(project, parse(str(project.root)))
        with pytest.raises(ValueError, match="no training run"):
            train_ti_params_from_args(project, parse(str(project.root), "--resume", "9"))
        with pytest.raises(ValueError, match="no such file"):
            train_ti_params_from_args(
                project, parse(str(project.root), "--model", "m", "--template", "nope.txt")
            )
