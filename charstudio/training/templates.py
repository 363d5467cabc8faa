"""Prompt templates and captions, as A1111's textual-inversion dataset uses them.

A template is lines of text; ``[name]`` becomes the embedding's name and ``[filewords]`` the
image's caption. A1111's rules, reproduced:

* the caption is the ``.txt`` file beside the image; without one A1111 uses the file name
  (leading numbers removed), charstudio first the prompt the catalog knows for the image;
* for each sample a random line of the template is chosen; the caption is split at commas,
  each tag is dropped with probability ``tag_dropout``, the tags are shuffled when
  ``shuffle_tags`` is on and joined again with ``,`` (A1111 keeps the spaces the tags had);
* without shuffling or dropout A1111 chooses each image's line once, when the dataset is built,
  and keeps it for the whole run (:func:`fixed_texts`); with either, anew for every sample.

Blank template lines are ignored (A1111 would pick them, training on an empty prompt).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "DEFAULT_TEMPLATE",
    "caption_from_filename",
    "fixed_texts",
    "read_sidecar_caption",
    "read_template_file",
    "render_template",
    "sample_text",
    "template_lines",
]

DEFAULT_TEMPLATE = "a closeup photo of [name], neutral gray background"
NAME = "[name]"
FILEWORDS = "[filewords]"

# A1111 strips leading numbers and dashes from file names used as captions ("00012-a cat").
_LEADING_NUMBERS = re.compile(r"^[-\d]+\s*")


def template_lines(text: str) -> list[str]:
    """The template's usable lines, stripped."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_template_file(path: Path | str) -> str:
    """A template file's text (A1111 keeps them in ``textual_inversion_templates/``)."""
    return Path(path).read_text(encoding="utf-8")


def read_sidecar_caption(image: Path) -> str | None:
    """The caption in ``<image stem>.txt`` beside the image, if there is one."""
    sidecar = image.with_suffix(".txt")
    if not sidecar.is_file():
        return None
    return sidecar.read_text(encoding="utf-8", errors="replace").strip()


def caption_from_filename(image: Path) -> str:
    """A1111's caption for an image without a ``.txt``: the file name without leading numbers."""
    return _LEADING_NUMBERS.sub("", image.stem)


def render_template(
    line: str,
    *,
    name: str,
    caption: str,
    rng: random.Random | None = None,
    shuffle_tags: bool = False,
    tag_dropout: float = 0.0,
) -> str:
    """One line with ``[filewords]`` and ``[name]`` filled in (tags dropped/shuffled by ``rng``)."""
    tags = caption.split(",")
    if tag_dropout and rng is not None:
        tags = [tag for tag in tags if rng.random() > tag_dropout]
    if shuffle_tags and rng is not None:
        rng.shuffle(tags)
    # [filewords] first, as A1111 does, so a caption cannot smuggle in another placeholder.
    return line.replace(FILEWORDS, ",".join(tags)).replace(NAME, name)


def sample_text(
    lines: Sequence[str],
    *,
    name: str,
    caption: str,
    rng: random.Random,
    shuffle_tags: bool = False,
    tag_dropout: float = 0.0,
) -> str:
    """A random line, filled in: the text of one training sample."""
    line = rng.choice(list(lines))
    return render_template(
        line,
        name=name,
        caption=caption,
        rng=rng,
        shuffle_tags=shuffle_tags,
        tag_dropout=tag_dropout,
    )


def fixed_texts(
    lines: Sequence[str], *, name: str, captions: Sequence[str], seed: int
) -> list[str]:
    """Each image's text when it never changes (no shuffle, no dropout): one line per image,
    chosen once from a stream of its own so a resumed run chooses the same ones."""
    rng = random.Random(f"{seed}:template-lines")
    return [sample_text(lines, name=name, caption=caption, rng=rng) for caption in captions]
