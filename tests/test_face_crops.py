"""Face-aware training crops: square around the face, eyes level, at the training size; images
with no face or several faces flagged. On scikit-image's astronaut, turned and composed."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from charstudio.analysis.detection import FaceDetector
from charstudio.training.face_crops import (
    NO_FACE,
    SEVERAL_FACES,
    eye_angle,
    face_crops,
    problems_report,
    save_face_crops,
)

pytest.importorskip("facenet_pytorch")
skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(device="cpu")


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(skimage_data.astronaut())


def test_a_tilted_face_comes_out_upright_centred_and_sized(detector, astronaut) -> None:
    upright = detector.detect(astronaut)[0]
    tilted = astronaut.rotate(25, resample=Image.Resampling.BICUBIC, fillcolor=(128, 128, 128))
    assert abs(eye_angle(detector.detect(tilted)[0]) - eye_angle(upright)) > 15
    crop = face_crops([tilted], size=256, detector=detector)[0]
    assert crop.problem is None and crop.image is not None and crop.image.size == (256, 256)
    assert crop.angle == pytest.approx(eye_angle(upright) - 25, abs=4)
    again = detector.detect(crop.image)
    assert len(again) == 1
    assert abs(eye_angle(again[0])) < 4  # the eyes now lie level
    x1, y1, x2, y2 = again[0].box
    assert abs((x1 + x2) / 2 - 128) < 16 and abs((y1 + y2) / 2 - 128) < 20  # centred
    # The margin leaves room round the face: it fills about 1 / (1 + 2 * 0.6) of the side.
    assert 0.3 < (y2 - y1) / 256 < 0.65


def test_no_face_and_several_faces_are_flagged(detector, astronaut, tmp_path: Path) -> None:
    pair = Image.new("RGB", (1024, 512))
    pair.paste(astronaut, (0, 0))
    pair.paste(astronaut, (512, 0))
    blank = Image.new("RGB", (256, 256), (90, 120, 90))
    files = []
    for name, image in (("one", astronaut), ("pair", pair), ("blank", blank)):
        image.save(tmp_path / f"{name}.png")
        files.append(tmp_path / f"{name}.png")
    crops = face_crops(files, size=64, detector=detector)
    assert [(c.faces, c.problem) for c in crops] == [
        (1, None), (2, SEVERAL_FACES), (0, NO_FACE)
    ]  # fmt: skip
    # Her face is near the top: the square moved down inside the picture instead of being
    # filled out above her hair.
    assert not crops[0].padded and crops[0].center is not None
    assert crops[0].center[1] - crops[0].side / 2 >= 0
    report = problems_report(crops)
    assert len(report) == 2
    assert report[0] == "pair.png: 2 faces; the largest was cropped"
    assert report[1] == "blank.png: no face found; it would be trained on as it is"
    written = save_face_crops(crops, tmp_path / "crops")
    assert [p.name for p in written] == ["one.png", "pair.png"]
    assert Image.open(written[0]).size == (64, 64)
    assert crops[1].to_json()["problem"] == SEVERAL_FACES


def test_bad_settings_and_files_are_refused(detector, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 8"):
        face_crops([], size=4, detector=detector)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"broken\.png: cannot be read"):
        face_crops([broken], detector=detector)
