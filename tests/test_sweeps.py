"""Sweeps reproduce A1111's X/Y/Z plot: axis syntax, Prompt S/R rules, seeds and the plan."""

from __future__ import annotations

import random

import pytest

from charstudio.engine.sweeps import (
    Axis,
    GenerationSettings,
    character_sheet_preset,
    make_axis,
    parse_axis,
    plan_character_sheet,
    plan_sweep,
    split_sampler_name,
)
from charstudio.metadata.infotext import format_infotext, parse_infotext

# DESIGN.md, workflow step 1.
SHEET_PROMPT = (
    "an extreme closeup front shot photo of a 25yo French woman with freckles, chin length "
    "straight black hair in a bob cut with bangs, (neutral gray background:1.3), neutral face "
    "expression"
)
SHEET_NEGATIVE = "jewellery, clothes, hat, (blurry:1.2)"


def settings(**changes: object) -> GenerationSettings:
    base = GenerationSettings(prompt="a photo of a cat", negative_prompt="blurry", seed=100)
    return base.replace(**changes)


# --- axis syntax --------------------------------------------------------------------------------


def test_values_are_csv_so_quotes_protect_commas() -> None:
    axis = parse_axis('Prompt S/R:a cat,  "a dog, sitting" , a bird')
    assert axis.type == "Prompt S/R"
    assert axis.values == ("a cat", "a dog, sitting", "a bird")
    assert axis.labels == axis.values  # text values are their own legend, as in A1111


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("prompt s/r", "Prompt S/R"),
        ("PROMPT SR", "Prompt S/R"),
        ("cfg scale", "CFG Scale"),
        ("checkpoint name", "Checkpoint name"),
        ("Lora Weight", "LoRA weight"),
        (" steps ", "Steps"),
    ],
)
def test_axis_names_are_case_insensitive(name: str, canonical: str) -> None:
    values = {"Prompt S/R": "x", "Checkpoint name": "model_a"}.get(canonical, "1")
    assert parse_axis(f"{name}:{values}").type == canonical


def test_unknown_axis_and_missing_colon_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown axis type 'Denoise'"):
        parse_axis("Denoise:0.5")
    with pytest.raises(ValueError, match="TYPE:VALUES"):
        parse_axis("Steps 20")


