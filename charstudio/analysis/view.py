"""What the library shows of a project's face analysis, as plain functions over image ids.

The grid asks the catalog for the ids that pass the SQL part of a filter
(:meth:`Catalog.filtered_ids`), then :func:`arrange` applies what only the analysis can answer:
the face filter, an identity group, the look-alike order and the collapsing of near-duplicate
stacks to their best image. The same module decides which images the bulk actions touch
("Reject Flagged as Off-prompt", "Keep the Best of Each Stack"), the badges of a cell and the
face lines of the info panel, so the GUI only displays and the tests need no Qt.

Everything here reads an :class:`AnalysisIndex`, built once from the catalog's cache
(:func:`charstudio.analysis.project.load_analyses`) whenever an ``analyze`` job finishes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from charstudio.analysis.clustering import DEFAULT_IDENTITY_DISTANCE
from charstudio.analysis.duplicates import DEFAULT_MAX_DISTANCE
from charstudio.analysis.flags import (
    BLURRY_FACE,
    CUT_OFF,
    DEFAULT_THRESHOLDS,
    NO_FACE,
    SEVERAL_FACES,
    SMALL_FACE,
    FlagThresholds,
    face_flags,
)
from charstudio.catalog.queries import FACE_FILTERS
from charstudio.catalog.records import Decision
from charstudio.jobs.protocol import CancelToken, JobCanceled, format_eta

if TYPE_CHECKING:
    from charstudio.analysis.results import FaceAnalysis
    from charstudio.analysis.similarity import EmbeddingSet
    from charstudio.catalog.catalog import Catalog

__all__ = [
    "BADGE_TEXT",
    "FACE_FILTER_LABELS",
    "AnalysisIndex",
    "GridArrangement",
    "StackCell",
    "arrange",
    "badge_texts",
    "collapse_stacks",
    "describe_weights_error",
    "face_summary",
    "filter_by_face",
    "filter_by_identity",
    "identity_labels",
    "install_weights_file",
    "keep_best_rejects",
    "lookalike_order",
    "lookalike_references",
    "lookalike_status",
    "progress_text",
    "reject_flagged_ids",
    "stack_best",
    "valid_identity",
]

FACE_FILTER_LABELS = {
    "any": "any",
    "flagged": "flagged (any flag)",
    NO_FACE: "no face",
    SEVERAL_FACES: "several faces",
    CUT_OFF: "cut off",
    SMALL_FACE: "small face",
    BLURRY_FACE: "blurry face",
    "unflagged": "no flag",
}
# Short words that stay readable on a 96-px cell; "several faces" shows the count instead.
BADGE_TEXT = {NO_FACE: "no face", CUT_OFF: "cut off", SMALL_FACE: "small", BLURRY_FACE: "blurry"}
_FLAG_RANK = {"pick": 2, "none": 1, "reject": 0}


# -- the index ---------------------------------------------------------------------------------


class AnalysisIndex:
    """The analysis of a project's images, reshaped for the library: flags, face counts and
    main-face sharpness per image, duplicate stacks, and face embeddings for look-alikes.

    Only images with a current cached analysis are in it; the rest are simply "not analyzed".
    """

    def __init__(
        self,
        analyses: Mapping[int, FaceAnalysis],
        *,
        thresholds: FlagThresholds = DEFAULT_THRESHOLDS,
        max_distance: int = DEFAULT_MAX_DISTANCE,
    ) -> None:
        from charstudio.analysis.duplicates import duplicate_stacks
        from charstudio.analysis.similarity import EmbeddingSet

        ordered = sorted(analyses.items())
        self.flags: dict[int, tuple[str, ...]] = {i: face_flags(a, thresholds) for i, a in ordered}
        self.faces: dict[int, int] = {
            i: len(a.confident_faces(thresholds.min_confidence)) for i, a in ordered
        }
        self.sharpness: dict[int, float | None] = {}
        for image_id, analysis in ordered:
            main = analysis.main_face(thresholds.min_confidence)
            self.sharpness[image_id] = main.sharpness if main is not None else None
        self.stacks: list[tuple[int, ...]] = [
            tuple(stack)
            for stack in duplicate_stacks(
                {i: a.phash for i, a in ordered}, max_distance=max_distance
            )
        ]
        self._stack_of = {member: stack for stack in self.stacks for member in stack}
        self.embeddings: EmbeddingSet[int] = EmbeddingSet.from_mapping(
            {i: a.embedding_array() for i, a in ordered}
        )
        self._groups: dict[float, list[list[int]]] = {}

    @classmethod
    def empty(cls) -> AnalysisIndex:
        return cls({})

    @classmethod
    def from_catalog(
        cls,
        catalog: Catalog,
        *,
        thresholds: FlagThresholds = DEFAULT_THRESHOLDS,
        max_distance: int = DEFAULT_MAX_DISTANCE,
    ) -> AnalysisIndex:
        from charstudio.analysis.project import load_analyses

        return cls(load_analyses(catalog), thresholds=thresholds, max_distance=max_distance)

    def __len__(self) -> int:
        return len(self.flags)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self.flags

    @property
    def has_embeddings(self) -> bool:
        return len(self.embeddings) > 0

    def stack_of(self, image_id: int) -> tuple[int, ...] | None:
        """The whole duplicate stack ``image_id`` belongs to (two or more ids), if any."""
        return self._stack_of.get(image_id)

    def identity_groups(self, threshold: float = DEFAULT_IDENTITY_DISTANCE) -> list[list[int]]:
        """Groups of two or more images showing the same identity, largest first (cached per
        threshold: the slider goes back and forth)."""
        key = round(float(threshold), 4)
        if key not in self._groups:
            from charstudio.analysis.clustering import cluster_identities

            groups = cluster_identities(self.embeddings, threshold=key)
            self._groups[key] = [group for group in groups if len(group) >= 2]
        return self._groups[key]

    def lookalike_scores(self, reference_ids: Iterable[int]) -> dict[int, float]:
        """Cosine similarity of every embedded image to the references' centroid; empty when
        no reference has an embedding."""
        from charstudio.analysis.similarity import lookalike_scores

        embedded = set(self.embeddings.ids)
        references = [i for i in reference_ids if i in embedded]
        if not references:
            return {}
        return lookalike_scores(self.embeddings, references)


# -- filters and order -------------------------------------------------------------------------


def filter_by_face(ids: Iterable[int], index: AnalysisIndex, face: str) -> list[int]:
    """The ids that pass a face filter (:data:`~charstudio.catalog.queries.FACE_FILTERS`).

    Images without an analysis pass only ``any``: nothing is known about their faces yet.
    """
    if face not in FACE_FILTERS:
        raise ValueError(f"unknown face filter {face!r}")
    if face == "any":
        return list(ids)
    flags = index.flags
    if face == "flagged":
        return [i for i in ids if flags.get(i)]
    if face == "unflagged":
        return [i for i in ids if i in flags and not flags[i]]
    return [i for i in ids if face in flags.get(i, ())]


def identity_labels(groups: Sequence[Sequence[int]]) -> list[str]:
    """Collection names for the library: "Identity 1 (34)", "Identity 2 (12)", …"""
    return [f"Identity {n} ({len(group)})" for n, group in enumerate(groups, start=1)]


def valid_identity(identity: int | None, groups: Sequence[Sequence[int]]) -> int | None:
    """``identity`` if that group exists, else None (groups change with the threshold and
    with every analysis, so a remembered number may point nowhere)."""
    return identity if identity is not None and 1 <= identity <= len(groups) else None


def filter_by_identity(
    ids: Iterable[int], groups: Sequence[Sequence[int]], identity: int | None
) -> list[int]:
    """The ids in identity group ``identity`` (1-based), in the given order; all of them when
    ``identity`` is None, none when the group does not exist."""
    if identity is None:
        return list(ids)
    if not 1 <= identity <= len(groups):
        return []
    members = set(groups[identity - 1])
    return [i for i in ids if i in members]


def lookalike_references(
    index: AnalysisIndex, picks: Iterable[int], selection: Iterable[int] = ()
) -> list[int]:
    """What "looks like" means: the picks that have a face embedding, else the selected
    images that have one, else nothing."""
    embedded = set(index.embeddings.ids)
    chosen = [i for i in picks if i in embedded]
    return chosen or [i for i in selection if i in embedded]


def lookalike_order(
    ids: Sequence[int], scores: Mapping[int, float], *, descending: bool = False
) -> list[int]:
    """``ids`` most alike first (``descending``: least alike first, handy for the "does not
    look like the character" pass); ids without a score keep their order, at the end."""
    scored = [i for i in ids if i in scores]
    # sorted() is stable: equal scores keep the query's order.
    scored.sort(key=lambda i: scores[i], reverse=not descending)
    return scored + [i for i in ids if i not in scores]


# -- stacks ------------------------------------------------------------------------------------


def _best_key(
    image_id: int, decisions: Mapping[int, Decision], sharpness: Mapping[int, float | None]
) -> tuple[int, int, bool, float]:
    decision = decisions.get(image_id) or Decision()
    sharp = sharpness.get(image_id)
    return (_FLAG_RANK.get(decision.flag, 1), decision.stars, sharp is not None, sharp or 0.0)


def stack_best(
    stack: Sequence[int],
    decisions: Mapping[int, Decision],
    sharpness: Mapping[int, float | None],
) -> int:
    """The image a stack shows and keeps: picks before unflagged before rejects (the artist's
    own word first), then the most stars, then the sharpest main face; on a tie the first."""
    if not stack:
        raise ValueError("an empty stack has no best image")
    best = stack[0]
    best_key = _best_key(best, decisions, sharpness)
    for image_id in stack[1:]:
        key = _best_key(image_id, decisions, sharpness)
        if key > best_key:
            best, best_key = image_id, key
    return best


@dataclass(frozen=True)
class StackCell:
    """Where a grid cell sits in its duplicate stack."""

    key: int  # names the stack: its smallest image id (stable while the stack is)
    size: int  # members that pass the filter: what expanding shows
    position: int  # 1 for the stack's top (its best member), 2… for the others
    expanded: bool

    @property
    def is_top(self) -> bool:
        return self.position == 1


def collapse_stacks(
    ids: Sequence[int],
    stacks: Iterable[Sequence[int]],
    best: Callable[[Sequence[int]], int],
    expanded: Collection[int] = (),
) -> tuple[list[int], dict[int, StackCell]]:
    """Show each stack as its best visible member, at that member's place in ``ids``; an
    expanded stack (its key in ``expanded``) shows its other visible members right after it.

    A stack with one visible member is shown as a plain image. ``best`` gets the visible
    members in the stack's own order (so ties do not depend on the sort).
    """
    visible = set(ids)
    tops: dict[int, int] = {}
    members_of: dict[int, list[int]] = {}
    key_of: dict[int, int] = {}
    for stack in stacks:
        members = [m for m in stack if m in visible]
        if len(members) < 2:
            continue
        key = min(stack)
        tops[key] = best(members)
        members_of[key] = members
        for member in members:
            key_of[member] = key
    out: list[int] = []
    cells: dict[int, StackCell] = {}
    order = {image_id: n for n, image_id in enumerate(ids)}
    for image_id in ids:
        key = key_of.get(image_id)
        if key is None:
            out.append(image_id)
            continue
        if image_id != tops[key]:
            continue  # shown with its top, or hidden
        members = members_of[key]
        is_open = key in expanded
        out.append(image_id)
        cells[image_id] = StackCell(key, len(members), 1, is_open)
        if is_open:
            rest = sorted((m for m in members if m != image_id), key=order.__getitem__)
            for position, member in enumerate(rest, start=2):
                out.append(member)
                cells[member] = StackCell(key, len(members), position, True)
    return out, cells


@dataclass(frozen=True)
class GridArrangement:
    """The grid's rows and how each sits in a stack."""

    ids: list[int]
    cells: dict[int, StackCell] = field(default_factory=dict)

    def top_of(self, image_id: int) -> int | None:
        """The top of the stack ``image_id`` is shown in, if any."""
        cell = self.cells.get(image_id)
        if cell is None:
            return None
        return next(i for i, c in self.cells.items() if c.key == cell.key and c.is_top)

    def toggle(self, image_id: int, expanded: Collection[int]) -> tuple[set[int], int | None]:
        """Expand or collapse the stack of ``image_id``: the new set of expanded stack keys
        and the image to focus (the top, so collapsing never loses the focus)."""
        cell = self.cells.get(image_id)
        keys = set(expanded)
        if cell is None:
            return keys, None
        keys.symmetric_difference_update({cell.key})
        return keys, self.top_of(image_id)


def arrange(
    ids: Sequence[int],
    index: AnalysisIndex,
    decisions: Mapping[int, Decision],
    *,
    face: str = "any",
    identity: int | None = None,
    identity_distance: float = DEFAULT_IDENTITY_DISTANCE,
    lookalike_refs: Sequence[int] | None = None,
    descending: bool = False,
    collapse: bool = True,
    expanded: Collection[int] = (),
) -> GridArrangement:
    """The grid's final rows from the query's ids: face filter, identity group, look-alike
    order (when ``lookalike_refs`` is given and one of them has an embedding) and stacks."""
    rows = filter_by_face(ids, index, face)
    if identity is not None:
        rows = filter_by_identity(rows, index.identity_groups(identity_distance), identity)
    if lookalike_refs is not None:
        scores = index.lookalike_scores(lookalike_refs)
        if scores:
            rows = lookalike_order(rows, scores, descending=descending)
    if not collapse or not index.stacks:
        return GridArrangement(rows)
    shown, cells = collapse_stacks(
        rows,
        index.stacks,
        lambda members: stack_best(members, decisions, index.sharpness),
        expanded,
    )
    return GridArrangement(shown, cells)


# -- bulk actions ------------------------------------------------------------------------------


def _undecided(decisions: Mapping[int, Decision], image_id: int) -> bool:
    return (decisions.get(image_id) or Decision()).flag == "none"


def reject_flagged_ids(index: AnalysisIndex, decisions: Mapping[int, Decision]) -> list[int]:
    """What Photo > Reject Flagged as Off-prompt touches: every image with a culling flag that
    is neither picked nor rejected yet (the artist's own decisions are never overruled)."""
    return [i for i, flags in index.flags.items() if flags and _undecided(decisions, i)]


def keep_best_rejects(index: AnalysisIndex, decisions: Mapping[int, Decision]) -> list[int]:
    """What Photo > Keep the Best of Each Stack rejects: in every stack, the undecided images
    other than the stack's best (:func:`stack_best`); picks and rejects stay as they are."""
    rejects: list[int] = []
    for stack in index.stacks:
        keep = stack_best(stack, decisions, index.sharpness)
        rejects += [i for i in stack if i != keep and _undecided(decisions, i)]
    return rejects


# -- what the cells and panels say -------------------------------------------------------------


def badge_texts(flags: Iterable[str], faces: int = 0) -> list[str]:
    """Short labels for a cell's flags, in :data:`ALL_FLAGS` order: "2 faces", "cut off"…"""
    texts = []
    for flag in flags:
        if flag == SEVERAL_FACES:
            texts.append(f"{faces} faces" if faces > 1 else "faces")
        else:
            texts.append(BADGE_TEXT.get(flag, flag))
    return texts


def lookalike_status(index: AnalysisIndex, recognizer_available: bool) -> str:
    """Why the look-alike tools are off ("" when they work)."""
    if index.has_embeddings:
        return ""
    if not recognizer_available:
        return (
            "Look-alike sorting and identity groups need the face recognition weights "
            "(107 MiB, downloaded once)."
        )
    return "No face embeddings yet: Photo > Analyze Faces computes them."


def face_summary(
    index: AnalysisIndex,
    image_id: int,
    *,
    lookalike: float | None = None,
    lookalike_note: str = "",
) -> list[tuple[str, str]]:
    """(label, value) lines for the info panel about one image's faces."""
    if image_id not in index:
        return [("Faces", "not analyzed yet")]
    faces = index.faces.get(image_id, 0)
    flags = index.flags.get(image_id, ())
    rows = [
        ("Faces", str(faces) if faces else "none"),
        ("Flags", ", ".join(FACE_FILTER_LABELS.get(f, f) for f in flags) or "none"),
    ]
    sharpness = index.sharpness.get(image_id)
    if sharpness is not None:
        rows.append(("Sharpness", f"{sharpness:.0f}"))
    if lookalike is not None:
        rows.append(("Look-alike", f"{lookalike:.2f}"))
    elif lookalike_note:
        rows.append(("Look-alike", lookalike_note))
    stack = index.stack_of(image_id)
    if stack is not None:
        rows.append(("Stack", f"{len(stack)} near-duplicates"))
    return rows


def progress_text(done: int, total: int | None, eta_s: float | None) -> str:
    """The status bar's line while faces are analyzed."""
    return f"Analyzing faces {done}/{total if total is not None else '?'} · ETA {format_eta(eta_s)}"


# -- the recognizer's weights ------------------------------------------------------------------


def install_weights_file(
    source: Path,
    dest: Path | None = None,
    *,
    progress: Callable[[int, int | None], None] | None = None,
    cancel: CancelToken | None = None,
) -> Path:
    """Copy a weights file the artist already has into place, if and only if it is the
    published file (checked on the way, see :func:`charstudio.analysis.weights.save_verified`).
    """
    from charstudio.analysis import weights

    source = Path(source)
    target = Path(dest) if dest is not None else weights.weights_path()
    with source.open("rb") as handle:
        return weights.save_verified(
            handle,
            target,
            expected_sha256=weights.EXPECTED_SHA256,
            total=source.stat().st_size,
            progress=progress,
            cancel=cancel,
            origin=str(source),
        )


def describe_weights_error(error: BaseException) -> str:
    """A sentence for the artist about a failed download or copy of the weights."""
    from charstudio.analysis.weights import WEIGHTS_ENV_VAR, WeightsChecksumError

    if isinstance(error, JobCanceled):
        return "Canceled; nothing was installed."
    if isinstance(error, WeightsChecksumError):
        return (
            f"Checksum mismatch: {error}. This is not the published VGGFace2 weights file. "
            f"To use a different file anyway, set {WEIGHTS_ENV_VAR} to its path."
        )
    import urllib.error

    if isinstance(error, urllib.error.HTTPError):
        return f"The download failed: the server answered {error.code} {error.reason}."
    if isinstance(error, urllib.error.URLError):
        return (
            f"The download failed: {error.reason}. Check the internet connection, or get the "
            f"file elsewhere and use Choose a file…"
        )
    if isinstance(error, TimeoutError):
        return "The download failed: the server did not answer in time. Try again later."
    if isinstance(error, OSError):
        reason = error.strerror or str(error)
        where = f" ({error.filename})" if error.filename else ""
        return f"Could not read or write the file{where}: {reason}."
    return f"Failed: {error}"
