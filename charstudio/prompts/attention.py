"""A1111's prompt attention (emphasis) syntax.

``(x)`` multiplies the weight of ``x`` by 1.1, ``[x]`` divides it by 1.1, ``(x:1.3)`` multiplies
it by 1.3, and nesting multiplies. ``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\\\`` are literals. Unbalanced
brackets are tolerated. ``BREAK`` (a whole word) starts a new 75-token chunk.

The results must match A1111 to the last bit, because the weights end up in the conditioning
and in infotext that artists compare. So the weights are computed the way A1111 computes them:
every run starts at 1.0 and each closing bracket multiplies, in turn, every run opened since its
opening bracket. Floating-point multiplication is not associative, so computing the product
per bracket depth (e.g. ``1.1 ** depth``) would drift in the last digits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "BREAK_MARKER",
    "EMPHASIS_MODES",
    "ROUND_MULTIPLIER",
    "SQUARE_MULTIPLIER",
    "AttentionRun",
    "is_break",
    "parse_attention_runs",
    "parse_prompt_attention",
]

# A1111's "Emphasis mode" setting: "Original" weights tokens and restores the chunk's mean,
# "No norm" only weights them, "None" ignores this syntax (brackets and BREAK are plain text).
EMPHASIS_MODES = ("Original", "No norm", "None")

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

# The run A1111 emits for ``BREAK``: its token chunker recognises exactly this text and weight.
BREAK_MARKER: tuple[str, float] = ("BREAK", -1.0)

# One token of the emphasis syntax per match, tried in this order:
_TOKEN = re.compile(
    r"""
      (?P<escape>\\[()\[\]\\])        # \( \) \[ \] \\ : the literal character
    | (?P<backslash>\\)               # any other backslash: an empty run (A1111 quirk)
    | (?P<open_round>\()
    | (?P<open_square>\[)
    | :\s*(?P<weight>[+-]?[.\d]+)\s*\)  # ":1.3)" closes a round bracket with that factor
    | (?P<close_round>\))
    | (?P<close_square>\])
    | (?P<text>[^\\()\[\]:]+)
    | (?P<colon>:)                    # a colon that does not start a weight
    """,
    re.VERBOSE,
)

# BREAK as a whole word; the whitespace around it belongs to the marker, not to the text.
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.DOTALL)


@dataclass(slots=True)
class AttentionRun:
    """A run of prompt text sharing one weight; ``is_break`` marks a ``BREAK``."""

    text: str
    weight: float = 1.0
    is_break: bool = False

    def as_tuple(self) -> tuple[str, float]:
        return BREAK_MARKER if self.is_break else (self.text, self.weight)


def is_break(run: tuple[str, float]) -> bool:
    """Whether a run returned by :func:`parse_prompt_attention` is the ``BREAK`` marker."""
    return run[0] == BREAK_MARKER[0] and run[1] == BREAK_MARKER[1]


def parse_attention_runs(text: str) -> list[AttentionRun]:
    """Parse ``text`` into weighted runs, keeping ``BREAK`` markers distinguishable.

    Differences from A1111, both where A1111 misbehaves:

    * A ``BREAK`` inside brackets stays a plain marker. A1111 multiplies the marker's -1 weight
      by the bracket factors, after which its chunker no longer recognises it and tokenises the
      word "BREAK" as text; we keep it a BREAK, which is what the artist meant.
    * A weight that is not a number (``(x:1.2.3)``, ``(x:.)``) raises ValueError in A1111. Here
      the ``:1.2.3`` stays literal text and the ``)`` closes its bracket with the usual 1.1.
    """
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


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """A1111's ``parse_prompt_attention``: ``[(text, weight), ...]``, BREAK as ``("BREAK", -1.0)``.

    >>> parse_prompt_attention("an (important) word")
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
    """
    return [run.as_tuple() for run in parse_attention_runs(text)]
