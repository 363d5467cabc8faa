"""The library's view of the face analysis, without Qt: face filters, stacks collapsed to their
best image, identity collections, the look-alike order and the bulk actions' targets."""

from __future__ import annotations

import hashlib
import urllib.error
from pathlib import Path

import pytest

from charstudio.analysis import view
from charstudio.analysis.flags import ALL_FLAGS
from charstudio.analysis.results import Face, FaceAnalysis
from charstudio.analysis.view import AnalysisIndex, StackCell
from charstudio.catalog.queries import FACE_FILTERS, ImageFilter
from charstudio.catalog.records import Decision
from charstudio.jobs.protocol import CancelToken, JobCanceled

CENTERED = (156.0, 120.0, 356.0, 380.0)  # a 260-px face in the middle of a 512² image
PHASH = "0123456789abcdef"


def face(
    box: tuple[float, float, float, float] = CENTERED,
    *,
    probability: float = 0.999,
    sharpness: float | None = 120.0,
    size: int = 512,
) -> Face:
    x1, y1, x2, y2 = box
    return Face(
        box=box,
        probability=probability,
        landmarks=(),
        area_ratio=(x2 - x1) * (y2 - y1) / size**2,
        height_ratio=(y2 - y1) / size,
        sharpness=sharpness,
    )


def face_analysis(
    sha256: str,
    faces: tuple[Face, ...] = (),
    *,
    phash: str | None = None,
    embedding: tuple[float, ...] | None = None,
    size: int = 512,
) -> FaceAnalysis:
    """A synthetic cached analysis (no detector involved)."""
    return FaceAnalysis(
        sha256=sha256,
        width=size,
        height=size,
        faces=faces,
        embedding=embedding,
        embedding_face=0 if embedding is not None else None,
        embedding_model="test" if embedding is not None else None,
        phash=phash,
    )


def flip(phash: str, bits: int) -> str:
    """``phash`` with its lowest ``bits`` bits inverted (a near or far duplicate)."""
    return f"{int(phash, 16) ^ ((1 << bits) - 1):016x}"


def unit(*values: float) -> tuple[float, ...]:
    return tuple(values) + (0.0,) * (4 - len(values))


@pytest.fixture
def index() -> AnalysisIndex:
    """1–3 a stack (1 blurry, 2 sharp, 3 sharper), 4 no face, 5 two faces, 6 cut off and small,
    7 clean and unrelated; embeddings: 1–3 and 7 one identity, 5 and 6 another."""
    a = unit(1.0, 0.0)
    b = unit(0.0, 1.0)
    analyses = {
        1: face_analysis("1", (face(sharpness=5.0),), phash=PHASH, embedding=a),
        2: face_analysis("2", (face(sharpness=90.0),), phash=flip(PHASH, 2), embedding=a),
        3: face_analysis("3", (face(sharpness=150.0),), phash=flip(PHASH, 4), embedding=a),
        4: face_analysis("4", (), phash=flip(PHASH, 40)),
        5: face_analysis(
            "5",
            (face(), face((20.0, 20.0, 200.0, 260.0))),
            phash=flip(PHASH, 24),
            embedding=unit(0.1, 1.0),
        ),
        6: face_analysis("6", (face((0.0, 10.0, 50.0, 60.0)),), phash=flip(PHASH, 32), embedding=b),
        7: face_analysis("7", (face(),), phash=flip(PHASH, 16), embedding=unit(0.95, 0.05)),
    }
    return AnalysisIndex(analyses)


def test_face_filter_names_agree_with_the_flags() -> None:
    assert ("any", "flagged", *ALL_FLAGS, "unflagged") == FACE_FILTERS
    assert set(view.FACE_FILTER_LABELS) == set(FACE_FILTERS)


def test_the_index_holds_flags_faces_stacks_and_embeddings(index: AnalysisIndex) -> None:
    assert index.flags[1] == ("blurry-face",)
    assert index.flags[4] == ("no-face",)
    assert index.flags[5] == ("several-faces",)
    assert index.flags[6] == ("cut-off", "small-face")
    assert index.flags[7] == ()
    assert index.faces[5] == 2 and index.faces[4] == 0
    assert index.sharpness[3] == 150.0 and index.sharpness[4] is None
    assert index.stacks == [(1, 2, 3)]
    assert index.stack_of(2) == (1, 2, 3) and index.stack_of(7) is None
    assert index.has_embeddings and 8 not in index and len(index) == 7
    assert not AnalysisIndex.empty().has_embeddings


def test_face_filter(index: AnalysisIndex) -> None:
    ids = [7, 6, 5, 4, 3, 2, 1, 99]  # 99 was never analyzed
    assert view.filter_by_face(ids, index, "any") == ids
    assert view.filter_by_face(ids, index, "flagged") == [6, 5, 4, 1]
    assert view.filter_by_face(ids, index, "unflagged") == [7, 3, 2]
    assert view.filter_by_face(ids, index, "small-face") == [6]
    assert view.filter_by_face(ids, index, "no-face") == [4]
    with pytest.raises(ValueError):
        view.filter_by_face(ids, index, "smiling")


