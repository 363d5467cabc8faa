"""A1111's extra-network tags in prompts: ``<lora:name:0.8>``, ``<hypernet:name:1>`` …

A1111 removes these tags from the prompt before parsing attention and counting tokens, and
applies the networks they name separately.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A1111's pattern is ``<(\w+):([^>]+)>``. Used as a regex, a prompt with many ``<kind:`` and no
# ``>`` after them takes quadratic time (every attempt scans to the end), so the tags are
# found by hand: the same matches, in linear time.
_TAG_START = re.compile(r"<(\w+):")


@dataclass(frozen=True)
class ExtraNetwork:
    kind: str  # "lora", "hypernet", "lyco" …
    name: str
    args: tuple[str, ...]  # the values after the name, e.g. ("0.8",)

    @property
    def weight(self) -> float:
        """The first argument as a number (A1111's default is 1.0)."""
        try:
            return float(self.args[0]) if self.args else 1.0
        except ValueError:
            return 1.0


def split_extra_networks(prompt: str) -> tuple[str, list[ExtraNetwork]]:
    """The prompt without its extra-network tags, and the tags in order."""
    found: list[ExtraNetwork] = []

    kept: list[str] = []
    position = 0  # where the text not yet kept starts
    search = 0  # where to look for the next "<"
    close = -1  # the first ">" at or after the last place looked (cached: it only moves on)
    while True:
        start = prompt.find("<", search)
        if start < 0:
            break
        head = _TAG_START.match(prompt, start)
        if head is None:
            search = start + 1
            continue
        if close < head.end():
            close = prompt.find(">", head.end())
            if close < 0:
                break  # no ">" left: no tag can end
        if close == head.end():  # "<kind:>": the arguments cannot be empty
            search = start + 1
            continue
        name, *args = prompt[head.end() : close].split(":")
        found.append(ExtraNetwork(head.group(1), name, tuple(args)))
        kept.append(prompt[position:start])
        position = search = close + 1
    kept.append(prompt[position:])
    return "".join(kept), found
