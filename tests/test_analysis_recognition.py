"""The face recognizer: random-weight network, weights location, checksum policy, saving.

Nothing is downloaded: the network gets random weights through the test hook, and the
checksum and atomic-save logic is exercised on local bytes.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from charstudio.analysis import weights
from charstudio.analysis.recognition import (
    CROP_SIZE,
    EMBEDDING_SIZE,
    Recognizer,
    RecognizerUnavailable,
    face_crop,
)
from charstudio.jobs.protocol import CancelToken, JobCanceled

pytest.importorskip("facenet_pytorch")
skimage_data = pytest.importorskip("skimage.data")

ASTRONAUT_FACE = (179.0, 66.0, 266.0, 175.0)


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(skimage_data.astronaut())


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    return Recognizer.with_random_weights(seed=0, device="cpu")


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty per-user cache (and torch home), no weights override."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(weights.WEIGHTS_ENV_VAR, raising=False)
    return tmp_path


def test_face_crop_is_square_rgb(astronaut: Image.Image) -> None:
    crop = face_crop(astronaut, ASTRONAUT_FACE)
    assert crop.size == (CROP_SIZE, CROP_SIZE) and crop.mode == "RGB"
    edge = face_crop(astronaut, (-40.0, -40.0, 60.0, 60.0))  # clipped to the image
    assert edge.size == (CROP_SIZE, CROP_SIZE)
    with pytest.raises(ValueError):
        face_crop(astronaut, (600.0, 600.0, 700.0, 700.0))


def test_random_recognizer_embeds_unit_512d_vectors(
    recognizer: Recognizer, astronaut: Image.Image
) -> None:
    assert recognizer.available() and recognizer.message == ""
    assert recognizer.model_id == "random-init-0"
    boxes = [ASTRONAUT_FACE, (300.0, 200.0, 420.0, 340.0)]
    vectors = recognizer.embed_faces(astronaut, boxes)
    assert vectors.shape == (2, EMBEDDING_SIZE) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert recognizer.embed_crops([]).shape == (0, EMBEDDING_SIZE)


def test_embeddings_are_deterministic(recognizer: Recognizer, astronaut: Image.Image) -> None:
    first = recognizer.embed_faces(astronaut, [ASTRONAUT_FACE])
    again = recognizer.embed_faces(astronaut, [ASTRONAUT_FACE])
    rebuilt = Recognizer.with_random_weights(seed=0, device="cpu")
    assert np.array_equal(first, again)
    assert np.allclose(first, rebuilt.embed_faces(astronaut, [ASTRONAUT_FACE]), atol=1e-6)


def test_batches_give_the_same_vectors_as_single_crops(
    recognizer: Recognizer, astronaut: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recognizer, "batch_size", 2)  # 3 crops: a batch of 2, then 1
    crops = [face_crop(astronaut, (x, 60.0, x + 100.0, 180.0)) for x in (100.0, 150.0, 200.0)]
    together = recognizer.embed_crops(crops)
    alone = np.vstack([recognizer.embed_crops([crop]) for crop in crops])
    assert np.allclose(together, alone, atol=1e-5)


def test_weights_path_is_in_the_user_cache_unless_overridden(
    cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = weights.weights_path()
    assert default == cache_home / "cache" / "charstudio" / "models" / weights.WEIGHTS_FILE_NAME
    assert weights.locate_weights() == default
    # A copy facenet-pytorch already downloaded is used when charstudio's own is missing.
    hub = weights.torch_hub_weights_path()
    hub.parent.mkdir(parents=True)
    hub.write_bytes(b"x")
    assert weights.locate_weights() == hub
    chosen = cache_home / "elsewhere" / "facenet.pt"
    monkeypatch.setenv(weights.WEIGHTS_ENV_VAR, str(chosen))
    assert weights.weights_path() == chosen == weights.locate_weights()
    assert weights.WEIGHTS_URL.endswith("/" + weights.WEIGHTS_FILE_NAME)
    assert len(weights.EXPECTED_SHA256) == 64


def test_without_weights_the_recognizer_is_unavailable(cache_home: Path) -> None:
    recognizer = Recognizer()
    assert not recognizer.available()
    assert "weights" in recognizer.message and str(weights.weights_path()) in recognizer.message
    assert weights.WEIGHTS_ENV_VAR in recognizer.message
    with pytest.raises(RecognizerUnavailable):
        recognizer.load()
    assert recognizer.model_id is None


def test_a_damaged_download_in_the_cache_is_refused(cache_home: Path) -> None:
    path = weights.default_weights_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half a file")
    recognizer = Recognizer()
    assert recognizer.available()  # cheap check: the file exists
    with pytest.raises(RecognizerUnavailable, match="damaged or incomplete"):
        recognizer.load()
    assert not recognizer.available()
    assert "download it again" in recognizer.message


def test_a_chosen_file_that_is_not_weights_is_refused(tmp_path: Path) -> None:
    import torch

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(RecognizerUnavailable, match="cannot read"):
        Recognizer(garbage).load()
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(3, 3)}, wrong)
    recognizer = Recognizer(wrong)
    with pytest.raises(RecognizerUnavailable, match="not InceptionResnetV1 weights"):
        recognizer.load()
    assert not recognizer.available()


@pytest.mark.slow  # writes, hashes and loads a full-size (112 MB) weights file
def test_a_chosen_unverified_weights_file_loads_with_a_warning(
    tmp_path: Path, astronaut: Image.Image, recognizer: Recognizer
) -> None:
    import torch

    # The published file carries the VGGFace2 classifier head too; it must be ignored.
    state = dict(recognizer._net.state_dict())
    state["logits.weight"] = torch.zeros(8631, 512)
    state["logits.bias"] = torch.zeros(8631)
    path = tmp_path / "my-facenet.pt"
    torch.save(state, path)
    chosen = Recognizer(path, device="cpu")
    assert chosen.available() and chosen.model_id is None
    chosen.load()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert chosen.model_id == f"facenet-custom-{digest[:12]}"
    assert chosen.warning is not None and "not the published" in chosen.message
    expected = recognizer.embed_faces(astronaut, [ASTRONAUT_FACE])
    assert np.allclose(chosen.embed_faces(astronaut, [ASTRONAUT_FACE]), expected, atol=1e-6)


def test_save_verified_renames_only_the_expected_bytes(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 20_000  # 5 MB: several chunks
    digest = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "models" / "w.pt"
    seen: list[tuple[int, int | None]] = []
    result = weights.save_verified(
        io.BytesIO(payload),
        dest,
        expected_sha256=digest,
        total=len(payload),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert result == dest and dest.read_bytes() == payload
    assert seen[-1] == (len(payload), len(payload)) and len(seen) > 1
    assert [p.name for p in dest.parent.iterdir()] == ["w.pt"]  # no temporary file left


def test_save_verified_discards_a_wrong_file(tmp_path: Path) -> None:
    dest = tmp_path / "w.pt"
    dest.write_bytes(b"previous good file")
    with pytest.raises(weights.WeightsChecksumError, match="discarded"):
        weights.save_verified(io.BytesIO(b"tampered"), dest, expected_sha256="0" * 64)
    assert dest.read_bytes() == b"previous good file"  # never replaced by a wrong file
    assert [p.name for p in tmp_path.iterdir()] == ["w.pt"]


def test_save_verified_honours_cancel(tmp_path: Path) -> None:
    cancel = CancelToken()
    payload = b"\0" * (3 << 20)

    def progress(done: int, total: int | None) -> None:
        cancel.cancel()  # the artist presses Cancel after the first chunk

    with pytest.raises(JobCanceled):
        weights.save_verified(
            io.BytesIO(payload),
            tmp_path / "w.pt",
            expected_sha256=hashlib.sha256(payload).hexdigest(),
            progress=progress,
            cancel=cancel,
        )
    assert list(tmp_path.iterdir()) == []