@pytest.mark.parametrize(
    ("spec", "values"),
    [
        ("Steps:20, 30", (20, 30)),
        ("Steps:1-5", (1, 2, 3, 4, 5)),
        ("Steps:1-5 (+2)", (1, 3, 5)),
        ("Steps:10-20 (+5), 40", (10, 15, 20, 40)),
        ("Steps:1-10 [5]", (1, 3, 5, 7, 10)),  # numpy.linspace truncated to int, like A1111
        ("Steps:5-1", (5, 4, 3, 2, 1)),
        ("Steps:9-1 (-4)", (9, 5, 1)),
        ("Seed:-1, 10-12", (-1, 10, 11, 12)),
        ("CFG Scale:5-7 (+0.5)", (5.0, 5.5, 6.0, 6.5, 7.0)),
        ("CFG Scale:0.1-0.3 (+0.1)", (0.1, 0.2, 0.3)),  # no float overshoot past the end
        ("CFG Scale:1-2 [3]", (1.0, 1.5, 2.0)),
        ("CFG Scale:7, 7.5", (7.0, 7.5)),
        ("LoRA weight:0.5-1 [6]", (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)),
    ],
)
def test_numeric_axes_accept_a1111_ranges(spec: str, values: tuple[object, ...]) -> None:
    assert parse_axis(spec).values == values


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("Steps:20, abc", r"Steps axis: 'abc' is not an integer"),
        ("Steps:7.5", r"Steps axis: '7.5' is not an integer"),
        ("Steps:0", r"Steps axis: 0 is below the minimum 1"),
        ("Steps:1-5 (-1)", r"Steps axis: range '1-5 \(-1\)' is empty"),
        ("Steps:1-5 (+0)", r"Steps axis: range .* is empty"),
        ("Seed:-2", r"Seed axis: -2 is below"),
        ("CFG Scale:seven", r"CFG Scale axis: 'seven' is not a number"),
        ("Size:512", r"Size axis: '512' is not a size like 512x768"),
        ("Size:500x512", r"Size axis: Width must be a multiple of 8"),
        ("Sampler:Euler b", r"(?i)Sampler axis: unknown sampler 'Euler b'"),
        ("Checkpoint name:a, ,b", r"Checkpoint name axis: empty value"),
        ("Steps:", r"Steps axis has no values"),
        ("Prompt S/R:, a cat", r"Prompt S/R axis: the first value .* is empty"),
    ],
)
def test_bad_values_name_the_axis_and_the_value(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_axis(spec)


def test_make_axis_takes_python_values() -> None:
    assert make_axis("steps", [20, "30-40 (+10)"]).values == (20, 30, 40)
    assert make_axis("Size", [(512, 768), "640x640"]).labels == ("Size: 512x768", "Size: 640x640")
    assert Axis("CFG Scale", (7,)).values == (7.0,)
    assert Axis("CFG Scale", (7,)).labels == ("CFG Scale: 7",)


def test_sampler_names_old_and_new_style() -> None:
    assert split_sampler_name("dpm++ 2m  KARRAS") == ("DPM++ 2M", "Karras")
    assert split_sampler_name("DPM++ 2M SDE Heun") == ("DPM++ 2M SDE Heun", None)
    assert split_sampler_name("Euler a") == ("Euler a", None)
    axis = parse_axis("Sampler:euler a, DPM++ SDE Karras")
    assert axis.values == ("Euler a", "DPM++ SDE Karras")
    base = settings(sampler="DPM++ 2M", schedule_type="Exponential")
    # A bare sampler keeps the base schedule (A1111 1.9+); an old-style name brings its own.
    assert (axis.apply(base, 0).sampler, axis.apply(base, 0).schedule_type) == (
        "Euler a",
        "Exponential",
    )
    assert (axis.apply(base, 1).sampler, axis.apply(base, 1).schedule_type) == (
        "DPM++ SDE",
        "Karras",
    )


# --- applying axes ------------------------------------------------------------------------------


def test_prompt_sr_replaces_every_occurrence_in_both_prompts() -> None:
    base = settings(prompt="a cat, a cat on a mat", negative_prompt="ugly cat")
    axis = parse_axis("Prompt S/R:cat, dog")
    first, second = axis.apply(base, 0), axis.apply(base, 1)
    assert first.prompt == base.prompt and first.negative_prompt == base.negative_prompt
    assert second.prompt == "a dog, a dog on a mat"
    assert second.negative_prompt == "ugly dog"


def test_prompt_sr_search_may_be_in_the_negative_prompt_only() -> None:
    base = settings(prompt="a portrait", negative_prompt="blurry")
    assert parse_axis("Prompt S/R:blurry, grainy").apply(base, 1).negative_prompt == "grainy"


def test_prompt_sr_not_found_is_a_clear_error() -> None:
    axis = parse_axis("Prompt S/R:a dog, a bird")
    with pytest.raises(ValueError) as caught:
        plan_sweep(settings(), axis, None, None, keep_random_seeds=False)
    assert str(caught.value) == (
        "X axis: Prompt S/R did not find 'a dog' in prompt or negative prompt"
    )


def test_y_prompt_sr_sees_the_x_replacement() -> None:
    # A1111 applies X, then Y, then Z to each cell.
    x = parse_axis("Prompt S/R:cat, dog")
    y = parse_axis("Prompt S/R:a dog, one dog")
    with pytest.raises(ValueError, match="Y axis: Prompt S/R did not find 'a dog'"):
        plan_sweep(settings(), x, y, None, keep_random_seeds=False)


def test_embedding_axis_swaps_whole_embedding_names() -> None:
    base = settings(prompt="photo of fr3nch-40 next to fr3nch-400", negative_prompt="fr3nch-40x")
    axis = parse_axis("Embedding:fr3nch-40.pt, fr3nch-60.safetensors, fr3nch-80")
    assert axis.values == ("fr3nch-40", "fr3nch-60", "fr3nch-80")
    changed = axis.apply(base, 1)
    assert changed.prompt == "photo of fr3nch-60 next to fr3nch-400"
    assert changed.negative_prompt == "fr3nch-40x"
    with pytest.raises(ValueError, match="Embedding did not find the embedding name 'fr3nch-4'"):
        parse_axis("Embedding:fr3nch-4, b").apply(base, 0)


def test_lora_weight_rewrites_the_first_lora_tag_only() -> None:
    base = settings(prompt="a woman <lora:fr3nch:0.8> <lora:style:0.3>, <lora:x>")
    axis = parse_axis("LoRA weight:0.5, 1")
    assert axis.labels == ("LoRA weight: 0.5", "LoRA weight: 1")
    assert axis.apply(base, 0).prompt == "a woman <lora:fr3nch:0.5> <lora:style:0.3>, <lora:x>"
    assert axis.apply(base, 1).prompt == "a woman <lora:fr3nch:1> <lora:style:0.3>, <lora:x>"
    # A tag without a weight gets one; further arguments are kept.
    assert axis.apply(settings(prompt="<lora:a>"), 0).prompt == "<lora:a:0.5>"
    assert axis.apply(settings(prompt="<lora:a:1:0.2>"), 0).prompt == "<lora:a:0.5:0.2>"
    with pytest.raises(ValueError, match="LoRA weight axis: the prompt has no <lora"):
        axis.apply(settings(), 0)


def test_other_axes_set_their_field() -> None:
    base = settings(model="base.safetensors", model_hash="0123456789")
    assert parse_axis("Steps:20").apply(base, 0).steps == 20
    assert parse_axis("CFG Scale:4.5").apply(base, 0).cfg_scale == 4.5
    assert parse_axis("Seed:7").apply(base, 0).seed == 7
    sized = parse_axis("Size:512x768").apply(base, 0)
    assert (sized.width, sized.height) == (512, 768)
    switched = parse_axis("Checkpoint name:deliberate_v2").apply(base, 0)
    # The hash belonged to the previous checkpoint.
    assert (switched.model, switched.model_hash) == ("deliberate_v2", None)


# --- settings and infotext ----------------------------------------------------------------------


def test_settings_write_a1111_infotext() -> None:
    base = settings(
        prompt="a photo",
        negative_prompt="blurry",
        width=512,
        height=768,
        model="models/Stable-diffusion/deliberate_v2.safetensors",
        model_hash="9aba26abdf",
    )
    text = format_infotext(base.to_params(4240233169))
    assert text == (
        "a photo\nNegative prompt: blurry\n"
        "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 4240233169, "
        "Size: 512x768, Model hash: 9aba26abdf, Model: deliberate_v2, RNG: NV"
    )
    assert parse_infotext(text).seed == 4240233169


def test_infotext_extras_clip_skip_and_vae() -> None:
    base = settings(
        clip_skip=2,
        vae="C:\\vae\\vae-ft-mse-840000.safetensors",
        extra_params=(("Lora hashes", "fr3nch: 1a2b3c4d5e6f"),),
    )
    params = base.to_params(5, model_hash="aaaaaaaaaa", extras={"VAE hash": "735e4c3a44"})
    assert list(params.settings) == [
        "Steps",
        "Sampler",
        "Schedule type",
        "CFG scale",
        "Seed",
        "Size",
        "Model hash",
        "VAE hash",
        "VAE",
        "Clip skip",
        "RNG",
        "Lora hashes",
    ]
    assert params.settings["VAE"] == "vae-ft-mse-840000"
    assert params.clip_skip == 2
    assert "Clip skip" not in settings().to_params().settings  # only written above 1


def test_infotext_needs_a_real_seed() -> None:
    with pytest.raises(ValueError, match="actual seed"):
        settings(seed=-1).to_params()


def test_settings_validate_and_normalise() -> None:
    old_style = settings(sampler="DPM++ 2M Karras", schedule_type=None)
    assert (old_style.sampler, old_style.schedule_type) == ("DPM++ 2M", "Karras")
    assert settings(cfg_scale=7).cfg_scale == 7.0
    with pytest.raises(ValueError, match="Width must be a multiple of 8"):
        settings(width=500)
    with pytest.raises(ValueError, match="Batch size must be at least 1"):
        settings(batch_size=0)
    with pytest.raises(ValueError, match="Seed must be at least -1"):
        settings(seed=-5)


# --- seeds and the plan -------------------------------------------------------------------------


def test_fixed_seed_is_shared_by_every_cell_and_counts_through_batches() -> None:
    base = settings(seed=100, batch_size=3, batch_count=2)
    plan = plan_sweep(base, parse_axis("Steps:10, 20"), None, None, keep_random_seeds=True)
    assert plan.image_count == 12
    for cell in plan.cells:
        assert cell.seeds == (100, 101, 102, 103, 104, 105)
        assert cell.batches() == [(100, 101, 102), (103, 104, 105)]
    job = plan.images[4]  # batch 1, position 1: seed + 1 * 3 + 1
    assert (job.batch_index, job.batch_position, job.seed) == (1, 1, 104)
    assert job.settings.seed == 104
    assert (job.settings.batch_size, job.settings.batch_count) == (1, 1)


def test_random_seed_is_drawn_once_for_the_whole_plot() -> None:
    base = settings(seed=-1, batch_size=2)
    x, y = parse_axis("Steps:10, 20"), parse_axis("CFG Scale:5, 7")
    plan = plan_sweep(base, x, y, None, keep_random_seeds=False, rng=random.Random(1))
    first = {cell.settings.seed for cell in plan.cells}
    assert len(first) == 1
    seed = first.pop()
    assert seed == random.Random(1).randrange(4294967294)
    assert [job.seed for job in plan.images[:2]] == [seed, seed + 1]
    again = plan_sweep(base, x, y, None, keep_random_seeds=False, rng=random.Random(1))
    assert again == plan


def test_keep_random_seeds_draws_per_cell() -> None:
    base = settings(seed=-1, batch_size=4, batch_count=2)
    x, y = parse_axis("Steps:10, 20, 30"), parse_axis("CFG Scale:5, 7, 9")
    plan = plan_sweep(base, x, y, None, keep_random_seeds=True, rng=random.Random(7))
    seeds = [cell.settings.seed for cell in plan.cells]
    assert len(set(seeds)) == 9
    assert all(s >= 0 for s in seeds)
    for cell in plan.cells:
        assert cell.seeds == tuple(cell.settings.seed + k for k in range(8))


def test_seed_axis_minus_one_is_fixed_per_value_unless_kept() -> None:
    x = parse_axis("Seed:-1, 5")
    y = parse_axis("Steps:10, 20")
    plan = plan_sweep(settings(), x, y, None, keep_random_seeds=False, rng=random.Random(3))
    column0 = {plan.cell_at(0, row).settings.seed for row in range(2)}
    assert len(column0) == 1 and column0 != {-1}
    assert plan.x is not None and plan.x.values[1] == 5
    assert plan.cell_at(0, 0).coordinates["X"] == str(column0.pop())
    kept = plan_sweep(settings(), x, y, None, keep_random_seeds=True, rng=random.Random(3))
    assert kept.cell_at(0, 0).settings.seed != kept.cell_at(0, 1).settings.seed
    assert kept.cell_at(0, 0).coordinates["X"] == "-1"


def test_cells_nest_z_outermost_and_checkpoint_changes_least() -> None:
    x, y = parse_axis("Steps:10, 20"), parse_axis("CFG Scale:5, 7")
    plan = plan_sweep(settings(), x, y, None, keep_random_seeds=False)
    assert [(c.x_index, c.y_index) for c in plan.cells] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    checkpoints = parse_axis("Checkpoint name:a, b")
    plan = plan_sweep(settings(), checkpoints, y, None, keep_random_seeds=False)
    assert [c.settings.model for c in plan.cells] == ["a", "a", "b", "b"]
    assert plan.shape == (2, 2, 1)


def test_coordinates_record_axis_types_and_values() -> None:
    x = parse_axis("Prompt S/R:a cat, a dog")
    z = parse_axis("Size:512x512, 512x768")
    plan = plan_sweep(settings(), x, None, z, keep_random_seeds=False)
    assert plan.shape == (2, 1, 2)
    assert plan.cell_at(1, 0, 1).coordinates == {
        "X axis": "Prompt S/R",
        "X": "a dog",
        "Z axis": "Size",
        "Z": "512x768",
    }
    assert plan.labels("z") == ("Size: 512x512", "Size: 512x768")
    assert plan.labels("Y") == ()
    assert plan.images[0].coordinates == {
        "X axis": "Prompt S/R",
        "X": "a cat",
        "Z axis": "Size",
        "Z": "512x512",
    }


def test_no_axes_is_one_cell() -> None:
    plan = plan_sweep(settings(batch_count=3), None, None, None, keep_random_seeds=False)
    assert plan.shape == (1, 1, 1)
    assert [job.seed for job in plan.images] == [100, 101, 102]
    assert plan.cells[0].coordinates == {}


def test_image_params_carry_the_image_seed_and_cell_settings() -> None:
    plan = plan_sweep(
        settings(batch_size=2), parse_axis("Steps:10, 20"), None, None, keep_random_seeds=False
    )
    params = plan.images[3].params(model_hash="0123456789")
    assert (params.steps, params.seed, params.model_hash) == (20, 101, "0123456789")


# --- the character sheet preset -----------------------------------------------------------------


def test_character_sheet_preset_matches_the_tutorial() -> None:
    base, x, y = character_sheet_preset(SHEET_PROMPT, SHEET_NEGATIVE)
    assert (base.sampler, base.schedule_type, base.steps, base.cfg_scale) == (
        "DPM++ 2M",
        "Karras",
        30,
        7.0,
    )
    assert (base.width, base.height, base.seed) == (512, 512, -1)
    assert (base.batch_count, base.batch_size) == (8, 4)
    assert x.values == ("an extreme closeup", "a medium closeup", "a closeup")
    assert y.values == ("front shot", "side angle", "low angle shot")


def test_character_sheet_plans_288_images_in_9_cells() -> None:
    plan = plan_character_sheet(SHEET_PROMPT, SHEET_NEGATIVE, rng=random.Random(0))
    assert len(plan.cells) == 9
    assert plan.image_count == 288
    assert len(plan.images) == 288
    assert all(len(cell.seeds) == 32 for cell in plan.cells)
    assert len({cell.settings.seed for cell in plan.cells}) == 9  # Keep -1 for seeds

    tail = SHEET_PROMPT.removeprefix("an extreme closeup front shot")
    expected = {
        (0, 0): "an extreme closeup front shot",
        (1, 0): "a medium closeup front shot",
        (2, 0): "a closeup front shot",
        (0, 1): "an extreme closeup side angle",
        (1, 2): "a medium closeup low angle shot",
        (2, 2): "a closeup low angle shot",
    }
    for (ix, iy), head in expected.items():
        cell = plan.cell_at(ix, iy)
        assert cell.settings.prompt == head + tail
        assert cell.settings.negative_prompt == SHEET_NEGATIVE
    assert plan.cell_at(1, 2).coordinates == {
        "X axis": "Prompt S/R",
        "X": "a medium closeup",
        "Y axis": "Prompt S/R",
        "Y": "low angle shot",
    }
    assert plan.labels("X") == ("an extreme closeup", "a medium closeup", "a closeup")


def test_character_sheet_needs_the_search_phrases_in_the_prompt() -> None:
    with pytest.raises(ValueError, match="did not find 'an extreme closeup'"):
        plan_character_sheet("a photo of a woman")


def test_sampler_axis_refuses_a1111_samplers_charstudio_cannot_run() -> None:
    # One sampler list for the whole engine: a sweep fails when planned, not mid-job.
    with pytest.raises(ValueError, match="not available in charstudio"):
        parse_axis("Sampler:Euler a, DPM fast")


# --- the axes A1111 has beyond the first ones ---------------------------------------------------


def test_clip_skip_schedule_type_and_vae_axes_set_their_field() -> None:
    base = settings(vae="vae-ft-mse.safetensors")
    assert [parse_axis("Clip skip:1-2").apply(base, i).clip_skip for i in (0, 1)] == [1, 2]
    schedules = parse_axis("Schedule type:karras, exponential, SGM uniform")
    assert schedules.values == ("Karras", "Exponential", "SGM Uniform")
    assert schedules.apply(base, 1).schedule_type == "Exponential"
    assert schedules.labels[0] == "Schedule type: Karras"
    vaes = parse_axis("VAE:None, other-vae.safetensors")
    assert [vaes.apply(base, i).vae for i in (0, 1)] == [None, "other-vae.safetensors"]
    assert vaes.labels == ("VAE: None", "VAE: other-vae.safetensors")
    with pytest.raises(ValueError, match="Schedule type axis: Unknown schedule type 'Karas'"):
        parse_axis("Schedule type:Karas")
    with pytest.raises(ValueError, match="Clip skip axis: 0 is below the minimum 1"):
        parse_axis("Clip skip:0-2")


def test_prompt_order_axis_takes_every_ordering_where_the_parts_stand() -> None:
    base = settings(prompt="photo of a woman, smiling, gray background, 8k")
    axis = parse_axis("Prompt order:gray background, smiling, woman")
    assert len(axis) == 6  # 3! orderings, in A1111's order
    assert axis.labels[0] == "gray background, smiling, woman"
    prompts = [axis.apply(base, i).prompt for i in range(len(axis))]
    # The first place in the prompt (where "woman" stood) gets the ordering's first part.
    assert prompts[0] == "photo of a gray background, smiling, woman, 8k"
    assert prompts[5] == "photo of a woman, smiling, gray background, 8k"  # reversed = original
    assert len(set(prompts)) == 6
    assert axis.apply(base, 0).negative_prompt == base.negative_prompt
    # Rebuilding the axis from its own values keeps the orderings.
    assert Axis(axis.type, axis.values) == axis
    with pytest.raises(ValueError, match="Prompt order did not find 'hat' in the prompt"):
        parse_axis("Prompt order:hat, smiling").apply(base, 0)
    with pytest.raises(ValueError, match="listed only once"):
        parse_axis("Prompt order:smiling, smiling")


def test_prompt_order_cells_record_their_ordering() -> None:
    base = settings(prompt="a, b")
    plan = plan_sweep(base, parse_axis("Prompt order:a, b"), None, None, keep_random_seeds=False)
    assert [cell.settings.prompt for cell in plan.cells] == ["a, b", "b, a"]
    assert plan.cell_at(1).coordinates == {"X axis": "Prompt order", "X": "b, a"}


def test_vae_axis_changes_least_often_like_checkpoints() -> None:
    vaes, steps = parse_axis("VAE:None, v.safetensors"), parse_axis("Steps:10, 20")
    plan = plan_sweep(settings(), vaes, steps, None, keep_random_seeds=False)
    assert [c.settings.vae for c in plan.cells] == [None, None, "v.safetensors", "v.safetensors"]