def test_badges_are_short_words() -> None:
    assert view.badge_texts(("several-faces", "cut-off"), faces=3) == ["3 faces", "cut off"]
    assert view.badge_texts(("no-face",)) == ["no face"]
    assert view.badge_texts(("small-face", "blurry-face")) == ["small", "blurry"]


def test_the_best_of_a_stack_is_picked_then_starred_then_sharpest() -> None:
    sharp = {1: 5.0, 2: 90.0, 3: 150.0}
    assert view.stack_best([1, 2, 3], {}, sharp) == 3
    assert view.stack_best([1, 2, 3], {1: Decision(stars=2)}, sharp) == 1
    assert view.stack_best([1, 2, 3], {2: Decision(flag="pick")}, sharp) == 2
    assert view.stack_best([1, 2, 3], {3: Decision(flag="reject")}, sharp) == 2
    assert view.stack_best([1, 2], {}, {}) == 1  # nothing to go by: the first


def test_stacks_collapse_to_the_best_and_expand_after_it() -> None:
    best = max  # the highest id stands for "best" here
    shown, cells = view.collapse_stacks([5, 1, 2, 3, 4], [(1, 2, 3)], best)
    assert shown == [5, 3, 4]
    assert cells == {3: StackCell(key=1, size=3, position=1, expanded=False)}
    shown, cells = view.collapse_stacks([3, 5, 1, 4, 2], [(1, 2, 3)], best, expanded={1})
    assert shown == [3, 1, 2, 5, 4]  # the others follow their top, in the given order
    assert [cells[i].position for i in (3, 1, 2)] == [1, 2, 3]
    assert all(c.expanded and c.size == 3 for c in cells.values())
    # A stack with one visible member is a plain image.
    assert view.collapse_stacks([1, 5], [(1, 2, 3)], best) == ([1, 5], {})


def test_toggling_a_stack_keeps_the_focus_on_its_top(index: AnalysisIndex) -> None:
    ids = [1, 2, 3, 4, 5, 6, 7]
    collapsed = view.arrange(ids, index, {})
    assert collapsed.ids == [3, 4, 5, 6, 7]
    assert collapsed.cells[3].size == 3 and not collapsed.cells[3].expanded
    expanded, focus = collapsed.toggle(3, set())
    assert expanded == {1} and focus == 3
    opened = view.arrange(ids, index, {}, expanded=expanded)
    assert opened.ids == [3, 1, 2, 4, 5, 6, 7]
    assert opened.top_of(2) == 3
    again, focus = opened.toggle(2, expanded)  # S on a member closes its stack
    assert again == set() and focus == 3
    assert opened.toggle(7, expanded) == ({1}, None)  # not in a stack: nothing changes
    assert view.arrange(ids, index, {}, collapse=False).ids == ids


def test_stacks_follow_the_filter(index: AnalysisIndex) -> None:
    # The blurry-face filter leaves one member: no stack to collapse.
    arranged = view.arrange([1, 2, 3, 7], index, {}, face="blurry-face")
    assert arranged.ids == [1] and arranged.cells == {}
    # Filtered to two members, the better visible one represents them.
    arranged = view.arrange([1, 2, 7], index, {})
    assert arranged.ids == [2, 7] and arranged.cells[2].size == 2


def test_lookalike_order_and_references(index: AnalysisIndex) -> None:
    picks = [6]  # the second identity
    refs = view.lookalike_references(index, picks, selection=[1])
    assert refs == [6]
    assert view.lookalike_references(index, [4], selection=[4, 1]) == [1]  # 4 has no face
    assert view.lookalike_references(index, [], selection=[4]) == []
    scores = index.lookalike_scores(refs)
    assert scores[6] == pytest.approx(1.0) and scores[1] == pytest.approx(0.0)
    order = view.lookalike_order([1, 4, 5, 6, 7], scores)
    assert order[:2] == [6, 5] and order[-1] == 4  # no embedding: last
    assert view.lookalike_order([1, 4, 5, 6], scores, descending=True)[-2:] == [6, 4]
    arranged = view.arrange([1, 2, 3, 4, 5, 6, 7], index, {}, lookalike_refs=refs, collapse=False)
    assert arranged.ids[:2] == [6, 5] and arranged.ids[-1] == 4
    # References without embeddings leave the order alone.
    assert view.arrange([7, 1], index, {}, lookalike_refs=[4]).ids == [7, 1]


