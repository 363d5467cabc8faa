"""A1111 prompt editing ``[from:to:when]`` and alternation ``[a|b]``: the schedule, the token
count, the ``prompt`` command, emphasis "None", and per-step conditioning in the sampler."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from charstudio.cli import main
from charstudio.prompts import (
    count_prompt_tokens,
    count_scheduled_tokens,
    format_prompt_report,
    prompt_report,
    prompt_schedule,
)


def entries(prompt: str, steps: int = 10, hires_steps: int | None = None) -> list[list]:
    return [
        list(entry) for entry in prompt_schedule(prompt, steps, hires_steps=hires_steps).entries
    ]


def spans(prompt: str, steps: int) -> list[tuple[int, int, str]]:
    return [(s.first, s.last, s.text) for s in prompt_schedule(prompt, steps).spans()]


# A1111's own examples (modules/prompt_parser.py's doctests), 10 steps.
A1111_EXAMPLES = [
    ("test", [[10, "test"]]),
    ("a [b:3]", [[3, "a "], [10, "a b"]]),
    ("a [b: 3]", [[3, "a "], [10, "a b"]]),
    ("a [[[b]]:2]", [[2, "a "], [10, "a [[b]]"]]),
    ("[(a:2):3]", [[3, ""], [10, "(a:2)"]]),
    ("a [b : c : 1] d", [[1, "a b  d"], [10, "a  c  d"]]),
    ("a[b:[c:d:2]:1]e", [[1, "abe"], [2, "ace"], [10, "ade"]]),
    ("a [unbalanced", [[10, "a [unbalanced"]]),
    ("a [b:.5] c", [[5, "a  c"], [10, "a b c"]]),
    ("((a][:b:c [d:3]", [[3, "((a][:b:c "], [10, "((a][:b:c d"]]),
    ("[a|(b:1.1)]", [[i, "a" if i % 2 else "(b:1.1)"] for i in range(1, 11)]),
    ("[fe|]male", [[i, "female" if i % 2 else "male"] for i in range(1, 11)]),
    ("[fe|||]male", [[i, "female" if i % 4 == 1 else "male"] for i in range(1, 11)]),
]


@pytest.mark.parametrize(("prompt", "expected"), A1111_EXAMPLES)
def test_a1111_examples(prompt: str, expected: list[list]) -> None:
    assert entries(prompt) == expected


def test_a1111_wiki_example_at_100_steps() -> None:
    prompt = (
        "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75]"
        "[ in foreground::0.6][: in background:0.25] [shoddy:masterful:0.5]"
    )
    assert entries(prompt, 100) == [
        [25, "fantasy landscape with a mountain and an oak in foreground shoddy"],
        [50, "fantasy landscape with a lake and an oak in foreground in background shoddy"],
        [60, "fantasy landscape with a lake and an oak in foreground in background masterful"],
        [75, "fantasy landscape with a lake and an oak in background masterful"],
        [100, "fantasy landscape with a lake and a christmas tree in background masterful"],
    ]


def test_step_numbers_fractions_and_the_sampler_steps_they_cover() -> None:
    prompt = "a [fantasy:cyberpunk:16] landscape"
    assert entries(prompt, 30) == [[16, "a fantasy landscape"], [30, "a cyberpunk landscape"]]
    # A1111's denoiser counts calls from 0, so "when" = 16 keeps the first text one step more.
    assert spans(prompt, 30) == [(1, 17, "a fantasy landscape"), (18, 30, "a cyberpunk landscape")]
    assert entries("[cat:dog:0.5]", 30) == [[15, "cat"], [30, "dog"]]
    assert entries("[cat:dog:0.5]", 7) == [[3, "cat"], [7, "dog"]]  # int(3.5)
    assert entries("a [to:10]", 30) == [[10, "a "], [30, "a to"]]
    assert entries("a [from::10]", 30) == [[10, "a from"], [30, "a "]]
    # A decimal point makes a fraction, none a step number: 1.0 is "all steps", 1 is step 1.
    assert entries("[a:b:1.0]", 30) == [[30, "a"]]
    assert entries("[a:b:1]", 30) == [[1, "a"], [30, "b"]]
    assert entries("[a:b:45]", 30) == [[30, "a"]]  # capped at the steps
    assert entries("[a:b:0]", 30) == [[30, "b"]]
    assert entries("[a:b:-3]", 30) == [[30, "b"]]
    assert entries("[a:b:1e999]", 30) == [[30, "a"]]  # no overflow


def test_nesting() -> None:
    assert entries("[a:[b:c:5]:10]", 20) == [[5, "a"], [10, "a"], [20, "c"]]
    assert entries("[[b:c:5]:a:10]", 20) == [[5, "b"], [10, "c"], [20, "a"]]
    assert entries("[x|[y:z:2]]", 4) == [[1, "x"], [2, "y"], [3, "x"], [4, "z"]]


def test_alternation_cycles_every_step() -> None:
    assert [text for _, text in entries("[a|b|c] cat", 6)] == [
        "a cat", "b cat", "c cat", "a cat", "b cat", "c cat",
    ]  # fmt: skip
    # Sampler steps: A1111's first two calls both read the first option.
    assert spans("[a|b]", 5) == [(1, 2, "a"), (3, 3, "b"), (4, 4, "a"), (5, 5, "b")]


def test_escapes_and_malformed_input_stay_literal() -> None:
    assert entries(r"a \[cat:dog:3\]", 10) == [[10, r"a \[cat:dog:3\]"]]
    assert entries(r"[a\:b:c:3]", 10) == [[3, r"a\:b"], [10, "c"]]
    assert entries(r"[a \| b:3]", 10) == [[3, ""], [10, r"a \| b"]]
    for broken in (
        "a [cat:dog:x]",  # not a number
        "a [cat:dog:3",  # not closed
        "a (cat:dog:3]",
        "a | b [cat:dog:3]",  # a | outside an alternation makes the whole prompt text
        "[a|b",
        "[cat:dog:3] \\",  # a trailing backslash, likewise
    ):
        assert entries(broken, 10) == [[10, broken]], broken
    # Emphasis and plain text pass through untouched.
    assert entries("(a:1.2) [b] \\(c\\) BREAK d", 10) == [[10, "(a:1.2) [b] \\(c\\) BREAK d"]]


def test_deep_or_unbalanced_input_is_quick() -> None:
    assert entries("[(" * 400 + "a:" * 400, 10)[0][0] == 10
    assert entries("[" * 5000, 10) == [[10, "[" * 5000]]


def test_hires_timeline() -> None:
    # A1111: with hires fix, step numbers count on from the first pass, fractions 1..2 are the
    # second pass.
    assert entries("a [b:.5] c", 10, hires_steps=10) == [[10, "a b c"]]
    assert entries("a [b:1.5] c", 10, hires_steps=10) == [[5, "a  c"], [10, "a b c"]]
    assert entries("a [b:13] c", 10, hires_steps=10) == [[3, "a  c"], [10, "a b c"]]


def test_token_count_is_the_longest_scheduled_text() -> None:
    prompt = "a photo of a [cat:very fluffy long haired ginger dog:0.5]"
    longest = count_prompt_tokens("a photo of a very fluffy long haired ginger dog")
    counted = count_scheduled_tokens(prompt, 30)
    assert counted.token_count == longest.token_count == 10
    assert count_prompt_tokens(prompt).token_count != 10  # the literal text counts differently
    report = prompt_report(prompt, steps=30)
    assert report["token_count"] == 10 and report["counter"] == "10/75"
    assert [span["token_count"] for span in report["schedule"]] == [5, 10]
    # [a|b] at one step only ever reads "a".
    assert prompt_report("[cat|very fluffy dog]", steps=1)["token_count"] == 1
    assert prompt_report("[cat|very fluffy dog]", steps=2)["token_count"] == 3


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_prompt_command_shows_the_schedule(capsys) -> None:
    code, out = run_cli(capsys, "prompt", "a [fantasy:cyberpunk:16] landscape", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["steps"] == 30
    assert report["schedule"] == [
        {"first_step": 1, "last_step": 17, "text": "a fantasy landscape", "token_count": 3},
        {"first_step": 18, "last_step": 30, "text": "a cyberpunk landscape", "token_count": 3},
    ]
    code, out = run_cli(capsys, "prompt", "[cat:dog:0.5] <lora:x:1>", "--steps", "10")
    assert code == 0
    assert out.splitlines()[:3] == [
        "Schedule (10 steps):",
        '  steps 1–6: "cat " (1 tokens)',
        '  steps 7–10: "dog " (1 tokens)',
    ]
    assert "Schedule" not in format_prompt_report(prompt_report("a plain prompt"))


def test_emphasis_none_reads_brackets_as_text(capsys) -> None:
    code, out = run_cli(capsys, "prompt", "a (red:1.3) hat", "--emphasis", "None", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["attention"] == [["a (red:1.3) hat", 1.0]]
    literal = count_prompt_tokens(r"a \(red:1.3\) hat")
    assert report["token_count"] == literal.token_count > 3
    plain = count_prompt_tokens("a (x) BREAK b", attention=False)
    assert len(plain.chunks) == 1 and set(plain.weights[0]) == {1.0}  # no BREAK either


# -- per-step conditioning in the sampler (tiny model) ------------------------------------------

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model():
    from .tiny_sd import tiny_components

    return tiny_components(seed=5)


SETTINGS = {
    "steps": 10,
    "cfg_scale": 7.0,
    "width": 32,
    "height": 32,
    "sampler": "Euler a",
    "schedule_type": None,
    "seeds": [11],
}


def sample(model, prompt: str, negative: str = "", conditioning=None, encoder=None):
    from charstudio.engine.conditioning import PromptEncoder
    from charstudio.engine.sampling import sample_latents

    return sample_latents(
        unet=model.unet,
        vae=model.vae,
        encoder=encoder or PromptEncoder(model.text_encoder),
        prompt=prompt,
        negative_prompt=negative,
        conditioning=conditioning,
        **SETTINGS,
    )


class HandSwitched:
    """Conditioning switched by hand: ``first`` for sampler calls ``0..last_first``, then
    ``second``; the negative likewise."""

    def __init__(self, first, second, last_first, uncond_first, uncond_second, uncond_last):
        self.first, self.second, self.last_first = first, second, last_first
        self.uncond = uncond_first, uncond_second, uncond_last

    def at(self, call: int):
        cond = self.first if call <= self.last_first else self.second
        first, second, last = self.uncond
        return cond, first if call <= last else second


def test_prompt_editing_switches_conditioning_during_sampling(model) -> None:
    from charstudio.engine.conditioning import PromptEncoder

    encoder = PromptEncoder(model.text_encoder)
    cat, dog, empty = encoder.encode("cat"), encoder.encode("dog"), encoder.encode("")
    edited = sample(model, "[cat:dog:0.5]")
    # 10 steps, 0.5 -> step 5: "cat" for sampler calls 0..5 (A1111 counts from 0), then "dog".
    by_hand = sample(model, "ignored", conditioning=HandSwitched(cat, dog, 5, empty, empty, 99))
    assert torch.equal(edited, by_hand)
    assert not torch.allclose(edited, sample(model, r"\[cat:dog:0.5\]"))  # the literal text
    assert not torch.allclose(edited, sample(model, "cat"))
    assert not torch.allclose(edited, sample(model, "dog"))


def test_negative_prompt_has_its_own_schedule(model) -> None:
    from charstudio.engine.conditioning import PromptEncoder

    encoder = PromptEncoder(model.text_encoder)
    cat, blurry, ugly = encoder.encode("cat"), encoder.encode("blurry"), encoder.encode("ugly")
    edited = sample(model, "cat", "[blurry:ugly:3]")
    by_hand = sample(model, "x", conditioning=HandSwitched(cat, cat, 99, blurry, ugly, 3))
    assert torch.equal(edited, by_hand)
    assert not torch.allclose(edited, sample(model, "cat", "blurry"))


def test_alternation_and_each_text_encoded_once(model) -> None:
    from charstudio.engine.conditioning import PromptEncoder

    class Counting(PromptEncoder):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.encoded: list[str] = []

        def encode(self, prompt: str):
            self.encoded.append(prompt)
            return super().encode(prompt)

    encoder = Counting(model.text_encoder)
    alternating = sample(model, "[cat|dog] <lora:x:1>", "[cat|dog]", encoder=encoder)
    assert encoder.encoded == ["cat ", "dog ", "cat", "dog"]  # tags removed, then once each
    schedule = encoder.schedule("[cat|dog]", "", 10)
    cat, dog = schedule.at(0)[0], schedule.at(2)[0]
    assert [schedule.at(i)[0] is cat for i in range(10)] == [
        True, True, False, True, False, True, False, True, False, True,
    ]  # fmt: skip
    assert torch.equal(schedule.at(3)[0], cat) and torch.equal(schedule.at(4)[0], dog)
    assert not torch.allclose(alternating, sample(model, "cat", "cat"))


def test_second_order_samplers_count_two_calls_per_step(model) -> None:
    from charstudio.engine.conditioning import PromptEncoder
    from charstudio.engine.sampling import sample_latents

    seen: list[int] = []

    class Recording(PromptEncoder):
        def schedule(self, prompt: str, negative_prompt: str, steps: int):
            seen.append(steps)
            return super().schedule(prompt, negative_prompt, steps)

    for sampler in ("Heun", "Euler"):
        settings = {**SETTINGS, "sampler": sampler, "steps": 4}
        encoder = Recording(model.text_encoder)
        sample_latents(unet=model.unet, vae=model.vae, encoder=encoder, prompt="[a:b:0.5]",
                       negative_prompt="", **settings)  # fmt: skip
    assert seen == [8, 4]  # A1111: steps * 2 for Heun (7 UNet calls), steps for Euler


def test_a_plain_prompt_samples_as_before(model) -> None:
    from charstudio.engine.conditioning import ConditioningSchedule, PromptEncoder

    encoder = PromptEncoder(model.text_encoder)
    prompt = "a photo of a (woman:1.2), " + "gray, " * 40  # two chunks against one
    pair = encoder.encode_pair(prompt, "blurry")
    constant = ConditioningSchedule.constant(*pair)
    assert torch.equal(sample(model, prompt, "blurry"), sample(model, "x", conditioning=constant))


def test_scheduled_texts_of_different_lengths_are_padded(model) -> None:
    from charstudio.engine.conditioning import PromptEncoder

    encoder = PromptEncoder(model.text_encoder)
    long_text = "gray, " * 40
    schedule = encoder.schedule(f"[cat:{long_text}:2]", "blurry", 10)
    early, late = schedule.at(0), schedule.at(5)
    assert early[0].shape[1] == early[1].shape[1] == 77
    assert late[0].shape[1] == late[1].shape[1] == 154
    sample(model, f"[cat:{long_text}:2]", "blurry")  # runs


def test_emphasis_none_encodes_brackets_as_text(model) -> None:
    from charstudio.engine.conditioning import EMPHASIS_MODES, encode_prompt

    assert EMPHASIS_MODES == ("Original", "No norm", "None")

    def encode(prompt: str, emphasis: str):
        return encode_prompt(prompt, text_encoder=model.text_encoder, emphasis=emphasis)

    none = encode("a (red:1.3) hat", "None")
    assert torch.allclose(none, encode(r"a \(red:1.3\) hat", "Original"))
    assert not torch.allclose(none, encode("a (red:1.3) hat", "Original"))
    assert not torch.allclose(none, encode("a red hat", "Original"))


# -- the emphasis setting and A1111 infotext -------------------------------------------------


def test_emphasis_setting_is_written_and_read_as_a1111_does() -> None:
    from charstudio.engine.regenerate import settings_from_infotext
    from charstudio.engine.sweeps import GenerationSettings
    from charstudio.metadata.infotext import format_infotext

    base = GenerationSettings(prompt="a [cat:dog:0.5] (hat:1.2)", seed=1, emphasis="No norm")
    text = format_infotext(base.to_params())
    assert "Emphasis: No norm" in text
    back = settings_from_infotext(text, model=None)
    assert back.emphasis == "No norm" and back.prompt == "a [cat:dog:0.5] (hat:1.2)"
    # A1111 notes it only off the default and only when a prompt has brackets.
    assert "Emphasis" not in format_infotext(base.replace(emphasis="Original").to_params())
    assert "Emphasis" not in format_infotext(base.replace(prompt="a cat").to_params())
    unknown = "a\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, Emphasis: Bogus"
    assert settings_from_infotext(unknown, model=None).emphasis == "Original"
    with pytest.raises(ValueError, match="Emphasis"):
        base.replace(emphasis="Bogus")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, model):
    from .tiny_sd import write_diffusers_folder

    return write_diffusers_folder(tmp_path_factory.mktemp("models") / "tiny-sd", model)


def test_generation_and_regeneration_follow_the_prompt_schedule(model_dir, tmp_path) -> None:
    from PIL import Image

    from charstudio.catalog import Project
    from charstudio.catalog.importer import import_images
    from charstudio.engine.regenerate import regenerate_image
    from charstudio.engine.requests import GenerateRequest
    from charstudio.engine.sweeps import GenerationSettings
    from charstudio.jobs import run_job
    from charstudio.jobs.queue import JobQueue
    from charstudio.metadata.imagefile import read_infotext

    base = GenerationSettings(
        prompt="a [cat:dog:0.5] (hat:1.3)",
        negative_prompt="blurry",
        seed=77,
        steps=4,
        sampler="Euler a",
        schedule_type=None,
        width=32,
        height=32,
        model=str(model_dir),
        emphasis="No norm",
    )
    with Project.create(tmp_path / "proj", "Demo") as project:

        def generate(settings: GenerationSettings) -> tuple[Path, object]:
            queue = JobQueue(project)
            job_id = queue.submit("generate", GenerateRequest(settings).to_params())
            run_job(queue.run_next(None, job_id=job_id), lambda _event: None)
            (image_id,) = json.loads(project.catalog.job(job_id)["result"])["image_ids"]
            path = project.file_path(project.catalog.image(image_id).path)
            with Image.open(path) as image:
                return path, np.asarray(image.convert("RGB")).copy()

        path, scheduled = generate(base)
        infotext = read_infotext(path)
        assert infotext.startswith("a [cat:dog:0.5] (hat:1.3)\n")
        assert "Emphasis: No norm" in infotext
        _, literal = generate(base.replace(prompt=r"a \[cat:dog:0.5\] (hat:1.3)"))
        _, original = generate(base.replace(emphasis="Original"))
        assert not np.array_equal(scheduled, literal)
        assert not np.array_equal(scheduled, original)

        with Project.create(tmp_path / "other", "Other") as other:
            run_job(import_images(other, [path]))
            (image_id,) = [record.id for record in other.catalog.images()]
            result = run_job(regenerate_image(other, image_id, model=str(model_dir)))
            assert result.identical is True
