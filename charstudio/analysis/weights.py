"""The face recognizer's weights file: where it lives, how it is checked, how it is fetched.

The recognizer is facenet-pytorch's InceptionResnetV1 with the VGGFace2 weights that
facenet-pytorch publishes (``20180402-114759-vggface2.pt``, a port of David Sandberg's
FaceNet model, 107 MiB). facenet-pytorch downloads them itself on first use without any
integrity check; charstudio fetches them explicitly instead, at the artist's request, into its
own cache, and checks them:

* :data:`EXPECTED_SHA256` is the digest of the published file. It could not be computed here
  (no network); it is the value pinned independently by several public projects that download
  that exact URL, together with its size of 111,898,327 bytes.
* :func:`download_weights` accepts nothing else: a download whose digest differs is deleted,
  never renamed into place (a truncated or tampered file cannot be half-installed).
* A file the artist chose (a path passed in, or :data:`WEIGHTS_ENV_VAR`) whose digest differs
  is still usable: the recognizer loads it with a warning, because the check that matters for
  safety is elsewhere: weights are read with ``torch.load(weights_only=True)`` (no pickled
  code runs) and must fit the network's parameter names and shapes exactly. The digest then
  only says "not the reference weights", so scores may be calibrated differently. The file in
  charstudio's own cache, which only :func:`download_weights` writes, must match.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from charstudio.atomic_files import atomic_write
from charstudio.engine.model_hash import default_cache_dir, sha256_file
from charstudio.jobs.protocol import CancelToken, JobCanceled

__all__ = [
    "EXPECTED_SHA256",
    "EXPECTED_SIZE",
    "WEIGHTS_ENV_VAR",
    "WEIGHTS_FILE_NAME",
    "WEIGHTS_URL",
    "WeightsCheck",
    "WeightsChecksumError",
    "check_weights",
    "default_weights_path",
    "download_weights",
    "locate_weights",
    "save_verified",
    "torch_hub_weights_path",
    "weights_path",
]

WEIGHTS_FILE_NAME = "20180402-114759-vggface2.pt"
# As in facenet_pytorch/models/inception_resnet_v1.py (load_weights, "vggface2").
WEIGHTS_URL = (
    "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/" + WEIGHTS_FILE_NAME
)
EXPECTED_SHA256 = "281cebca8662831adb987a874bdcb36e73f5b1c6dc5ee5878f305e985625d99b"
EXPECTED_SIZE = 111_898_327
WEIGHTS_ENV_VAR = "CHARSTUDIO_FACE_WEIGHTS"

_CHUNK = 1 << 20


class WeightsChecksumError(ValueError):
    """A downloaded file is not the expected weights file."""


@dataclass(frozen=True)
class WeightsCheck:
    path: Path
    sha256: str

    @property
    def verified(self) -> bool:
        """The file is byte for byte the published VGGFace2 weights."""
        return self.sha256 == EXPECTED_SHA256


def default_weights_path() -> Path:
    """Where :func:`download_weights` puts the file: charstudio's per-user cache."""
    return default_cache_dir() / "models" / WEIGHTS_FILE_NAME


def torch_hub_weights_path() -> Path:
    """Where facenet-pytorch's own download would have put the same file (``$TORCH_HOME``)."""
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(xdg, "torch")
    return Path(torch_home).expanduser() / "checkpoints" / WEIGHTS_FILE_NAME


def user_chosen_path() -> Path | None:
    """The file named by :data:`WEIGHTS_ENV_VAR`, if that variable is set."""
    chosen = os.environ.get(WEIGHTS_ENV_VAR, "").strip()
    return Path(chosen).expanduser() if chosen else None


def weights_path() -> Path:
    """The weights file to use and to download to: the env override, else the user cache."""
    return user_chosen_path() or default_weights_path()


def locate_weights() -> Path:
    """The weights file to load: :func:`weights_path`, or, when that does not exist and no
    override is set, a copy facenet-pytorch already downloaded. Cheap; reads no file."""
    path = weights_path()
    if user_chosen_path() is None and not path.is_file():
        hub = torch_hub_weights_path()
        if hub.is_file():
            return hub
    return path


def check_weights(path: Path, progress: Callable[[int, int], None] | None = None) -> WeightsCheck:
    """The sha256 of ``path`` (about a third of a second for the 107 MiB file)."""
    return WeightsCheck(Path(path), sha256_file(Path(path), progress=progress))


def save_verified(
    source: BinaryIO,
    dest: Path,
    *,
    expected_sha256: str = EXPECTED_SHA256,
    total: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    cancel: CancelToken | None = None,
    origin: str = "the download",
) -> Path:
    """Copy ``source`` to ``dest`` if and only if its sha256 is ``expected_sha256``.

    The bytes go to a temporary file beside ``dest``, hashed on the way, and only a complete
    file with the expected digest is renamed onto ``dest`` (atomically), so ``dest`` is never
    a partial or wrong file. ``progress(done_bytes, total)`` follows every chunk; a set
    ``cancel`` stops between chunks with :class:`JobCanceled`. On any failure the temporary
    file is removed.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)

    def copy_checked(out: BinaryIO) -> None:
        digest = hashlib.sha256()
        done = 0
        while chunk := source.read(_CHUNK):
            if cancel is not None and cancel.canceled:
                raise JobCanceled()
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
        actual = digest.hexdigest()
        if actual != expected_sha256:
            raise WeightsChecksumError(
                f"{origin} has sha256 {actual}, not the expected {expected_sha256}; "
                f"it was discarded"
            )

    return atomic_write(dest, copy_checked)


def download_weights(
    dest: Path | None = None,
    *,
    url: str = WEIGHTS_URL,
    expected_sha256: str = EXPECTED_SHA256,
    progress: Callable[[int, int | None], None] | None = None,
    cancel: CancelToken | None = None,
    timeout_s: float = 60.0,
) -> Path:
    """Download the weights to ``dest`` (default :func:`weights_path`) and return it.

    Only a file with the expected digest ends up at ``dest`` (see :func:`save_verified`).
    ``progress(done_bytes, total_bytes)`` after every chunk (total ``None`` when the server
    does not say); a set ``cancel`` raises :class:`JobCanceled`. Raises
    :class:`WeightsChecksumError` for a wrong file and ``OSError`` (``urllib.error.URLError``
    included) for network and disk failures. Never called by the tests: it goes online.
    """
    import urllib.request

    dest = Path(dest) if dest is not None else weights_path()
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        length = response.headers.get("Content-Length")
        return save_verified(
            response,
            dest,
            expected_sha256=expected_sha256,
            total=int(length) if length and length.isdigit() else None,
            progress=progress,
            cancel=cancel,
            origin=f"the file downloaded from {url}",
        )
