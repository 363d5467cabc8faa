"""Face detection and flags on a real photograph: scikit-image's astronaut and composites of it.

MTCNN's weights ship inside facenet-pytorch, so these run offline on the CPU.
"""

from __future__ import annotations

import dataclasses

import pytest
from PIL import Image, ImageFilter

from charstudio.analysis.detection import FaceDetector, detection_size
from charstudio.analysis.flags import (
    BLURRY_FACE,
    CUT_OFF,
    NO_FACE,
    SEVERAL_FACES,
    SMALL_FACE,
    face_flags,
)
from charstudio.analysis.pipeline import analyze_batch, analyze_image
from charstudio.analysis.results import FaceAnalysis

pytest.importorskip("facenet_pytorch")
skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(device="cpu")


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(skimage_data.astronaut())


@pytest.fixture(scope="module")
def astronaut_analysis(detector: FaceDetector, astronaut: Image.Image) -> FaceAnalysis:
    return analyze_image(astronaut, detector=detector, sha256="a" * 64)


def test_astronaut_has_one_clean_face(astronaut_analysis: FaceAnalysis) -> None:
    analysis = astronaut_analysis
    assert (analysis.width, analysis.height) == (512, 512)
    faces = analysis.confident_faces(0.9)
    assert len(faces) == 1
    face = faces[0]
    # Her face is right of centre in the upper half (eyes near x 200-250, y 100-110).
    x1, y1, x2, y2 = face.box
    assert 150 < x1 < x2 < 300 and 30 < y1 < y2 < 200
    assert face.probability > 0.99
    assert len(face.landmarks) == 5
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face.landmarks)
    assert face.area_ratio == pytest.approx((x2 - x1) * (y2 - y1) / 512**2, rel=1e-3)
    assert face.height_ratio == pytest.approx((y2 - y1) / 512, rel=1e-3)
    assert face.sharpness is not None and face.sharpness > 50
    assert face_flags(analysis) == ()
    assert analysis.phash is not None and len(analysis.phash) == 16
    assert analysis.embedding is None  # no recognizer given


def test_detection_on_a_downscaled_copy_matches_full_size(
    detector: FaceDetector, astronaut: Image.Image
) -> None:
    assert detection_size((512, 512), 320) == (320, 320)
    assert detection_size((1024, 512), 320) == (320, 160)
    assert detection_size((200, 100), 320) == (200, 100)  # never enlarged
    full = FaceDetector(device="cpu", detect_edge=None).detect(astronaut)
    small = detector.detect(astronaut)
    assert len(full) == len(small) == 1
    for a, b in zip(full[0].box, small[0].box, strict=True):
        assert abs(a - b) < 10  # pixels of the 512-px image


def test_two_astronauts_side_by_side_are_several_faces(
    detector: FaceDetector, astronaut: Image.Image
) -> None:
    pair = Image.new("RGB", (1024, 512))
    pair.paste(astronaut, (0, 0))
    pair.paste(astronaut, (512, 0))
    analysis = analyze_image(pair, detector=detector)
    assert analysis.face_count(0.9) == 2
    assert SEVERAL_FACES in face_flags(analysis)
    lefts = sorted(face.box[0] for face in analysis.faces)
    assert lefts[0] < 512 < lefts[1]


@pytest.mark.parametrize(
    "crop",
    [(0, 80, 512, 512), (0, 0, 250, 512)],
    ids=["top-through-the-forehead", "right-through-the-cheek"],
)
def test_a_crop_through_the_face_is_cut_off(
    detector: FaceDetector, astronaut: Image.Image, crop: tuple[int, int, int, int]
) -> None:
    analysis = analyze_image(astronaut.crop(crop), detector=detector)
    assert len(analysis.confident_faces(0.9)) == 1
    assert CUT_OFF in face_flags(analysis)


def test_a_blank_gray_image_has_no_face(detector: FaceDetector) -> None:
    analysis = analyze_image(Image.new("RGB", (512, 512), (128, 128, 128)), detector=detector)
    assert analysis.faces == ()
    assert face_flags(analysis) == (NO_FACE,)


def test_a_tiny_image_is_analyzed_without_error(detector: FaceDetector) -> None:
    analysis = analyze_image(Image.new("RGB", (8, 8), (30, 30, 30)), detector=detector)
    assert analysis.ok and analysis.faces == ()


def test_a_blurred_face_is_blurry(
    detector: FaceDetector, astronaut: Image.Image, astronaut_analysis: FaceAnalysis
) -> None:
    blurred = analyze_image(astronaut.filter(ImageFilter.GaussianBlur(3)), detector=detector)
    sharp_face = astronaut_analysis.main_face(0.9)
    blurred_face = blurred.main_face(0.9)
    assert sharp_face is not None and blurred_face is not None
    assert sharp_face.sharpness is not None and blurred_face.sharpness is not None
    assert blurred_face.sharpness < sharp_face.sharpness / 10
    assert BLURRY_FACE in face_flags(blurred)
    assert BLURRY_FACE not in face_flags(astronaut_analysis)


def test_a_face_in_a_large_canvas_is_small(detector: FaceDetector, astronaut: Image.Image) -> None:
    canvas = Image.new("RGB", (1536, 1536), (120, 120, 120))
    canvas.paste(astronaut, (512, 512))
    analysis = analyze_image(canvas, detector=FaceDetector(device="cpu", detect_edge=768))
    assert len(analysis.confident_faces(0.9)) == 1
    assert SMALL_FACE in face_flags(analysis)


def test_a_batch_of_mixed_sizes_gives_the_same_faces_as_one_by_one(
    detector: FaceDetector, astronaut: Image.Image
) -> None:
    gray = Image.new("RGB", (512, 512), (128, 128, 128))
    wide = astronaut.crop((0, 0, 512, 400))
    images = [("a", astronaut), ("b", gray), ("c", wide), ("d", astronaut)]
    batched = analyze_batch(images, detector=detector)
    assert [a.sha256 for a in batched] == ["a", "b", "c", "d"]
    assert [len(a.faces) > 0 for a in batched] == [True, False, True, True]
    alone = analyze_image(wide, detector=detector, sha256="c")
    assert batched[2].faces[0].box == pytest.approx(alone.faces[0].box, abs=0.5)
    assert batched[0] == dataclasses.replace(batched[3], sha256="a")
