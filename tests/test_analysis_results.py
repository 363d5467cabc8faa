"""Stored results and the flags derived from them: JSON round trip, flags as a pure function."""

from __future__ import annotations

import dataclasses
import json

import pytest

from charstudio.analysis.flags import (
    ALL_FLAGS,
    BLURRY_FACE,
    CUT_OFF,
    NO_FACE,
    SEVERAL_FACES,
    SMALL_FACE,
    FlagThresholds,
    face_flags,
)
from charstudio.analysis.job import is_stale
from charstudio.analysis.results import ANALYSIS_VERSION, Face, FaceAnalysis


def face(
    box: tuple[float, float, float, float],
    probability: float = 0.999,
    sharpness: float | None = 120.0,
    size: tuple[int, int] = (512, 512),
    landmarks: tuple[tuple[float, float], ...] | None = None,
) -> Face:
    x1, y1, x2, y2 = box
    if landmarks is None:
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        landmarks = (
            (cx - w / 5, cy - h / 6),
            (cx + w / 5, cy - h / 6),
            (cx, cy),
            (cx - w / 6, cy + h / 5),
            (cx + w / 6, cy + h / 5),
        )
    return Face(
        box=box,
        probability=probability,
        landmarks=landmarks,
        area_ratio=(x2 - x1) * (y2 - y1) / (size[0] * size[1]),
        height_ratio=(y2 - y1) / size[1],
        sharpness=sharpness,
    )


def analysis(*faces: Face, size: tuple[int, int] = (512, 512)) -> FaceAnalysis:
    return FaceAnalysis("f" * 64, width=size[0], height=size[1], faces=tuple(faces))


CENTRED = face((156, 100, 356, 340))


def test_a_clean_portrait_has_no_flags() -> None:
    assert face_flags(analysis(CENTRED)) == ()


def test_no_confident_face_is_no_face() -> None:
    assert face_flags(analysis()) == (NO_FACE,)
    # A weak detection does not count as a face at the default confidence 0.90 …
    weak = analysis(face((156, 100, 356, 340), probability=0.8))
    assert face_flags(weak) == (NO_FACE,)
    # … but does when the artist lowers the threshold: same stored result, other flags.
    assert face_flags(weak, FlagThresholds(min_confidence=0.75)) == ()


def test_several_confident_faces() -> None:
    result = analysis(CENTRED, face((20, 30, 120, 150)))
    assert face_flags(result) == (SEVERAL_FACES,)
    assert face_flags(analysis(CENTRED, face((20, 30, 120, 150), probability=0.85))) == ()


@pytest.mark.parametrize(
    "box",
    [(-20, 100, 180, 340), (156, 100, 356, 512), (156, 2, 356, 240), (400, 100, 510, 300)],
    ids=["past-left", "touches-bottom", "within-margin-top", "within-margin-right"],
)
def test_a_box_at_the_border_is_cut_off(box: tuple[float, float, float, float]) -> None:
    assert CUT_OFF in face_flags(analysis(face(box)))


def test_a_landmark_outside_the_image_is_cut_off() -> None:
    points = ((200.0, 150.0), (300.0, 150.0), (250.0, 200.0), (220.0, 250.0), (280.0, 520.0))
    assert face_flags(analysis(face((156, 100, 356, 340), landmarks=points))) == (CUT_OFF,)


def test_the_border_margin_is_a_threshold() -> None:
    near = analysis(face((156, 10, 356, 250)))  # 10 px from the top: 2 % of 512
    assert CUT_OFF not in face_flags(near)
    assert CUT_OFF in face_flags(near, FlagThresholds(border_margin=0.03))


def test_small_and_blurry_faces() -> None:
    small = face((236, 236, 276, 286))  # 50 px of 512: under 15 %
    assert face_flags(analysis(small)) == (SMALL_FACE,)
    assert face_flags(analysis(small), FlagThresholds(min_face_height=0.05)) == ()
    soft = face((156, 100, 356, 340), sharpness=4.0)
    assert face_flags(analysis(soft)) == (BLURRY_FACE,)
    assert face_flags(analysis(soft), FlagThresholds(min_sharpness=3.0)) == ()
    unknown = face((156, 100, 356, 340), sharpness=None)
    assert face_flags(analysis(unknown)) == ()


def test_flags_judge_the_largest_confident_face() -> None:
    # A small blurry face beside a clean main face makes "several-faces" only.
    result = analysis(CENTRED, face((20, 30, 60, 80), sharpness=2.0))
    assert face_flags(result) == (SEVERAL_FACES,)


def test_flags_come_in_a_fixed_order_and_are_pure() -> None:
    result = analysis(face((-5, 300, 60, 360), sharpness=1.0), face((400, 400, 440, 450)))
    flags = face_flags(result)
    assert flags == (SEVERAL_FACES, CUT_OFF, SMALL_FACE, BLURRY_FACE)
    assert list(flags) == [f for f in ALL_FLAGS if f in flags]
    before = result.to_json()
    assert face_flags(result) == flags  # same input, same output
    assert result.to_json() == before  # and the result is untouched


def test_an_error_entry_has_no_flags() -> None:
    broken = FaceAnalysis("e" * 64, error="cannot read x.png: truncated")
    assert not broken.ok
    assert face_flags(broken) == ()


def test_face_analysis_json_round_trip() -> None:
    original = FaceAnalysis(
        sha256="ab" * 32,
        width=512,
        height=768,
        faces=(face((10.25, 20.5, 200.75, 260.0), size=(512, 768)), face((300, 40, 350, 100))),
        embedding=tuple(round(0.01 * i - 2.5, 6) for i in range(512)),
        embedding_face=0,
        embedding_model="facenet-vggface2",
        phash="8f373714acfcf4d0",
    )
    text = json.dumps(original.to_json())
    restored = FaceAnalysis.from_json(json.loads(text))
    assert restored == original
    assert restored.to_json() == original.to_json()
    assert restored.version == ANALYSIS_VERSION and restored.is_current()
    array = restored.embedding_array()
    assert array is not None and array.shape == (512,)

    bare = FaceAnalysis("cd" * 32, error="cannot read y.png")
    assert FaceAnalysis.from_json(json.loads(json.dumps(bare.to_json()))) == bare


def test_entries_without_a_version_are_stale() -> None:
    data = analysis(CENTRED).to_json()
    del data["version"]
    old = FaceAnalysis.from_json(data)
    assert not old.is_current()
    assert is_stale(old)


def test_is_stale() -> None:
    current = dataclasses.replace(
        analysis(CENTRED), embedding=(1.0,) * 512, embedding_model="facenet-vggface2"
    )
    assert not is_stale(current)
    assert not is_stale(current, "facenet-vggface2")
    assert is_stale(current, "facenet-custom-0123456789ab")  # other weights now
    no_embedding = analysis(CENTRED)
    assert not is_stale(no_embedding)
    assert is_stale(no_embedding, "facenet-vggface2")  # weights arrived since
    assert not is_stale(analysis(), "facenet-vggface2")  # no face: nothing to embed
    assert is_stale(None)
    assert is_stale(FaceAnalysis("0" * 64, error="cannot read"))
