"""Face identity embeddings: InceptionResnetV1 (FaceNet) with VGGFace2 weights from a file.

An embedding is the 512-d L2-normalized output of the network for a 160×160 crop of a face,
cut the way facenet-pytorch's MTCNN does it: the detection box widened by a margin, clipped to
the image and resized to a square (no rotation; the weights were trained on such crops). The
margin is 14 px of the 160-px crop, as in facenet-pytorch's LFW evaluation.

The weights are not bundled: without them :meth:`Recognizer.available` is ``False`` with a
message saying how to get them, and everything else in the analysis works. Tests build a
recognizer with random weights through :meth:`Recognizer.with_random_weights`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charstudio.analysis.weights import (
    EXPECTED_SIZE,
    WEIGHTS_ENV_VAR,
    check_weights,
    locate_weights,
    user_chosen_path,
)

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from charstudio.analysis.results import Box

__all__ = [
    "CROP_MARGIN",
    "CROP_SIZE",
    "EMBEDDING_SIZE",
    "Recognizer",
    "RecognizerUnavailable",
    "face_crop",
]

log = logging.getLogger(__name__)

CROP_SIZE = 160
CROP_MARGIN = 14  # pixels of the final crop, facenet-pytorch's convention
EMBEDDING_SIZE = 512
REFERENCE_MODEL_ID = "facenet-vggface2"


class RecognizerUnavailable(RuntimeError):
    """The recognizer has no usable weights; the message says why and what to do."""


def face_crop(
    image: Image.Image, box: Box, size: int = CROP_SIZE, margin: int = CROP_MARGIN
) -> Image.Image:
    """The ``size``×``size`` RGB crop of ``box`` plus margin that the recognizer expects."""
    from PIL import Image

    x1, y1, x2, y2 = box
    # The margin is given in output pixels, so convert it to image pixels per axis.
    mx = margin * (x2 - x1) / (size - margin) / 2
    my = margin * (y2 - y1) / (size - margin) / 2
    left, top = int(max(x1 - mx, 0)), int(max(y1 - my, 0))
    right, bottom = int(min(x2 + mx, image.width)), int(min(y2 + my, image.height))
    if right <= left or bottom <= top:
        raise ValueError(f"box {box} lies outside the {image.width}×{image.height} image")
    crop = image.crop((left, top, right, bottom))
    if crop.mode != "RGB":
        crop = crop.convert("RGB")
    return crop.resize((size, size), Image.Resampling.BILINEAR)


class Recognizer:
    """Face embeddings from InceptionResnetV1, built lazily on first use.

    ``weights``: a weights file the artist chose; by default the file in charstudio's cache
    (or the one named by ``$CHARSTUDIO_FACE_WEIGHTS``). See :mod:`charstudio.analysis.weights`
    for the checksum policy: a chosen file that differs from the reference loads with
    :attr:`warning` set; the cached download must match.
    """

    def __init__(
        self,
        weights: Path | str | None = None,
        *,
        device: str | None = None,
        batch_size: int = 16,
    ) -> None:
        if weights is not None:
            self.path: Path | None = Path(weights).expanduser()
            self._user_chosen = True
        else:
            self.path = locate_weights()
            self._user_chosen = user_chosen_path() is not None
        self._device = device
        self.batch_size = batch_size
        self._net: Any = None
        self._model_id: str | None = None
        self._error: str | None = None
        self.warning: str | None = None
        self._lock = threading.Lock()

    @classmethod
    def with_random_weights(cls, seed: int = 0, *, device: str | None = None) -> Recognizer:
        """Test hook: the same network with seeded random weights (no file, no download)."""
        import torch
        from facenet_pytorch import InceptionResnetV1

        recognizer = cls(device=device)
        recognizer.path = None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = InceptionResnetV1(pretrained=None, classify=False)
        recognizer._net = net.eval().to(recognizer.device)
        recognizer._model_id = f"random-init-{seed}"
        return recognizer

    @property
    def device(self) -> str:
        if self._device is None:
            from charstudio.analysis.detection import default_device

            self._device = default_device()
        return self._device

    @property
    def model_id(self) -> str | None:
        """Names the weights embeddings come from (stored with each embedding), once loaded:
        ``facenet-vggface2`` for the reference file."""
        return self._model_id

    def available(self) -> bool:
        """Whether embeddings can be made. Cheap (no torch import, no hashing): true when the
        weights are loaded, or a weights file exists and has not failed to load."""
        if self._net is not None:
            return True
        return self._error is None and self.path is not None and self.path.is_file()

    @property
    def message(self) -> str:
        """Why the recognizer is unavailable, or a warning about its weights; else ``""``."""
        if self._net is None and self._error is not None:
            return self._error
        if self._net is None and (self.path is None or not self.path.is_file()):
            return (
                f"Face recognition is off: its weights file ({EXPECTED_SIZE / 2**20:.0f} MiB) "
                f"is not at {self.path}. Download it, or set {WEIGHTS_ENV_VAR} to the path of "
                f"a copy you have."
            )
        return self.warning or ""

    def load(self) -> None:
        """Verify and load the weights; raises :class:`RecognizerUnavailable` (and remembers
        it, so :meth:`available` turns false) when they are missing or unusable."""
        with self._lock:
            if self._net is not None:
                return
            if not self.available():
                raise RecognizerUnavailable(self.message)
            try:
                self._net, self._model_id = self._build()
            except RecognizerUnavailable as exc:
                self._error = str(exc)
                raise

    def _build(self) -> tuple[Any, str]:
        assert self.path is not None
        check = check_weights(self.path)
        if check.verified:
            model_id = REFERENCE_MODEL_ID
        elif not self._user_chosen:
            raise RecognizerUnavailable(
                f"The face recognition weights at {self.path} are damaged or incomplete "
                f"(sha256 {check.sha256} is not the published file's). Delete the file and "
                f"download it again."
            )
        else:
            model_id = f"facenet-custom-{check.sha256[:12]}"
            self.warning = (
                f"{self.path} is not the published VGGFace2 weights file (sha256 "
                f"{check.sha256}); using it as you chose it. Look-alike scores and the identity "
                f"grouping threshold are calibrated for the published weights."
            )
            log.warning(self.warning)

        from facenet_pytorch import InceptionResnetV1

        from charstudio.engine.pt_files import (
            RefusedPickle,
            UnreadableTorchFile,
            load_weights_only,
        )

        try:
            state = load_weights_only(self.path)
        except (RefusedPickle, UnreadableTorchFile) as exc:
            raise RecognizerUnavailable(f"cannot read {self.path} as weights: {exc}") from exc
        net = InceptionResnetV1(pretrained=None, classify=False)
        _load_state(net, state, self.path)
        return net.eval().to(self.device), model_id

    def embed_crops(self, crops: Sequence[Image.Image]) -> np.ndarray:
        """Embeddings (float32, shape ``(len(crops), 512)``, unit rows) of 160×160 RGB crops
        made by :func:`face_crop`."""
        import numpy as np
        import torch

        self.load()
        if not crops:
            return np.zeros((0, EMBEDDING_SIZE), dtype=np.float32)
        out: list[np.ndarray] = []
        for start in range(0, len(crops), self.batch_size):
            chunk = crops[start : start + self.batch_size]
            batch = np.stack([np.asarray(c, dtype=np.float32) for c in chunk])
            # facenet-pytorch's fixed_image_standardization: (x - 127.5) / 128, NCHW.
            tensor = torch.from_numpy((batch - 127.5) / 128.0).permute(0, 3, 1, 2)
            with torch.inference_mode():
                vectors = self._net(tensor.to(self.device)).float().cpu().numpy()
            out.append(vectors)
        vectors = np.concatenate(out)
        # The network normalizes already; renormalize in float32 so rows are unit to rounding.
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)

    def embed_faces(self, image: Image.Image, boxes: Sequence[Box]) -> np.ndarray:
        """Embeddings of the faces at ``boxes`` in ``image``."""
        return self.embed_crops([face_crop(image, box) for box in boxes])


def _load_state(net: Any, state: Any, path: Path) -> None:
    """Load ``state`` into ``net`` requiring every parameter, by name and shape."""
    if not isinstance(state, Mapping):
        raise RecognizerUnavailable(f"{path} holds no state dict (found {type(state).__name__})")
    # The published file includes the VGGFace2 classifier head, unused for embeddings.
    state = {k: v for k, v in state.items() if not str(k).startswith("logits.")}
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        k
        for k in set(expected) & set(state)
        if getattr(state[k], "shape", None) != expected[k].shape
    )
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong))
            if keys
        )
        raise RecognizerUnavailable(f"{path} is not InceptionResnetV1 weights ({detail})")
    net.load_state_dict(state, strict=True)
