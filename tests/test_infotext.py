"""A1111 infotext: parsing, typed accessors, writing, and round trips."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from charstudio.metadata.infotext import (
    NEGATIVE_PROMPT_PREFIX,
    GenerationParams,
    format_infotext,
    parse_infotext,
    parse_settings_line,
)

# Realistic samples as A1111 writes them (several versions and extensions).
A1111_NEW = (
    "masterpiece, best quality, 1girl, solo, (chin length black bob:1.2), bangs,\n"
    "neutral gray background, <lora:fr3nch:0.8>\n"
    "Negative prompt: lowres, bad anatomy, (worst quality:1.4),\n"
    "jewellery, easynegative\n"
    "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 4240233169, "
    "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2, "
    'TI hashes: "easynegative: c74b4e810b03", Lora hashes: "fr3nch: 1a2b3c4d5e6f", '
    "Version: v1.10.1"
)
A1111_OLD = (
    "a portrait photo of a woman, freckles, film grain\n"
    "Negative prompt: cartoon, painting\n"
    "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 1234567890, Size: 512x512, "
    "Model hash: 9aba26abdf, Model: deliberate_v2, ENSD: 31337"
)
A1111_HIRES = (
    "1girl, red dress, city street at night, bokeh\n"
    "Negative prompt: (worst quality, low quality:1.4), monochrome\n"
    "Steps: 25, Sampler: Euler a, Schedule type: Automatic, CFG scale: 6.5, Seed: 77, "
    "Size: 512x768, Model hash: 7f96a1a9ca, Model: anything-v5, Denoising strength: 0.45, "
    "Hires upscale: 2, Hires steps: 10, Hires upscaler: Latent (nearest-exact), "
    'Lora hashes: "fr3nch: 1a2b3c4d5e6f, detail: 0f1e2d3c4b5a", Version: v1.9.4'
)
A1111_NO_NEGATIVE = (
    "close up photo of a cat\n"
    "Steps: 20, Sampler: Euler, Schedule type: Automatic, CFG scale: 7, Seed: 3, Size: 512x512, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1"
)
A1111_EMPTY_PROMPT = (
    "Negative prompt: blurry\n"
    "Steps: 20, Sampler: UniPC, CFG scale: 7, Seed: 5, Size: 512x512, Model hash: 6ce0161689"
)
A1111_ADETAILER = (
    "photo of a woman, upper body\n"
    "Negative prompt: nsfw\n"
    "Steps: 28, Sampler: DPM++ SDE Karras, CFG scale: 5, Seed: 987654321, Size: 512x768, "
    "Model hash: e6bb9ea85b, Model: realisticVisionV60B1, ADetailer model: face_yolov8n.pt, "
    "ADetailer confidence: 0.3, ADetailer dilate erode: 4, ADetailer mask blur: 4, "
    "ADetailer denoising strength: 0.4, ADetailer inpaint only masked: True, "
    'ADetailer prompt: "detailed face, sharp eyes", ADetailer version: 24.1.2, '
    'ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1, '
    'Resize Mode: Crop and Resize, Low Vram: False, Guidance Start: 0, Guidance End: 1", '
    "Version: v1.7.0"
)
SAMPLES = [
    A1111_NEW,
    A1111_OLD,
    A1111_HIRES,
    A1111_NO_NEGATIVE,
    A1111_EMPTY_PROMPT,
    A1111_ADETAILER,
]


# --- real samples -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", SAMPLES)
def test_real_samples_are_rewritten_byte_for_byte(text: str) -> None:
    assert format_infotext(parse_infotext(text)) == text


def test_new_style_sample_fields() -> None:
    params = parse_infotext(A1111_NEW)
    assert params.prompt == (
        "masterpiece, best quality, 1girl, solo, (chin length black bob:1.2), bangs,\n"
        "neutral gray background, <lora:fr3nch:0.8>"
    )
    assert params.negative_prompt == (
        "lowres, bad anatomy, (worst quality:1.4),\njewellery, easynegative"
    )
    assert params.steps == 30
    assert params.sampler == "DPM++ 2M"
    assert params.schedule_type == "Karras"
    assert params.sampler_label == "DPM++ 2M Karras"
    assert params.cfg_scale == 7.0
    assert params.seed == 4240233169
    assert (params.width, params.height) == (512, 768)
    assert params.model == "v1-5-pruned-emaonly"
    assert params.model_hash == "6ce0161689"
    assert params.clip_skip == 2
    assert params.extras == {
        "TI hashes": "easynegative: c74b4e810b03",
        "Lora hashes": "fr3nch: 1a2b3c4d5e6f",
        "Version": "v1.10.1",
    }
    assert list(params.settings) == [
        "Steps",
        "Sampler",
        "Schedule type",
        "CFG scale",
        "Seed",
        "Size",
        "Model hash",
        "Model",
        "Clip skip",
        "TI hashes",
        "Lora hashes",
        "Version",
    ]


def test_old_style_sampler_is_split() -> None:
    params = parse_infotext(A1111_OLD)
    assert params.settings["Sampler"] == "DPM++ 2M Karras"  # raw value kept
    assert (params.sampler, params.schedule_type) == ("DPM++ 2M", "Karras")
    assert params.sampler_label == "DPM++ 2M Karras"
    assert params.cfg_scale == 7.5
    assert params.clip_skip is None
    assert params.extras == {"ENSD": "31337"}


def test_quoted_values_with_commas_and_colons() -> None:
    params = parse_infotext(A1111_HIRES)
    assert params.extras["Lora hashes"] == "fr3nch: 1a2b3c4d5e6f, detail: 0f1e2d3c4b5a"
    assert params.extras["Hires upscaler"] == "Latent (nearest-exact)"
    assert params.sampler_label == "Euler a"  # "Automatic" schedule is not part of the label
    assert params.schedule_type == "Automatic"
    controlnet = parse_infotext(A1111_ADETAILER).extras["ControlNet 0"]
    assert controlnet.startswith("Module: canny, Model: control_v11p_sd15_canny [d14c016b]")
    assert parse_infotext(A1111_ADETAILER).extras["ADetailer prompt"] == "detailed face, sharp eyes"


def test_missing_negative_prompt_and_empty_prompt() -> None:
    no_negative = parse_infotext(A1111_NO_NEGATIVE)
    assert no_negative.prompt == "close up photo of a cat"
    assert no_negative.negative_prompt == ""
    empty_prompt = parse_infotext(A1111_EMPTY_PROMPT)
    assert empty_prompt.prompt == ""
    assert empty_prompt.negative_prompt == "blurry"
    assert empty_prompt.sampler == "UniPC"
    assert empty_prompt.schedule_type is None


def test_crlf_line_endings() -> None:
    assert parse_infotext(A1111_NEW.replace("\n", "\r\n")) == parse_infotext(A1111_NEW)


def test_surrounding_whitespace_is_ignored() -> None:
    assert parse_infotext("\n  " + A1111_OLD + "\n\n") == parse_infotext(A1111_OLD)


def test_empty_text() -> None:
    assert parse_infotext("") == GenerationParams()
    assert parse_infotext(" \n ") == GenerationParams()
    assert format_infotext(GenerationParams()) == ""


# --- the settings-line rule ---------------------------------------------------------------------


def test_last_line_needs_three_pairs_to_be_settings() -> None:
    text = "a cat\nrating: safe, style: anime"
    params = parse_infotext(text)
    assert params.prompt == text
    assert params.settings == {}


def test_prompt_with_weights_is_not_settings() -> None:
    text = "(red hair:1.2), (blue eyes:1.1), (smile:1.3)"
    assert parse_infotext(text) == GenerationParams(prompt=text)


def test_prompt_only_and_negative_without_settings() -> None:
    params = parse_infotext("a cat\nNegative prompt: a dog, blurry")
    assert params == GenerationParams(prompt="a cat", negative_prompt="a dog, blurry")


def test_settings_only() -> None:
    params = parse_infotext("Steps: 20, Sampler: Euler, CFG scale: 7")
    assert params.prompt == ""
    assert params.negative_prompt == ""
    assert params.steps == 20


def test_negative_prompt_marker_only_first_counts() -> None:
    text = "a\nNegative prompt: b\nNegative prompt: c\nSteps: 1, Sampler: Euler, CFG scale: 7"
    params = parse_infotext(text)
    assert params.prompt == "a"
    assert params.negative_prompt == "b\nNegative prompt: c"
    assert format_infotext(params) == text


def test_bare_flag_items_round_trip() -> None:
    # A1111 writes an item whose value equals its key as the bare key.
    text = "x\nSteps: 20, Tiling, Sampler: Euler, CFG scale: 7"
    params = parse_infotext(text)
    assert params.settings == {
        "Steps": "20",
        "Tiling": "Tiling",
        "Sampler": "Euler",
        "CFG scale": "7",
    }
    assert format_infotext(params) == text


def test_malformed_settings_items_are_kept() -> None:
    # An unquoted comma followed by a colon (written by some non-A1111 tools) stays in the value.
    params = parse_infotext("x\nSteps: 20, Model: a, b:c, Sampler: Euler, CFG scale: 7")
    assert params.model == "a, b:c"
    assert params.sampler == "Euler"


def test_broken_quote_is_read_raw() -> None:
    settings = parse_settings_line('Steps: 20, Note: "unclosed, Sampler: Euler, CFG scale: 7')
    assert settings is not None
    assert settings["Note"] == '"unclosed'
    assert settings["Sampler"] == "Euler"


def test_duplicate_keys_keep_the_last_value() -> None:
    settings = parse_settings_line("Steps: 1, Steps: 2, Sampler: Euler, CFG scale: 7")
    assert settings == {"Steps": "2", "Sampler": "Euler", "CFG scale": "7"}


# --- typed accessors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sampler", "schedule", "expected"),
    [
        ("DPM++ 2M Karras", None, ("DPM++ 2M", "Karras", "DPM++ 2M Karras")),
        ("DPM++ 2M", "Karras", ("DPM++ 2M", "Karras", "DPM++ 2M Karras")),
        (
            "DPM++ 2M SDE Exponential",
            None,
            ("DPM++ 2M SDE", "Exponential", "DPM++ 2M SDE Exponential"),
        ),
        (
            "DPM++ 2M SDE",
            "Exponential",
            ("DPM++ 2M SDE", "Exponential", "DPM++ 2M SDE Exponential"),
        ),
        (
            "DPM++ 2M SDE Heun Karras",
            None,
            ("DPM++ 2M SDE Heun", "Karras", "DPM++ 2M SDE Heun Karras"),
        ),
        ("Euler a", None, ("Euler a", None, "Euler a")),
        ("Euler", "Automatic", ("Euler", "Automatic", "Euler")),
        (
            "DPM++ 2M",
            "Align Your Steps",
            ("DPM++ 2M", "Align Your Steps", "DPM++ 2M Align Your Steps"),
        ),
        ("DPM++ 2M Karras", "Karras", ("DPM++ 2M", "Karras", "DPM++ 2M Karras")),
        ("Karras", None, ("Karras", None, "Karras")),
    ],
)
def test_sampler_normalisation(
    sampler: str, schedule: str | None, expected: tuple[str, str | None, str]
) -> None:
    settings = {"Sampler": sampler}
    if schedule is not None:
        settings["Schedule type"] = schedule
    params = GenerationParams(settings=settings)
    assert (params.sampler, params.schedule_type, params.sampler_label) == expected


def test_absent_values_are_none() -> None:
    params = GenerationParams(prompt="x")
    assert params.to_dict() == {
        "prompt": "x",
        "negative_prompt": "",
        "steps": None,
        "sampler": None,
        "schedule_type": None,
        "cfg_scale": None,
        "seed": None,
        "width": None,
        "height": None,
        "model": None,
        "model_hash": None,
        "clip_skip": None,
        "extras": {},
    }
    assert params.sampler_label is None


@pytest.mark.parametrize(
    "settings",
    [
        {"Steps": "thirty", "CFG scale": "high", "Seed": "-", "Size": "512", "Clip skip": "x"},
        {"Steps": "30.5", "CFG scale": "nan", "Seed": "", "Size": "512x", "Clip skip": "1e999"},
        {"Steps": "", "CFG scale": "inf", "Seed": "1.5", "Size": "axb", "Clip skip": " "},
    ],
)
def test_unreadable_numbers_are_none(settings: dict[str, str]) -> None:
    params = GenerationParams(settings=settings)
    assert params.steps is None
    assert params.cfg_scale is None
    assert params.seed is None
    assert params.width is None
    assert params.height is None
    assert params.clip_skip is None


def test_whole_float_counts_as_int() -> None:
    assert GenerationParams(settings={"Steps": "30.0", "Seed": "-1"}).steps == 30
    assert GenerationParams(settings={"Seed": "-1"}).seed == -1


def test_to_dict_is_json_serialisable() -> None:
    data = parse_infotext(A1111_NEW).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["extras"]["Version"] == "v1.10.1"
    assert data["width"] == 512


# --- writing ------------------------------------------------------------------------------------


def test_from_values_writes_a1111_order() -> None:
    params = GenerationParams.from_values(
        prompt="a cat",
        negative_prompt="blurry",
        steps=30,
        sampler="DPM++ 2M",
        schedule_type="Karras",
        cfg_scale=7.0,
        seed=4240233169,
        width=512,
        height=512,
        model="deliberate_v2",
        model_hash="9aba26abdf",
        clip_skip=None,
        extras={"Lora hashes": "name: 1a2b3c4d5e6f", "Version": "v1.10.1"},
    )
    assert format_infotext(params) == (
        "a cat\n"
        "Negative prompt: blurry\n"
        "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 4240233169, "
        "Size: 512x512, Model hash: 9aba26abdf, Model: deliberate_v2, "
        'Lora hashes: "name: 1a2b3c4d5e6f", Version: v1.10.1'
    )
    assert params.cfg_scale == 7.0
    assert params.sampler_label == "DPM++ 2M Karras"


def test_from_values_cfg_and_omissions() -> None:
    params = GenerationParams.from_values(steps=20, sampler="Euler a", cfg_scale=7.5, seed=1)
    assert params.settings == {"Steps": "20", "Sampler": "Euler a", "CFG scale": "7.5", "Seed": "1"}
    assert GenerationParams.from_values(width=512).settings == {}  # Size needs both sides


def test_from_values_rejects_known_keys_in_extras() -> None:
    with pytest.raises(ValueError, match="Seed"):
        GenerationParams.from_values(extras={"Seed": "1"})


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("plain", "plain"),
        ("a, b", '"a, b"'),
        ("a: b", '"a: b"'),
        ("line\nbreak", '"line\\nbreak"'),
        ('say "hi"', 'say "hi"'),  # A1111 leaves inner quotes alone
        ('"hi"', '"\\"hi\\""'),  # but a leading quote would read back as a quoted value
        ("ünïcode 日本", "ünïcode 日本"),
        ("a, 日本", '"a, 日本"'),  # JSON quoting keeps non-ASCII as is, like A1111
        (" padded ", '" padded "'),
        ("", '""'),
    ],
)
def test_value_quoting(value: str, written: str) -> None:
    params = GenerationParams(settings={"Steps": "1", "Sampler": "Euler", "Key": value})
    line = format_infotext(params)
    assert line == f"Steps: 1, Sampler: Euler, Key: {written}"
    assert parse_infotext(line).settings["Key"] == value


def test_empty_negative_is_omitted_even_with_empty_prompt() -> None:
    params = GenerationParams(settings={"Steps": "1", "Sampler": "Euler", "CFG scale": "7"})
    assert format_infotext(params) == "Steps: 1, Sampler: Euler, CFG scale: 7"
    params = GenerationParams(negative_prompt="bad", settings=params.settings)
    assert format_infotext(params) == "Negative prompt: bad\nSteps: 1, Sampler: Euler, CFG scale: 7"


# --- property tests -----------------------------------------------------------------------------

# Pieces that exercise the parser's edge cases; mixed with arbitrary text below.
TRICKY = [
    "\n",
    ", ",
    ": ",
    ":",
    ",",
    '"',
    '\\"',
    " ",
    "Negative prompt:",
    "Negative prompt: ",
    "\nNegative prompt: x",
    "Steps: 1, Sampler: a, CFG scale: 7",
    "(masterpiece:1.2)",
    "<lora:x:0.8>",
    "日本語",
    "\u2028",
    "\x85",
]
# \r is left out of prompts: readers normalise \r\n line endings.
prompt_text = st.lists(
    st.one_of(
        st.sampled_from(TRICKY),
        st.text(
            st.characters(blacklist_characters="\r", blacklist_categories=("Cs",)), max_size=12
        ),
    ),
    max_size=8,
).map("".join)
# Keys: non-empty, no ":" "," or newline, no surrounding whitespace.
keys = st.one_of(
    st.sampled_from(["Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Lora hashes"]),
    st.text(st.characters(blacklist_characters=":,\n"), min_size=1, max_size=15).filter(
        lambda k: k == k.strip()
    ),
)
values = st.one_of(st.sampled_from(TRICKY), st.text(max_size=20))
settings_dicts = st.one_of(
    st.just({}),
    st.dictionaries(keys, values, min_size=3, max_size=10).filter(
        # A1111 recognises the settings line by its three or more "key: value" items.
        lambda d: sum(k != v for k, v in d.items()) >= 3
    ),
)


# Building Hypothesis' Unicode tables on a cold cache can take seconds on the first draw.
property_settings = hypothesis_settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _representable(params: GenerationParams) -> bool:
    """What infotext can carry (A1111 has the same limits)."""
    text = format_infotext(params)
    if text != text.strip():
        return False  # readers strip the text, so the prompt cannot start with whitespace
    if any(line.startswith(NEGATIVE_PROMPT_PREFIX) for line in params.prompt.split("\n")):
        return False  # such a line starts the negative prompt
    # Without settings, the last line must not look like a settings line.
    return bool(params.settings) or parse_settings_line(text.split("\n")[-1]) is None


@property_settings
@given(prompt=prompt_text, negative=prompt_text, settings=settings_dicts)
def test_round_trip(prompt: str, negative: str, settings: dict[str, str]) -> None:
    params = GenerationParams(prompt=prompt, negative_prompt=negative, settings=settings)
    assume(_representable(params))
    text = format_infotext(params)
    assert parse_infotext(text) == params
    assert parse_infotext(text.replace("\n", "\r\n")) == params
    assert list(parse_infotext(text).settings) == list(settings)


@property_settings
@given(settings=settings_dicts.filter(bool))
def test_settings_line_round_trip(settings: dict[str, str]) -> None:
    line = format_infotext(GenerationParams(settings=settings))
    assert "\n" not in line
    assert parse_settings_line(line) == settings


@property_settings
@given(text=st.text(max_size=200) | st.lists(values | keys, max_size=20).map("".join))
def test_parser_never_raises(text: str) -> None:
    params = parse_infotext(text)
    params.to_dict()
    assert isinstance(params.sampler_label, str | None)
    assert isinstance(format_infotext(params), str)


def test_item_without_key_is_not_a_pair() -> None:
    assert parse_settings_line(": 1, Steps: 2, Sampler: Euler") is None
    settings = parse_settings_line("Steps: 2, : 1, Sampler: Euler, CFG scale: 7")
    assert settings == {"Steps": "2, : 1", "Sampler": "Euler", "CFG scale": "7"}
