"""Training captions made from each image's own prompt, and the artist's edits to them.

A caption is comma-separated tags with the activation tag (the project's token) first, as
kohya's trainers expect (``keep_tokens 1`` keeps it in front when tags are shuffled). For an
image charstudio generated, the caption comes from its prompt: the tags every image of its sweep
(the job that made it) shares describe the character and are replaced by the token; the tags
that differ across the sweep, or that hold a sweep axis' value (framing, angle, lighting), stay,
so the LoRA learns the character and not the framing. Images without a job are one group. An
image with no prompt (a photo, a drawing) gets the token and the class word (``woman``).

Tags keep A1111's syntax: ``(blue eyes:1.2)`` is one tag and commas inside brackets do not
split it. Extra-network tags (``<lora:…>``) and ``BREAK`` are dropped: they are not words
about the picture.

Which caption a run uses, first found: the artist's edit (the ``captions`` table), the ``.txt``
beside the image, the derived caption. Edits are whole captions; the bulk operations
(:func:`replace_in_captions`, :func:`add_tag`, :func:`remove_tag`) work on the effective
captions and store the results as edits.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charstudio.catalog.records import utc_now
from charstudio.training.templates import read_sidecar_caption

if TYPE_CHECKING:
    from charstudio.catalog.catalog import Catalog
    from charstudio.catalog.project import Project

__all__ = [
    "CLASS_WORD_SETTING",
    "DEFAULT_CLASS_WORD",
    "Caption",
    "add_tag",
    "caption_text",
    "class_word",
    "clear_caption",
    "derive_captions",
    "edited_captions",
    "join_tags",
    "project_captions",
    "remove_tag",
    "replace_in_captions",
    "set_caption",
    "split_tags",
    "tag_frequency",
    "write_caption_files",
]

CLASS_WORD_SETTING = "class_word"
DEFAULT_CLASS_WORD = "woman"
_OPENERS = {"(": ")", "[": "]", "{": "}"}
_SPACES = re.compile(r"\s+")
_BREAK = re.compile(r"\bBREAK\b")


@dataclass(frozen=True)
class Caption:
    """One image's caption and where it came from: ``edited``, ``sidecar`` (the ``.txt``
    beside the image), ``prompt`` (derived from its prompt) or ``class`` (token + class word)."""

    image_id: int
    path: str  # the catalog's path of the image
    text: str
    source: str
    derived: str  # what the prompt gives, to show beside an edit

    def to_json(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "path": self.path,
            "caption": self.text,
            "source": self.source,
            "derived": self.derived,
        }


# -- tags --------------------------------------------------------------------------------------


def _normal(tag: str) -> str:
    return _SPACES.sub(" ", tag).strip()


def split_tags(text: str) -> list[str]:
    """The caption's or prompt's tags: split at commas outside brackets (``\\(`` is a literal),
    whitespace collapsed, empty tags, ``BREAK`` and extra-network tags dropped."""
    from charstudio.prompts.extra_networks import split_extra_networks

    text, _networks = split_extra_networks(text or "")
    text = _BREAK.sub(",", text)
    tags: list[str] = []
    current: list[str] = []
    closers: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in _OPENERS:
            closers.append(_OPENERS[char])
        elif closers and char == closers[-1]:
            closers.pop()
        elif char == "," and not closers:
            tags.append("".join(current))
            current = []
            continue
        current.append(char)
    tags.append("".join(current))
    return [tag for tag in (_normal(t) for t in tags) if tag]


def join_tags(tags: Iterable[str]) -> str:
    return ", ".join(tags)


def _without_token(tag: str, token: str) -> str:
    """A varying tag with the token word taken out (it goes first, once)."""
    return _normal(re.sub(rf"(?<![\w-]){re.escape(token)}(?![\w-])", " ", tag))


def caption_text(token: str, tags: Iterable[str]) -> str:
    """``token, tag, tag`` with each tag once and the token not repeated."""
    out = [token]
    for tag in tags:
        tag = _without_token(tag, token)
        if tag and tag not in out:
            out.append(tag)
    return join_tags(out)


def derive_captions(
    prompts: Mapping[int, str | None],
    groups: Mapping[int, Sequence[str]],
    *,
    token: str,
    class_word: str = DEFAULT_CLASS_WORD,
    group_of: Mapping[int, Any] | None = None,
    sweep_values: Mapping[int, Sequence[str]] | None = None,
) -> dict[int, str]:
    """Each image's caption from its prompt (see the module docstring).

    ``prompts``: image id -> prompt (None or "" for an image without one); ``group_of``: image
    id -> its sweep (None: the images without one, together); ``groups``: sweep -> every prompt
    of that sweep (the whole sweep, not only the images captioned, so what is constant is
    judged on all of it; a sweep missing here is judged on the images given);
    ``sweep_values``: image id -> its sweep axis values (a tag holding one of them varies).
    """
    group_of = group_of or {}
    sweep_values = sweep_values or {}
    members: dict[Any, list[list[str]]] = {}
    for image_id, prompt in prompts.items():
        if prompt and prompt.strip():
            members.setdefault(group_of.get(image_id), []).append(split_tags(prompt))
    constant: dict[Any, set[str]] = {}
    for group, tag_lists in members.items():
        given = groups.get(group)
        lists = [split_tags(p) for p in given if p and p.strip()] if given else tag_lists
        constant[group] = set.intersection(*(set(tags) for tags in lists)) if lists else set()
    out: dict[int, str] = {}
    for image_id, prompt in prompts.items():
        if not (prompt and prompt.strip()):
            out[image_id] = caption_text(token, [class_word] if class_word else [])
            continue
        shared = constant.get(group_of.get(image_id), set())
        values = [v.strip() for v in sweep_values.get(image_id, ()) if v and v.strip()]
        varying = [
            tag
            for tag in split_tags(prompt)
            if tag not in shared or any(value in tag for value in values)
        ]
        out[image_id] = caption_text(token, varying)
    return out


def tag_frequency(captions: Iterable[str]) -> dict[str, int]:
    """How many captions hold each tag (kohya's ``ss_tag_frequency`` per dataset folder)."""
    counts: Counter[str] = Counter()
    for caption in captions:
        counts.update(set(split_tags(caption)))
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


# -- the project's captions ------------------------------------------------------------------


def class_word(project: Project) -> str:
    """The word for what the character is (``woman``, ``man``, ``cat``): a project setting."""
    value = project.catalog.get_setting(CLASS_WORD_SETTING, DEFAULT_CLASS_WORD)
    return str(value).strip() if value is not None else DEFAULT_CLASS_WORD


def edited_captions(catalog: Catalog, image_ids: Iterable[int] | None = None) -> dict[int, str]:
    with catalog.transaction() as conn:
        rows = conn.execute("SELECT image_id, text FROM captions").fetchall()
    wanted = None if image_ids is None else set(image_ids)
    return {int(i): str(t) for i, t in rows if wanted is None or int(i) in wanted}


def set_caption(catalog: Catalog, image_id: int, text: str) -> None:
    """Store the artist's caption for an image (whitespace around tags tidied)."""
    catalog.image(image_id)  # KeyError for an unknown image
    tidy = join_tags(split_tags(text)) if text.strip() else ""
    with catalog.transaction() as conn:
        conn.execute(
            "INSERT INTO captions (image_id, text, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (image_id) DO UPDATE SET text = excluded.text, "
            "updated_at = excluded.updated_at",
            (image_id, tidy, utc_now()),
        )


def clear_caption(catalog: Catalog, image_id: int) -> None:
    """Forget the edit: the image's caption is derived again."""
    with catalog.transaction() as conn:
        conn.execute("DELETE FROM captions WHERE image_id = ?", (image_id,))


def _job_prompts(catalog: Catalog, job_ids: Iterable[int]) -> dict[int, list[str]]:
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    marks = ", ".join("?" * len(ids))
    with catalog.transaction() as conn:
        rows = conn.execute(
            f"SELECT job_id, prompt FROM images WHERE job_id IN ({marks})", ids
        ).fetchall()
    out: dict[int, list[str]] = {}
    for job_id, prompt in rows:
        out.setdefault(int(job_id), []).append(prompt or "")
    return out


def project_captions(
    project: Project,
    image_ids: Sequence[int],
    *,
    token: str | None = None,
    use_sidecars: bool = True,
) -> list[Caption]:
    """The captions of the images, in the order given (see the module docstring)."""
    catalog = project.catalog
    token = token or project.token
    records = {i: catalog.image(i) for i in image_ids}
    group_of = {i: r.job_id for i, r in records.items()}
    derived = derive_captions(
        {i: r.prompt for i, r in records.items()},
        _job_prompts(catalog, (j for j in group_of.values() if j is not None)),
        token=token,
        class_word=class_word(project),
        group_of=group_of,
        sweep_values={i: list(r.sweep.values()) for i, r in records.items()},
    )
    edits = edited_captions(catalog, image_ids)
    out = []
    for image_id in image_ids:
        record = records[image_id]
        sidecar = read_sidecar_caption(project.file_path(record.path)) if use_sidecars else None
        if image_id in edits:
            text, source = edits[image_id], "edited"
        elif sidecar is not None:
            text, source = sidecar, "sidecar"
        else:
            text = derived[image_id]
            source = "prompt" if record.prompt and record.prompt.strip() else "class"
        out.append(Caption(image_id, record.path, text, source, derived[image_id]))
    return out


# -- bulk edits (the caption editor's) -------------------------------------------------------


def _store(project: Project, changes: Mapping[int, str]) -> list[int]:
    for image_id, text in changes.items():
        set_caption(project.catalog, image_id, text)
    return sorted(changes)


def replace_in_captions(
    project: Project, image_ids: Sequence[int], find: str, replace: str
) -> list[int]:
    """Replace ``find`` with ``replace`` in the images' captions (plain text, every occurrence);
    returns the ids whose caption changed."""
    if not find:
        raise ValueError("find/replace needs text to find")
    changes = {
        c.image_id: c.text.replace(find, replace)
        for c in project_captions(project, image_ids)
        if find in c.text
    }
    return _store(project, changes)


def add_tag(
    project: Project, image_ids: Sequence[int], tag: str, *, first: bool = False
) -> list[int]:
    """Add a tag to each caption lacking it: at the end, or right after the activation tag
    (``first``); returns the ids whose caption changed."""
    tag = _normal(tag)
    if not tag or len(split_tags(tag)) != 1:
        raise ValueError(f"not one tag: {tag!r}")
    changes = {}
    for caption in project_captions(project, image_ids):
        tags = split_tags(caption.text)
        if tag in tags:
            continue
        at = min(1, len(tags)) if first else len(tags)
        changes[caption.image_id] = join_tags([*tags[:at], tag, *tags[at:]])
    return _store(project, changes)


def remove_tag(project: Project, image_ids: Sequence[int], tag: str) -> list[int]:
    """Remove a tag from the captions holding it; returns the ids whose caption changed."""
    tag = _normal(tag)
    changes = {}
    for caption in project_captions(project, image_ids):
        tags = split_tags(caption.text)
        if tag in tags:
            changes[caption.image_id] = join_tags(t for t in tags if t != tag)
    return _store(project, changes)


def write_caption_files(
    project: Project, captions: Sequence[Caption]
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Write each caption to the ``.txt`` beside its image. A ``.txt`` that holds other text is
    left alone (reported as skipped with the reason), never overwritten silently.
    Returns ``(written, skipped)``."""
    from charstudio.atomic_files import write_bytes_atomic

    written: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for caption in captions:
        image = project.file_path(caption.path)
        target = image.with_suffix(".txt")
        existing = read_sidecar_caption(image)
        if target.exists() and existing is None:
            skipped.append((target, "not a readable caption file"))
            continue
        if existing is not None:
            if existing != caption.text:
                skipped.append((target, "holds another caption; edit or delete it first"))
            continue
        write_bytes_atomic(target, caption.text.encode("utf-8"))
        written.append(target)
    return written, skipped
