"""A1111 prompt attention parsing: weights must match A1111's floats exactly."""

from __future__ import annotations

import pytest

from charstudio.prompts import BREAK_MARKER, is_break, parse_attention_runs, parse_prompt_attention

# A1111's own documented examples (modules/prompt_parser.py docstring).
A1111_EXAMPLES = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ],
    ),
]


def assert_runs_equal(actual: list[tuple[str, float]], expected: list[tuple[str, float]]) -> None:
    # repr() compares floats bit for bit (and tells 0.0 from -0.0).
    assert repr(actual) == repr(expected)


@pytest.mark.parametrize(("prompt", "expected"), A1111_EXAMPLES)
def test_a1111_documented_examples(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert_runs_equal(parse_prompt_attention(prompt), expected)


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("", [("", 1.0)]),
        ("((x))", [("x", 1.2100000000000002)]),
        ("(((x)))", [("x", 1.3310000000000004)]),
        ("[x]", [("x", 0.9090909090909091)]),
        ("[[x]]", [("x", 0.8264462809917354)]),
        ("([x])", [("x", 1.0)]),
        ("[(x)]", [("x", 1.0)]),
        ("(x:0)", [("x", 0.0)]),
        ("(x:-1)", [("x", -1.0)]),
        ("(x:+1.5)", [("x", 1.5)]),
        ("(x: 1.2 )", [("x", 1.2)]),
        ("(x:\t.5)", [("x", 0.5)]),
        ("(x:1.)", [("x", 1.0)]),
        ("((x:1.3))", [("x", 1.4300000000000002)]),
        ("(a (b:1.5) c)", [("a ", 1.1), ("b", 1.6500000000000001), (" c", 1.1)]),
        ("[a (b) c]", [("a ", 0.9090909090909091), ("b", 1.0), (" c", 0.9090909090909091)]),
    ],
)
def test_weights_and_nesting(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert_runs_equal(parse_prompt_attention(prompt), expected)


def test_nesting_multiplies_per_run_like_a1111() -> None:
    # Each closer multiplies the run in turn, innermost first: ((1.0 * 1.6) * 1.1) * 1.1 * 1.1.
    # Raising 1.1 to the depth instead would differ in the last digits.
    weight = parse_prompt_attention("((((x:1.6))))")[0][1]
    assert repr(weight) == "2.1296000000000004"
    assert weight != 1.6 * 1.1**3
    assert repr(parse_prompt_attention("(((((x:1.3)))))")[0][1]) == "1.9033300000000009"


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("\\(x\\)", [("(x)", 1.0)]),
        ("\\[x\\]", [("[x]", 1.0)]),
        ("a\\\\b", [("a\\b", 1.0)]),
        # A lone backslash before an ordinary character vanishes (A1111 makes it an empty run).
        ("a\\b", [("ab", 1.0)]),
        ("(a)\\", [("a", 1.1), ("", 1.0)]),
        ("(\\(x\\))", [("(x)", 1.1)]),
        ("\\((x)", [("(", 1.0), ("x", 1.1)]),
    ],
)
def test_escapes(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert_runs_equal(parse_prompt_attention(prompt), expected)


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        # Open brackets at the end weigh everything after them.
        ("a (b [c", [("a ", 1.0), ("b ", 1.1), ("c", 1.0)]),
        ("((a", [("a", 1.2100000000000002)]),
        ("[a", [("a", 0.9090909090909091)]),
        # Stray closers are literal text.
        ("a) b] c", [("a) b] c", 1.0)]),
        ("a] (b)", [("a] ", 1.0), ("b", 1.1)]),
        # A weight closer with no "(" open is literal as well.
        ("a:1.2) b", [("a:1.2) b", 1.0)]),
        ("[a:1.2]", [("a:1.2", 0.9090909090909091)]),
    ],
)
def test_unbalanced_brackets(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert_runs_equal(parse_prompt_attention(prompt), expected)


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a:b", [("a:b", 1.0)]),
        ("score_9: masterpiece", [("score_9: masterpiece", 1.0)]),
        ("(a:b)", [("a:b", 1.1)]),
        ("<lora:name:0.8>", [("<lora:name:0.8>", 1.0)]),
        # Prompt-editing syntax is left for later code; it parses as A1111 parses it here.
        ("[cat:dog:0.5]", [("cat:dog:0.5", 0.9090909090909091)]),
    ],
)
def test_colons_outside_weights(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert_runs_equal(parse_prompt_attention(prompt), expected)


@pytest.mark.parametrize("prompt", ["(x:1.2.3)", "(x:.)", "(x:..)", "(x:+)", "(x:-.-)", "(:1..1)"])
def test_invalid_weights_do_not_crash(prompt: str) -> None:
    runs = parse_prompt_attention(prompt)
    # The bad number stays literal and the bracket closes with the default 1.1.
    assert runs == [(prompt[1:-1], 1.1)]


def test_break_splits_plain_text() -> None:
    assert parse_prompt_attention("a BREAK b") == [("a", 1.0), BREAK_MARKER, ("b", 1.0)]
    assert parse_prompt_attention("a\n BREAK\tb") == [("a", 1.0), BREAK_MARKER, ("b", 1.0)]
    # Empty neighbours are kept, as in A1111.
    assert parse_prompt_attention("BREAK") == [("", 1.0), BREAK_MARKER, ("", 1.0)]
    assert parse_prompt_attention("a BREAK BREAK b") == [
        ("a", 1.0),
        BREAK_MARKER,
        ("", 1.0),
        BREAK_MARKER,
        ("b", 1.0),
    ]


@pytest.mark.parametrize("prompt", ["BREAKING news", "a break b", "xBREAK", "BREAK_1", "BREAK2"])
def test_break_must_be_a_whole_uppercase_word(prompt: str) -> None:
    assert parse_prompt_attention(prompt) == [(prompt, 1.0)]


def test_break_is_recognised_next_to_brackets() -> None:
    assert parse_prompt_attention("(a)BREAK(b)") == [
        ("a", 1.1),
        ("", 1.0),
        BREAK_MARKER,
        ("", 1.0),
        ("b", 1.1),
    ]


def test_break_inside_brackets_stays_a_marker() -> None:
    # A1111 would multiply the marker to (BREAK, -1.1) and then tokenise it as text.
    assert parse_prompt_attention("(a BREAK b)") == [("a", 1.1), BREAK_MARKER, ("b", 1.1)]
    assert parse_prompt_attention("(a BREAK b:0)") == [("a", 0.0), BREAK_MARKER, ("b", 0.0)]
    assert parse_prompt_attention("[a BREAK") == [
        ("a", 0.9090909090909091),
        BREAK_MARKER,
        ("", 0.9090909090909091),
    ]


def test_break_marker_never_merges_with_text() -> None:
    runs = parse_attention_runs("(BREAK:-1)")
    assert [r.is_break for r in runs] == [False, True, False]
    assert [is_break(r.as_tuple()) for r in runs] == [False, True, False]


def test_adjacent_equal_weights_merge() -> None:
    assert parse_prompt_attention("(a)(b)[c][d]e") == [
        ("ab", 1.1),
        ("cd", 0.9090909090909091),
        ("e", 1.0),
    ]
    assert parse_prompt_attention("(a:1.2)(b:1.2)") == [("ab", 1.2)]


def test_whitespace_and_unicode_are_kept_verbatim() -> None:
    prompt = "  café\t(日本:1.1)  😀 "
    assert parse_prompt_attention(prompt) == [("  café\t", 1.0), ("日本", 1.1), ("  😀 ", 1.0)]


def test_long_prompt() -> None:
    prompt = ", ".join(f"(tag{i}:1.5)" for i in range(300))
    expected: list[tuple[str, float]] = []
    for i in range(300):
        if i:
            expected.append((", ", 1.0))
        expected.append((f"tag{i}", 1.5))
    assert parse_prompt_attention(prompt) == expected
