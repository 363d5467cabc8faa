"""A1111's extra-network tags in prompts: ``<lora:name:0.8>``, ``<hypernet:name:1>`` …

A1111 removes these tags from the prompt before parsing attention and counting tokens, and
applies the networks they name separately.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TAG = re.compile(r"<(\w+):([^>]+)>")


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

    def take(match: re.Match[str]) -> str:
        name, *args = match.group(2).split(":")
        found.append(ExtraNetwork(match.group(1), name, tuple(args)))
        return ""

    return _TAG.sub(take, prompt), found
