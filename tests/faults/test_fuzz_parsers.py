"""Hypothesis fuzzing of the text parsers an artist's input reaches: infotext (from any image
file), prompt attention, prompt editing schedules and the token counter. None may raise,
hang or answer nonsense on any text; each case runs under a deadline, and the example counts
keep the whole module to seconds."""

from __future__ import annotations

import itertools
import re
from datetime import timedelta

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from charstudio.metadata.infotext import (
    NEGATIVE_PROMPT_PREFIX,
    GenerationParams,
    format_infotext,
    parse_infotext,
)
from charstudio.prompts.attention import parse_prompt_attention
from charstudio.prompts.schedule import prompt_schedule
from charstudio.prompts.token_count import CHUNK_LENGTH, count_prompt_tokens, prompt_report

# A deadline per case: a parser that goes quadratic (or worse) on some input fails here
# instead of freezing the prompt box. Generous, as CI machines are shared.
fuzz = settings(
    max_examples=200,
    deadline=timedelta(seconds=2),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Text biased towards the characters the parsers care about, plus anything else.
SYNTAX = "()[]{}<>:|\\,.\"' \n\t0123456789-+eE"
prompt_text = st.text(
    alphabet=st.one_of(st.sampled_from(SYNTAX), st.characters(codec="utf-8")), max_size=300
) | st.sampled_from(["BREAK", "AND", "Negative prompt:", "Steps: 3, Seed: 1, Size: 1x1"]).flatmap(
    lambda word: st.lists(st.sampled_from([word, " ", "\n", ",", "(", ")", "x"]), max_size=40).map(
        "".join
    )
)

DEEP = "(" * 5000 + "x" + ")" * 5000


# --- infotext -----------------------------------------------------------------------------------


@fuzz
@given(prompt_text)
@example("\r\n\r\n")
@example('Steps: 1, Sampler: "unclosed, CFG scale: 7, Seed: 1')
@example("a: b, c: d, e: f, : g, h:, , ,")
def test_parse_infotext_never_raises(text: str) -> None:
    params = parse_infotext(text)
    assert isinstance(params, GenerationParams)
    # Every typed accessor answers (None when the value is not what it should be).
    params.to_dict()
    assert params.steps is None or isinstance(params.steps, int)
    # What was read writes back, and that reads back the same: stable after one trip.
    again = parse_infotext(format_infotext(params))
    assert format_infotext(again) == format_infotext(params)


line_text = st.text(st.characters(codec="utf-8", exclude_characters="\r"), max_size=80)
key_text = st.from_regex(r"[A-Za-z][A-Za-z0-9 _.-]{0,15}", fullmatch=True).map(str.strip)


@st.composite
def generation_params(draw: st.DrawFn) -> GenerationParams:
    prompt = draw(line_text)
    negative = draw(line_text)
    # A line of the prompt that starts with the marker would start the negative prompt.
    assume(not any(line.startswith(NEGATIVE_PROMPT_PREFIX) for line in prompt.split("\n")))
    assume(prompt == prompt.lstrip())  # readers strip the whole text
    assume(not (prompt == "" and negative.startswith(" ")))
    extras = draw(st.dictionaries(key_text, line_text, max_size=4))
    extras = {k: v for k, v in extras.items() if k and k not in {"Steps", "Sampler", "Seed"}}
    return GenerationParams.from_values(
        prompt=prompt,
        negative_prompt=negative,
        steps=draw(st.integers(1, 150)),
        sampler=draw(st.sampled_from(["Euler a", "DPM++ 2M", "DPM++ SDE", "UniPC"])),
        seed=draw(st.integers(0, 2**32 - 1)),
        cfg_scale=draw(st.floats(1, 30, allow_nan=False).map(lambda x: round(x, 1))),
        extras={
            k: v
            for k, v in extras.items()
            if not re.fullmatch(r"(?i)schedule type|cfg scale|size|model( hash)?|clip skip", k)
        },
    )


@fuzz
@given(generation_params())
def test_what_charstudio_writes_reads_back_unchanged(params: GenerationParams) -> None:
    text = format_infotext(params)
    back = parse_infotext(text)
    assert back.prompt == params.prompt
    assert back.negative_prompt == params.negative_prompt
    assert back.settings == params.settings
    assert format_infotext(back) == text


# --- prompt attention ---------------------------------------------------------------------------


@fuzz
@given(prompt_text)
@example(DEEP)
@example("(" * 3000)
@example("[" * 3000 + "]" * 10)
@example("(a:1e400) (b:-1e400) (c:-0) (d:.)")
def test_parse_prompt_attention_never_raises(text: str) -> None:
    runs = parse_prompt_attention(text)
    assert runs  # even an empty prompt is one run
    for piece, weight in runs:
        assert isinstance(piece, str)
        assert isinstance(weight, float)
        assert weight == weight  # never NaN: it would poison the conditioning


@fuzz
@given(st.text(st.characters(codec="utf-8"), max_size=300))
def test_escaped_text_is_read_literally(text: str) -> None:
    assume("BREAK" not in text)
    escaped = re.sub(r"([\\()\[\]])", r"\\\1", text)
    runs = parse_prompt_attention(escaped)
    assert "".join(piece for piece, _ in runs) == text
    assert {weight for _, weight in runs} <= {1.0}


# --- prompt editing and alternation -------------------------------------------------------------


@fuzz
@given(prompt_text, st.integers(1, 150), st.none() | st.integers(1, 150))
@example(DEEP, 30, None)
@example("[a:b:1e400] [c:d:-1e400] [e|f|g] [h::0.5] [:i:.5]", 20, 40)
@example("[" * 2000 + "a:b:3" + "]" * 2000, 30, None)
def test_prompt_schedule_never_raises_and_covers_every_step(
    text: str, steps: int, hires: int | None
) -> None:
    schedule = prompt_schedule(text, steps, hires_steps=hires)
    total = hires if hires is not None else steps
    ends = [end for end, _ in schedule.entries]
    assert ends == sorted(set(ends))
    assert ends[-1] == total == schedule.steps
    assert all(1 <= end <= total for end in ends)
    spans = schedule.spans()
    assert spans[0].first == 1 and spans[-1].last == total
    assert all(a.last + 1 == b.first for a, b in itertools.pairwise(spans))
    if not any(c in text for c in "[]():|\\"):
        assert schedule.entries == ((total, text),)


# --- token counter ------------------------------------------------------------------------------


@fuzz
@given(prompt_text, st.booleans())
@example(DEEP, True)
@example("BREAK " * 50, True)
@example("fr3nch, " * 80, True)
def test_token_count_never_raises_and_keeps_the_chunk_limit(text: str, attention: bool) -> None:
    counted = count_prompt_tokens(text, embeddings={"fr3nch": 2, "big": 80}, attention=attention)
    assert counted.chunks
    assert all(len(chunk) <= CHUNK_LENGTH for chunk in counted.chunks) or "big" in text
    assert counted.limit == CHUNK_LENGTH * len(counted.chunks)
    assert 0 <= counted.token_count <= counted.limit or "big" in text


@fuzz
@given(prompt_text, st.sampled_from(["Original", "No norm", "None"]))
@example("<lora:a:0.8> <lora:b> <lora:> <:::> [a:<lora:c:1>:5]", "Original")
def test_prompt_report_never_raises(text: str, emphasis: str) -> None:
    report = prompt_report(text, {"fr3nch": 2}, emphasis=emphasis)
    assert report["counter"]
    assert report["schedule"]
