"""Prompts of any length parse and count in linear time (a guard against hangs, not a
benchmark), with the same results as the straightforward quadratic parsers they replace."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from charstudio.prompts.attention import (
    _BREAK,
    _TOKEN,
    BREAK_MARKER,
    ROUND_MULTIPLIER,
    SQUARE_MULTIPLIER,
    AttentionRun,
    parse_attention_runs,
    parse_prompt_attention,
)
from charstudio.prompts.extra_networks import ExtraNetwork, split_extra_networks
from charstudio.prompts.schedule import prompt_schedule
from charstudio.prompts.token_count import prompt_report

# Generous for a slow machine: the quadratic parsers took 15 to over 30 seconds on some.
BOUND_S = 2.0

ADVERSARIAL = {
    "unclosed weights": "(a:" * 20000,
    "unclosed edits": "[a:b:" * 10000,
    "unclosed tags": "<lora:" * 20000,
    "open rounds": "(" * 100000,
    "open squares": "[" * 100000,
    "colons": "a:" * 50000,
    "weights and opens": "(a:1.1)(" * 12000,
    "backslashes": "\\" * 100000,
    "distinct weights, open": "".join(f"(a:1.{i:04d})(" for i in range(8000)),
    "deep, closed": "(" * 30000 + "a)" * 30000,
    "deep, closed with weights": "(" * 14000 + "a:1.3)" * 14000,
}


def _timed(function: Callable[[str], object], prompt: str) -> float:
    started = time.perf_counter()
    function(prompt)
    return time.perf_counter() - started


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_prompts_parse_and_count_quickly(name: str) -> None:
    prompt = ADVERSARIAL[name]
    assert _timed(parse_prompt_attention, prompt) < BOUND_S
    assert _timed(lambda text: prompt_schedule(text, 30), prompt) < BOUND_S
    assert _timed(split_extra_networks, prompt) < BOUND_S
    assert _timed(prompt_report, prompt) < BOUND_S


# -- the quadratic reference implementations (the code these replaced) -----------------------


def _reference_runs(text: str) -> list[AttentionRun]:
    runs: list[AttentionRun] = []
    round_starts: list[int] = []  # index into ``runs`` where each open "(" began
    square_starts: list[int] = []

    def multiply_from(start: int, factor: float) -> None:
        for run in runs[start:]:
            if not run.is_break:
                run.weight *= factor

    def add_text(chunk: str) -> None:
        # Empty pieces around a BREAK are kept as empty runs, as A1111 does.
        for i, piece in enumerate(_BREAK.split(chunk)):
            if i:
                runs.append(AttentionRun(BREAK_MARKER[0], BREAK_MARKER[1], is_break=True))
            runs.append(AttentionRun(piece))

    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        token = match.group(0)
        if kind == "escape":
            runs.append(AttentionRun(token[1]))
        elif kind == "backslash":
            runs.append(AttentionRun(""))
        elif kind == "open_round":
            round_starts.append(len(runs))
        elif kind == "open_square":
            square_starts.append(len(runs))
        elif kind == "weight" and round_starts:
            try:
                factor = float(match.group("weight"))
            except ValueError:
                add_text(token[:-1])
                factor = ROUND_MULTIPLIER
            multiply_from(round_starts.pop(), factor)
        elif kind == "close_round" and round_starts:
            multiply_from(round_starts.pop(), ROUND_MULTIPLIER)
        elif kind == "close_square" and square_starts:
            multiply_from(square_starts.pop(), SQUARE_MULTIPLIER)
        else:
            # Plain text, a lone colon, or a closer with nothing open (stays literal).
            add_text(token)

    # Brackets left open weigh everything after them; A1111 applies the round ones first.
    for start in round_starts:
        multiply_from(start, ROUND_MULTIPLIER)
    for start in square_starts:
        multiply_from(start, SQUARE_MULTIPLIER)

    if not runs:
        return [AttentionRun("")]

    merged: list[AttentionRun] = [runs[0]]
    for run in runs[1:]:
        last = merged[-1]
        if not run.is_break and not last.is_break and run.weight == last.weight:
            last.text += run.text
        else:
            merged.append(run)
    return merged


_REFERENCE_TAG = re.compile(r"<(\w+):([^>]+)>")


def _reference_extra_networks(prompt: str) -> tuple[str, list[ExtraNetwork]]:
    found: list[ExtraNetwork] = []

    def take(match: re.Match[str]) -> str:
        name, *args = match.group(2).split(":")
        found.append(ExtraNetwork(match.group(1), name, tuple(args)))
        return ""

    return _REFERENCE_TAG.sub(take, prompt), found


_PIECES = ["(", ")", "[", "]", ":", "a", "b c", " ", ",", "\\", "\\(", "1.3", ":1.5)", ":0)"]
_PIECES += [":.)", ":1.2.3)", "9" * 400, "BREAK", " BREAK ", "<", ">", "<lora:", "x:0.5>", "\n"]
_PROMPTS = st.lists(st.sampled_from(_PIECES), max_size=40).map("".join)


def _same(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)


@hypothesis_settings(max_examples=1500, deadline=None)
@given(_PROMPTS)
def test_attention_matches_the_reference(prompt: str) -> None:
    expected = _reference_runs(prompt)
    got = parse_attention_runs(prompt)
    assert [(r.text, r.is_break) for r in got] == [(r.text, r.is_break) for r in expected]
    assert all(_same(a.weight, b.weight) for a, b in zip(got, expected, strict=True))


@hypothesis_settings(max_examples=1500, deadline=None)
@given(_PROMPTS)
def test_extra_networks_match_the_reference(prompt: str) -> None:
    assert split_extra_networks(prompt) == _reference_extra_networks(prompt)


def test_deep_weights_match_the_reference() -> None:
    # Deep enough for weights to reach inf and 0, where the shared chains stop growing.
    # (1.1 ** 7447 overflows, 1.1 ** -7818 underflows.)
    for prompt in ["(a:" * 7500, "[a:b:" * 7850, "(a[b" * 900, "(x:0)(" * 50 + "(a" * 200]:
        assert parse_prompt_attention(prompt) == [run.as_tuple() for run in _reference_runs(prompt)]


def test_pathological_nesting_is_the_reference_up_to_rounding() -> None:
    # Past a million multiplications the weights are products computed in linear time.
    for prompt in ["(" * 1500 + "a)" * 1500, "([" * 800 + "a:1.01)b]" * 800 + "(" * 900]:
        expected = _reference_runs(prompt)
        got = parse_attention_runs(prompt)
        assert [(r.text, r.is_break) for r in got] == [(r.text, r.is_break) for r in expected]
        for a, b in zip(got, expected, strict=True):
            assert math.isclose(a.weight, b.weight, rel_tol=1e-9) or a.weight == b.weight
