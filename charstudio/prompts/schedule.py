"""A1111's prompt editing and alternation: which prompt text applies at which sampling step.

``[from:to:when]`` uses ``from`` up to step ``when`` and ``to`` after it; ``[to:when]`` adds
``to`` after ``when``; ``[from::when]`` removes ``from`` after ``when``. ``[a|b|c]`` cycles through
its options step by step. They nest (``[a:[b:c:5]:10]``) and mix with the emphasis syntax, which
stays in the scheduled texts for the attention parser.

The rules are A1111's (``get_learned_conditioning_prompt_schedules``, "new" timeline):

* ``when`` written with a decimal point (``0.5``, ``.5``, ``1.0``) is a fraction of the steps,
  ``int(when * steps)``; written without one (``16``, ``1e1``) it is a step number. Either way
  it is capped at ``steps``, and only values of 1 or more mark a switch.
* The schedule is a list of ``(end_at_step, text)``: each boundary step ``t`` (every ``when``,
  every step 1..steps when the prompt alternates, and ``steps`` itself) paired with the prompt
  as it reads at step ``t``.
* During sampling, A1111's denoiser counts its calls from 0 and uses the first entry whose
  ``end_at_step`` is at least that count (:func:`schedule_index`). So ``[cat:dog:16]`` at 30
  steps is "cat" for sampler steps 1–17 and "dog" for 18–30, and ``[a|b]`` reads a, a, b, a, …
  This off-by-one is A1111's and reproduced, since artists compare images with it.
* A prompt the grammar does not accept (a ``|`` outside an alternation, a trailing backslash)
  is not scheduled at all: the whole text is used for every step, brackets and all.
* With hires fix (``hires_steps``), step numbers count on past the first pass and fractions
  above 1 reach into the second pass (``[b:1.5]`` switches half-way through it).

The parser is a small recursive descent over A1111's grammar, not lark: on well-formed prompts
it gives A1111's schedules exactly (checked against A1111's grammar under lark 1.1.9 on
thousands of random prompts). One known difference, on malformed input only: when a group is
directly followed by two or more stray brackets or colons (``[a:b:3]]]``), lark's ambiguity
resolution reads the whole as text, while here the group still counts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = [
    "PromptSchedule",
    "ScheduleSpan",
    "prompt_schedule",
    "schedule_index",
    "schedule_spans",
]

# A1111's grammar takes lark's SIGNED_NUMBER here.
_NUMBER = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")
_WHITESPACE = re.compile(r"\s*")
# Plain text inside the grammar: anything but the syntax characters; a backslash escapes
# any one character except a newline (it then stays in the text, for the attention parser).
_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+")
_SYNTAX = "[]():|\\"


class _Unparsable(Exception):
    """The prompt does not fit A1111's grammar: it is used as plain text for every step."""


# Parse tree: a node list holds str (verbatim text), _Scheduled or _Alternate.
@dataclass(slots=True)
class _Scheduled:
    before: list  # nodes, empty for [to:when]
    after: list
    number: str
    when: int = 0


@dataclass(slots=True)
class _Alternate:
    options: list  # list of node lists


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        # A bracket group's parse depends only on where it starts: remember each, so
        # unbalanced input cannot make the backtracking slow.
        self._memo: dict[int, tuple[list, int] | None] = {}

    def parse(self) -> list:
        """The top level, where stray brackets and colons are literal text."""
        text, nodes, i = self.text, [], 0
        while i < len(text):
            char = text[i]
            if char in "[(":
                parsed = self._bracket(i)
                if parsed is not None:
                    node, i = parsed
                    nodes.extend(node)
                    continue
                nodes.append(char)
                i += 1
            elif char in "]):":
                nodes.append(char)
                i += 1
            elif char == "|":
                raise _Unparsable
            else:
                match = _PLAIN.match(text, i)
                if match is None:  # a backslash at the end, or before a newline
                    raise _Unparsable
                nodes.append(match.group(0))
                i = match.end()
        return nodes

    def _inner(self, i: int) -> tuple[list, int]:
        """A ``prompt`` inside brackets: text and well-formed bracket groups only; stops at the
        first character that cannot continue it."""
        text, nodes = self.text, []
        while i < len(text):
            char = text[i]
            if char in "[(":
                parsed = self._bracket(i)
                if parsed is None:
                    break
                node, i = parsed
                nodes.extend(node)
            elif char in "]):|":
                break
            else:
                match = _PLAIN.match(text, i)
                if match is None:
                    break
                nodes.append(match.group(0))
                i = match.end()
        return nodes, i

    def _at(self, i: int) -> str:
        return self.text[i] if i < len(self.text) else ""

    def _when(self, i: int) -> tuple[str, int] | None:
        """``[WHITESPACE] NUMBER [WHITESPACE] "]"`` from ``i``: the number and the end."""
        i = _WHITESPACE.match(self.text, i).end()  # type: ignore[union-attr]
        match = _NUMBER.match(self.text, i)
        if match is None:
            return None
        end = _WHITESPACE.match(self.text, match.end()).end()  # type: ignore[union-attr]
        if self._at(end) != "]":
            return None
        return match.group(0), end + 1

    def _bracket(self, start: int) -> tuple[list, int] | None:
        """A bracket group at ``start`` as nodes and its end, or None when it is not one."""
        if start not in self._memo:
            self._memo[start] = self._try_bracket(start)
        return self._memo[start]

    def _try_bracket(self, start: int) -> tuple[list, int] | None:
        opener = self.text[start]
        first, i = self._inner(start + 1)
        sep = self._at(i)
        if opener == "(":
            if sep == ")":
                return ["(", *first, ")"], i + 1
            if sep == ":":
                second, j = self._inner(i + 1)
                if self._at(j) == ")":
                    return ["(", *first, ":", *second, ")"], j + 1
            return None
        if sep == "]":
            return ["[", *first, "]"], i + 1
        if sep == "|":
            options = [first]
            while self._at(i) == "|":
                option, i = self._inner(i + 1)
                options.append(option)
            if self._at(i) != "]":
                return None
            return [_Alternate(options)], i + 1
        if sep != ":":
            return None
        when = self._when(i + 1)
        if when is not None:  # [to:when]
            return [_Scheduled([], first, when[0])], when[1]
        second, j = self._inner(i + 1)
        if self._at(j) != ":":
            return None
        when = self._when(j + 1)
        if when is None:
            return None
        return [_Scheduled(first, second, when[0])], when[1]


