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

import math
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

    Weights are multiplied one factor after another, as A1111 does, so they match its last
    bits. That takes time in proportion to runs times brackets around them; a prompt where
    that passes :data:`_EXACT_WORK` (thousands of nested brackets, never a real prompt) gets
    each weight as a product computed in linear time instead, equal but for the last bits.
    """
    try:
        return _parse(text, exact=True)
    except _TooDeep:
        return _parse(text, exact=False)


# Multiplications allowed before a prompt counts as pathological (a real prompt needs a few
# hundred; a million take a fraction of a second).
_EXACT_WORK = 1_000_000


class _TooDeep(Exception):
    pass


def _parse(text: str, *, exact: bool) -> list[AttentionRun]:
    runs: list[AttentionRun] = []
    pieces: list[list[str]] = []  # each run's text, joined at the end (no quadratic +=)
    round_starts: list[int] = []  # index into ``runs`` where each open "(" began
    square_starts: list[int] = []

    work = [0]
    ranges: list[tuple[int, int, float]] = []  # (first, end, factor) when not ``exact``

    def multiply_from(start: int, factor: float) -> None:
        if not exact:
            ranges.append((start, len(runs), factor))
            return
        work[0] += len(runs) - start
        if work[0] > _EXACT_WORK:
            raise _TooDeep
        for run in runs[start:]:
            if not run.is_break:
                run.weight *= factor

    def append(run: AttentionRun) -> None:
        # A run of the same weight as the one before it, with no open bracket starting
        # between them, gets every later factor that one gets: the two are joined now, as the
        # final merge would join them (finite non-zero weights only, where equal means the
        # same bits and stays so after any factor), so each bracket multiplies fewer runs.
        if exact and runs and not run.is_break:
            last = runs[-1]
            at = len(runs)
            if (
                not last.is_break
                and last.weight == run.weight
                and last.weight != 0
                and math.isfinite(last.weight)
                and not (round_starts and round_starts[-1] == at)
                and not (square_starts and square_starts[-1] == at)
            ):
                pieces[-1].append(run.text)
                return
        runs.append(run)
        pieces.append([run.text])

    def add_text(chunk: str) -> None:
        # Empty pieces around a BREAK are kept as empty runs, as A1111 does.
        for i, piece in enumerate(_BREAK.split(chunk)):
            if i:
                append(AttentionRun(BREAK_MARKER[0], BREAK_MARKER[1], is_break=True))
            append(AttentionRun(piece))

    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        token = match.group(0)
        if kind == "escape":
            append(AttentionRun(token[1]))
        elif kind == "backslash":
            append(AttentionRun(""))
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

    for run, texts in zip(runs, pieces, strict=True):
        run.text = "".join(texts)
    # Brackets left open weigh everything after them; A1111 applies the round ones first.
    if exact:
        _close_open_brackets(runs, round_starts, square_starts, _EXACT_WORK - work[0])
    else:
        ranges.extend((start, len(runs), ROUND_MULTIPLIER) for start in round_starts)
        ranges.extend((start, len(runs), SQUARE_MULTIPLIER) for start in square_starts)
        _multiply_ranges(runs, ranges)

    if not runs:
        return [AttentionRun("")]

    merged: list[AttentionRun] = [runs[0]]
    texts = [runs[0].text]
    for run in runs[1:]:
        last = merged[-1]
        if not run.is_break and not last.is_break and run.weight == last.weight:
            texts.append(run.text)
        else:
            last.text = "".join(texts)
            merged.append(run)
            texts = [run.text]
    merged[-1].text = "".join(texts)
    return merged


def _close_open_brackets(
    runs: list[AttentionRun], round_starts: list[int], square_starts: list[int], budget: int
) -> None:
    """Multiply each run by 1.1 once per "(" left open at or before it, then by 1/1.1 once per
    such "[", one multiplication after another as A1111 does (so the last bits match), but
    in linear time: runs that start from the same weight share one chain of products, which
    stops growing once it reaches a value no further factor changes (inf, 0, nan)."""
    if not round_starts and not square_starts:
        return
    chains: dict[tuple[str, float], list[float]] = {}
    work = [0]

    def times(weight: float, factor: float, count: int) -> float:
        if count == 0 or math.isnan(weight):
            return weight
        chain = chains.setdefault((weight.hex(), factor), [weight])
        while len(chain) <= count:
            last = chain[-1]
            if last == 0 or math.isinf(last) or math.isnan(last):
                return last  # 0, inf and nan stay as they are (times 1.1 or 1/1.1)
            work[0] += 1
            if work[0] > budget:
                raise _TooDeep
            chain.append(last * factor)
        return chain[count]

    rounds = squares = 0
    for index, run in enumerate(runs):
        while rounds < len(round_starts) and round_starts[rounds] <= index:
            rounds += 1
        while squares < len(square_starts) and square_starts[squares] <= index:
            squares += 1
        if not run.is_break:
            weight = times(run.weight, ROUND_MULTIPLIER, rounds)
            run.weight = times(weight, SQUARE_MULTIPLIER, squares)


def _multiply_ranges(runs: list[AttentionRun], ranges: list[tuple[int, int, float]]) -> None:
    """Multiply the runs ``first`` to ``end`` (not included) by ``factor`` for every range, in
    linear time: sums of logarithms over the ranges (and counts of negative, zero and infinite
    factors), so each weight is its product up to rounding."""
    size = len(runs) + 1
    logs = [0.0] * size
    negatives = [0] * size
    zeros = [0] * size
    infinities = [0] * size
    for first, end, factor in ranges:
        if factor < 0:
            negatives[first] += 1
            negatives[end] -= 1
        if factor == 0:
            zeros[first] += 1
            zeros[end] -= 1
        elif math.isinf(factor):
            infinities[first] += 1
            infinities[end] -= 1
        else:
            logs[first] += math.log(abs(factor))
            logs[end] -= math.log(abs(factor))
    log_sum = 0.0
    negative = zero = infinite = 0
    for index, run in enumerate(runs):
        log_sum += logs[index]
        negative += negatives[index]
        zero += zeros[index]
        infinite += infinities[index]
        if run.is_break:
            continue
        if zero and infinite:
            magnitude = math.nan
        elif zero:
            magnitude = 0.0
        elif infinite:
            magnitude = math.inf
        else:
            try:
                magnitude = math.exp(log_sum)
            except OverflowError:
                magnitude = math.inf
        run.weight = -magnitude if negative % 2 else magnitude


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """A1111's ``parse_prompt_attention``: ``[(text, weight), ...]``, BREAK as ``("BREAK", -1.0)``.

    >>> parse_prompt_attention("an (important) word")
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
    """
    return [run.as_tuple() for run in parse_attention_runs(text)]