def test_identity_groups_as_collections(index: AnalysisIndex) -> None:
    groups = index.identity_groups(0.3)
    assert groups == [[1, 2, 3, 7], [5, 6]]
    assert view.identity_labels(groups) == ["Identity 1 (4)", "Identity 2 (2)"]
    assert view.filter_by_identity([7, 6, 5, 4], groups, 2) == [6, 5]
    assert view.filter_by_identity([7, 6], groups, None) == [7, 6]
    assert view.filter_by_identity([7, 6], groups, 3) == []
    assert view.valid_identity(2, groups) == 2 and view.valid_identity(3, groups) is None
    # A tight threshold splits the groups; singletons are no collection.
    assert index.identity_groups(0.0001) == [[1, 2, 3]]
    arranged = view.arrange([1, 2, 3, 4, 5, 6, 7], index, {}, identity=2, identity_distance=0.3)
    assert arranged.ids == [5, 6]


def test_bulk_actions_spare_the_artists_decisions(index: AnalysisIndex) -> None:
    decisions = {5: Decision(flag="pick"), 4: Decision(flag="reject")}
    assert view.reject_flagged_ids(index, decisions) == [1, 6]
    assert view.keep_best_rejects(index, {}) == [1, 2]
    # A pick in the stack is what it keeps; a reject stays a reject.
    assert view.keep_best_rejects(index, {1: Decision(flag="pick")}) == [2, 3]
    assert view.keep_best_rejects(index, {1: Decision(flag="reject")}) == [2]


def test_face_summary_and_lookalike_status(index: AnalysisIndex) -> None:
    rows = dict(view.face_summary(index, 6, lookalike=0.8234))
    assert rows["Faces"] == "1" and rows["Flags"] == "cut off, small face"
    assert rows["Look-alike"] == "0.82"
    assert dict(view.face_summary(index, 2))["Stack"] == "3 near-duplicates"
    assert view.face_summary(index, 99) == [("Faces", "not analyzed yet")]
    note = dict(view.face_summary(index, 4, lookalike_note="no picks"))["Look-alike"]
    assert note == "no picks"
    assert view.lookalike_status(index, recognizer_available=False) == ""
    empty = AnalysisIndex.empty()
    assert "weights" in view.lookalike_status(empty, recognizer_available=False)
    assert "Analyze Faces" in view.lookalike_status(empty, recognizer_available=True)


def test_progress_text() -> None:
    assert view.progress_text(120, 288, 40) == "Analyzing faces 120/288 · ETA 00:40"
    assert view.progress_text(0, None, None) == "Analyzing faces 0/? · ETA --:--"


def test_image_filter_keeps_the_analysis_fields_and_reads_old_ones() -> None:
    stored = ImageFilter(face="flagged", identity=2, sort="look-alike", min_stars=1).to_json()
    assert ImageFilter.from_json(stored) == ImageFilter(
        face="flagged", identity=2, sort="look-alike", min_stars=1
    )
    old = {"view": "picked", "min_stars": 2, "sort": "seed"}  # saved before the analysis
    assert ImageFilter.from_json(old) == ImageFilter(view="picked", min_stars=2, sort="seed")
    broken = {"view": "picked", "face": "smiling", "identity": 0, "sort": "looks"}
    assert ImageFilter.from_json(broken) == ImageFilter(view="picked")
    with pytest.raises(ValueError):
        ImageFilter(face="smiling")
    # The SQL part ignores the analysis fields and orders a look-alike sort by time.
    query, _ = ImageFilter(sort="look-alike", descending=True, face="no-face").sql()
    assert query.endswith("ORDER BY i.added_at ASC, i.id ASC")


def test_a_local_weights_file_is_installed_only_if_it_is_the_published_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "weights.pt"
    source.write_bytes(b"not really weights" * 1000)
    dest = tmp_path / "cache" / "weights.pt"
    seen: list[int] = []
    with pytest.raises(Exception) as error:
        view.install_weights_file(source, dest, progress=lambda done, total: seen.append(done))
    assert "Checksum mismatch" in view.describe_weights_error(error.value)
    assert not dest.exists() and not list(dest.parent.iterdir())  # nothing half-installed

    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    monkeypatch.setattr("charstudio.analysis.weights.EXPECTED_SHA256", digest)
    assert view.install_weights_file(source, dest, progress=lambda d, t: seen.append(d)) == dest
    assert dest.read_bytes() == source.read_bytes() and seen[-1] == source.stat().st_size

    token = CancelToken()
    token.cancel()
    with pytest.raises(JobCanceled):
        view.install_weights_file(source, tmp_path / "other.pt", cancel=token)


def test_weights_errors_read_as_sentences() -> None:
    network = urllib.error.URLError("Name or service not known")
    assert "internet connection" in view.describe_weights_error(network)
    http = urllib.error.HTTPError("https://x", 404, "Not Found", {}, None)  # type: ignore[arg-type]
    assert "404" in view.describe_weights_error(http)
    assert "Canceled" in view.describe_weights_error(JobCanceled())
    disk = OSError(28, "No space left on device", "/cache/w.pt")
    assert "No space left" in view.describe_weights_error(disk)
