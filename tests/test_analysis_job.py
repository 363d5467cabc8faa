"""The ``analyze`` job over files: progress, results by sha256, errors per file, cancel."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image

from charstudio.analysis.detection import FaceDetector
from charstudio.analysis.flags import NO_FACE, face_flags
from charstudio.analysis.job import AnalysisItem, analyze_images
from charstudio.analysis.recognition import Recognizer
from charstudio.jobs.protocol import CancelToken, Progress, run_job

pytest.importorskip("facenet_pytorch")
skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(device="cpu", batch_size=2)


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    return Recognizer.with_random_weights(seed=0, device="cpu")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("images")
    astronaut = Image.fromarray(skimage_data.astronaut())
    paths = {
        "face": folder / "00001-1234.png",
        "face-jpeg": folder / "00002-1235.jpg",
        "gray": folder / "00003-1236.png",
        "broken": folder / "00004-1237.png",
    }
    astronaut.save(paths["face"])
    astronaut.save(paths["face-jpeg"], quality=90)
    Image.new("RGB", (512, 512), (128, 128, 128)).save(paths["gray"])
    paths["broken"].write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)  # a PNG cut short
    return paths


def items_for(files: dict[str, Path], *names: str) -> list[AnalysisItem]:
    return [(n, files[name], sha256_of(files[name])) for n, name in enumerate(names, 1)]


def test_the_job_analyzes_files_and_keys_results_by_sha256(
    files: dict[str, Path], detector: FaceDetector, recognizer: Recognizer
) -> None:
    items = items_for(files, "face", "face-jpeg", "gray", "broken")
    events: list[Progress] = []
    report = run_job(analyze_images(items, detector=detector, recognizer=recognizer), events.append)
    assert not report.canceled and report.recognizer_message == ""
    assert set(report.results) == {sha for _, _, sha in items}
    face, jpeg, gray, broken = (report.results[sha] for _, _, sha in items)
    for result in (face, jpeg):
        assert result.ok and len(result.confident_faces(0.9)) == 1
        assert result.embedding is not None and len(result.embedding) == 512
        assert result.embedding_face == 0 and result.embedding_model == "random-init-0"
        assert result.phash is not None
    assert gray.ok and gray.embedding is None and face_flags(gray) == (NO_FACE,)
    assert face.sha256 == items[0][2]

    # An unreadable file is an error entry naming the file, not an exception.
    assert not broken.ok and str(files["broken"]) in (broken.error or "")
    assert report.failed == [{"image_id": 4, "path": str(files["broken"]), "error": broken.error}]
    assert report.to_json()["analyzed"] == 3

    # Progress: a start event, then one per batch of 2, up to the total.
    assert events[0].done == 0 and all(e.total == 4 for e in events)
    assert [e.done for e in events[1:]] == [2, 4]
    assert events[-1].fraction == 1.0


def test_missing_files_and_duplicate_content(
    files: dict[str, Path], detector: FaceDetector, tmp_path: Path
) -> None:
    face_sha = sha256_of(files["face"])
    items: list[AnalysisItem] = [
        (1, files["face"], face_sha),
        (2, tmp_path / "copy-of-face.png", face_sha),  # same content: analyzed once
        (3, tmp_path / "gone.png", "f" * 64),
    ]
    events: list[Progress] = []
    report = run_job(analyze_images(items, detector=detector), events.append)
    assert events[-1].total == 2
    assert report.results[face_sha].ok
    assert report.results[face_sha].embedding is None  # no recognizer given
    assert "no face recognizer" in report.recognizer_message
    gone = report.results["f" * 64]
    assert not gone.ok and "gone.png" in (gone.error or "")
    assert [entry["image_id"] for entry in report.failed] == [3]


def test_a_recognizer_without_weights_is_skipped_with_its_message(
    files: dict[str, Path], detector: FaceDetector, tmp_path: Path
) -> None:
    missing = Recognizer(tmp_path / "no-weights.pt")
    report = run_job(
        analyze_images(items_for(files, "face"), detector=detector, recognizer=missing)
    )
    (result,) = report.results.values()
    assert result.ok and result.faces and result.embedding is None
    assert "weights" in report.recognizer_message


def test_cancel_stops_between_batches_and_keeps_finished_work(
    files: dict[str, Path], detector: FaceDetector
) -> None:
    items = items_for(files, "face", "gray", "face-jpeg", "broken")
    cancel = CancelToken()
    job = analyze_images(items, detector=detector, cancel=cancel, batch_size=1)
    assert next(job).done == 0
    assert next(job).done == 1  # first batch done
    cancel.cancel()
    with pytest.raises(StopIteration) as stop:
        next(job)
    report = stop.value.value
    assert report.canceled
    assert list(report.results) == [items[0][2]]


def test_cancel_before_the_first_batch(files: dict[str, Path], detector: FaceDetector) -> None:
    cancel = CancelToken()
    cancel.cancel()
    report = run_job(
        analyze_images(items_for(files, "face", "gray"), detector=detector, cancel=cancel)
    )
    assert report.canceled and report.results == {}


def test_nothing_to_do(detector: FaceDetector) -> None:
    events: list[Progress] = []
    report = run_job(analyze_images([], detector=detector), events.append)
    assert report.results == {} and not report.canceled
    assert [(e.done, e.total) for e in events] == [(0, 0)]