def _walk(nodes: Sequence) -> Iterator[_Scheduled | _Alternate]:
    """Every scheduled and alternating group, nested ones included."""
    for node in nodes:
        if isinstance(node, _Scheduled):
            yield node
            yield from _walk(node.before)
            yield from _walk(node.after)
        elif isinstance(node, _Alternate):
            yield node
            for option in node.options:
                yield from _walk(option)


def _render(nodes: Sequence, step: int) -> str:
    out: list[str] = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Scheduled):
            out.append(_render(node.before if step <= node.when else node.after, step))
        else:
            out.append(_render(node.options[(step - 1) % len(node.options)], step))
    return "".join(out)


@dataclass(frozen=True, slots=True)
class ScheduleSpan:
    """The sampler steps ``first``..``last`` (1-based, inclusive) that use ``text``."""

    first: int
    last: int
    text: str


@dataclass(frozen=True, slots=True)
class PromptSchedule:
    """A prompt's A1111 schedule: ``entries`` of ``(end_at_step, text)``, ascending."""

    entries: tuple[tuple[int, str], ...]
    steps: int

    @property
    def texts(self) -> list[str]:
        """The distinct texts, in order of first use (what must be encoded)."""
        return list(dict.fromkeys(text for _, text in self.entries))

    @property
    def is_scheduled(self) -> bool:
        return len(self.entries) > 1

    def index_at(self, step: int) -> int:
        """The entry used at sampler call ``step`` (0-based), as A1111's denoiser picks it."""
        return schedule_index([end for end, _ in self.entries], step)

    def text_at(self, step: int) -> str:
        return self.entries[self.index_at(step)][1]

    def spans(self) -> list[ScheduleSpan]:
        return schedule_spans(self)


def schedule_index(ends: Sequence[int], step: int) -> int:
    """A1111's lookup: the first entry whose end is at least ``step`` (0-based call count);
    past the last end, the first entry (as A1111's ``reconstruct_cond_batch`` falls back)."""
    for index, end in enumerate(ends):
        if step <= end:
            return index
    return 0


def schedule_spans(schedule: PromptSchedule) -> list[ScheduleSpan]:
    """Runs of consecutive sampler steps (1-based) that use the same text."""
    spans: list[ScheduleSpan] = []
    for step in range(schedule.steps):
        text = schedule.text_at(step)
        if spans and spans[-1].text == text:
            last = spans[-1]
            spans[-1] = ScheduleSpan(last.first, step + 1, text)
        else:
            spans.append(ScheduleSpan(step + 1, step + 1, text))
    return spans


def prompt_schedule(prompt: str, steps: int, *, hires_steps: int | None = None) -> PromptSchedule:
    """A1111's schedule of ``prompt`` for ``steps`` sampling steps (see the module notes).

    >>> prompt_schedule("a [fantasy:cyberpunk:16] landscape", 30).entries
    ((16, 'a fantasy landscape'), (30, 'a cyberpunk landscape'))
    """
    steps = max(1, int(steps))
    if hires_steps is None:
        total, int_offset, fraction_offset = steps, 0, 0.0
    else:
        total, int_offset, fraction_offset = max(1, int(hires_steps)), steps, 1.0

    if not any(char in prompt for char in _SYNTAX):
        return PromptSchedule(((total, prompt),), total)
    try:
        nodes = _Parser(prompt).parse()
    except (_Unparsable, RecursionError):
        return PromptSchedule(((total, prompt),), total)

    boundaries = {total}
    for node in _walk(nodes):
        if isinstance(node, _Alternate):
            boundaries.update(range(1, total + 1))
            continue
        value = float(node.number)
        if "." in node.number:
            value = (value - fraction_offset) * total
        else:
            value -= int_offset
        # Truncated as A1111's int() does, capped at the steps; anything below 1 (negative or
        # -inf included) never switches, so it is clamped to 0 rather than overflowing int().
        if value >= total:
            node.when = total
        else:
            node.when = int(value) if value >= 1 else 0
        if node.when >= 1:
            boundaries.add(node.when)
    entries = tuple((step, _render(nodes, step)) for step in sorted(boundaries))
    return PromptSchedule(entries, total)
