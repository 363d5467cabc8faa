"""The ``analyze`` job: face analysis of many image files, incremental and cancellable.

The caller passes ``(image_id, path, sha256)`` for the images whose cached analysis is missing
or stale (:func:`is_stale`); results come back keyed by sha256, ready to be cached. Files are
decoded on a small thread pool (Pillow releases the GIL while decoding) while the job's thread
runs detection and embedding a batch at a time, so the CPU cores stay busy with torch. The
cancel token is checked between batches; a canceled job returns the batches it finished.

An unreadable file becomes an error entry naming the file (and a line in
``AnalysisReport.failed``), never an exception.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charstudio.analysis.pipeline import EMBED_MIN_CONFIDENCE, analyze_batch
from charstudio.analysis.results import ANALYSIS_VERSION, FaceAnalysis
from charstudio.jobs.protocol import CancelToken, Job, ProgressClock

if TYPE_CHECKING:
    from PIL import Image

    from charstudio.analysis.detection import FaceDetector
    from charstudio.analysis.recognition import Recognizer

__all__ = ["AnalysisItem", "AnalysisReport", "analyze_images", "is_stale", "load_rgb"]

AnalysisItem = tuple[int, "Path | str", str]  # (image_id, path, sha256)


@dataclass
class AnalysisReport:
    results: dict[str, FaceAnalysis] = field(default_factory=dict)  # by sha256
    failed: list[dict[str, Any]] = field(default_factory=list)
    canceled: bool = False
    # Why there are no embeddings, or a warning about the recognizer's weights.
    recognizer_message: str = ""

    def add(self, analysis: FaceAnalysis, item: _Loaded) -> None:
        self.results[analysis.sha256] = analysis
        if analysis.error is not None:
            entry = {"image_id": item.image_id, "path": str(item.path), "error": analysis.error}
            self.failed.append(entry)

    def to_json(self) -> dict[str, Any]:
        return {
            "analyzed": sum(1 for r in self.results.values() if r.ok),
            "failed": self.failed,
            "canceled": self.canceled,
            "recognizer_message": self.recognizer_message,
        }


def is_stale(cached: FaceAnalysis | None, embedding_model: str | None = None) -> bool:
    """Whether an image needs analyzing again: no usable cached result, an older analysis
    version, or (when ``embedding_model`` names the recognizer now in use) a face whose
    embedding is missing or came from other weights."""
    if cached is None or not cached.ok or cached.version != ANALYSIS_VERSION:
        return True
    if embedding_model is None:
        return False
    has_face = any(face.probability >= EMBED_MIN_CONFIDENCE for face in cached.faces)
    return has_face and cached.embedding_model != embedding_model


def load_rgb(path: Path | str) -> Image.Image:
    """Decode an image file fully, upright (EXIF orientation applied) and in RGB."""
    from PIL import Image, ImageOps

    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened)
        image = image.convert("RGB") if image.mode != "RGB" else image.copy()
    image.load()
    return image


@dataclass
class _Loaded:
    image_id: int
    path: Path
    sha256: str
    image: Image.Image | None = None
    error: str | None = None


def _load(image_id: int, path: Path, sha256: str) -> _Loaded:
    try:
        return _Loaded(image_id, path, sha256, image=load_rgb(path))
    except Exception as exc:  # any decoder failure is the file's problem, reported per file
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return _Loaded(image_id, path, sha256, error=f"cannot read {path}: {reason or exc}")


def _unique(items: Iterable[AnalysisItem]) -> list[tuple[int, Path, str]]:
    """Items with distinct sha256 (the same content at two paths is analyzed once)."""
    seen: set[str] = set()
    unique = []
    for image_id, path, sha256 in items:
        if sha256 not in seen:
            seen.add(sha256)
            unique.append((image_id, Path(path), sha256))
    return unique


def _batches(
    pool: ThreadPoolExecutor, items: list[tuple[int, Path, str]], batch_size: int
) -> Iterator[list[Future[_Loaded]]]:
    """Futures of decoded images, a batch at a time, decoding up to two batches ahead."""
    pending: deque[Future[_Loaded]] = deque()
    queue = iter(items)

    def top_up() -> None:
        while len(pending) < 2 * batch_size:
            item = next(queue, None)
            if item is None:
                return
            pending.append(pool.submit(_load, *item))

    top_up()
    while pending:
        batch = [pending.popleft() for _ in range(min(batch_size, len(pending)))]
        top_up()
        yield batch


def _analyze_safely(
    decoded: list[_Loaded],
    detector: FaceDetector,
    recognizer: Recognizer | None,
    with_phash: bool,
) -> list[FaceAnalysis]:
    """Analyze a batch; should the batch fail as a whole, retry image by image so that one
    odd image becomes one error entry instead of ending the job."""
    kwargs: dict[str, Any] = {
        "detector": detector,
        "recognizer": recognizer,
        "with_phash": with_phash,
    }
    pairs = [(item.sha256, item.image) for item in decoded if item.image is not None]
    if not pairs:
        return []
    try:
        return analyze_batch(pairs, **kwargs)
    except Exception:
        pass  # find the culprit below
    results = []
    for pair, item in zip(pairs, decoded, strict=True):
        try:
            results.extend(analyze_batch([pair], **kwargs))
        except Exception as exc:
            results.append(FaceAnalysis(item.sha256, error=f"cannot analyze {item.path}: {exc}"))
    return results


def _usable(recognizer: Recognizer | None) -> tuple[Recognizer | None, str]:
    """The recognizer with its weights loaded, or ``None``; and the message for the report."""
    if recognizer is None:
        return None, "no face recognizer: images get no embeddings"
    if not recognizer.available():
        return None, recognizer.message
    try:
        recognizer.load()
    except Exception as exc:  # RecognizerUnavailable, or a broken torch install
        return None, recognizer.message or f"face recognizer failed to load: {exc}"
    return recognizer, recognizer.message


def analyze_images(
    items: Iterable[AnalysisItem],
    *,
    detector: FaceDetector,
    recognizer: Recognizer | None = None,
    cancel: CancelToken | None = None,
    with_phash: bool = True,
    batch_size: int | None = None,
    workers: int = 1,
) -> Job[AnalysisReport]:
    """Analyze image files; yields ``Progress`` (one event per batch), returns an
    :class:`AnalysisReport` whose ``results`` map each sha256 to its :class:`FaceAnalysis`.

    ``recognizer`` is optional; one without weights is skipped with its message in the
    report. ``batch_size`` defaults to the detector's. ``workers`` threads decode files.
    """
    unique = _unique(items)
    report = AnalysisReport()
    clock = ProgressClock(len(unique))
    yield clock(0, f"Analyzing {len(unique)} images")
    recognizer, report.recognizer_message = _usable(recognizer)

    done = 0
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="analyze") as pool:
        for futures in _batches(pool, unique, batch_size or detector.batch_size):
            if cancel is not None and cancel.canceled:
                report.canceled = True
                pool.shutdown(wait=True, cancel_futures=True)  # drop the read-ahead
                break
            loaded = [future.result() for future in futures]
            decoded = [item for item in loaded if item.image is not None]
            for item in loaded:
                if item.error is not None:
                    report.add(FaceAnalysis(item.sha256, error=item.error), item)
            analyses = _analyze_safely(decoded, detector, recognizer, with_phash)
            for analysis, item in zip(analyses, decoded, strict=True):
                report.add(analysis, item)
            done += len(loaded)
            faces = sum(len(a.confident_faces(EMBED_MIN_CONFIDENCE)) for a in analyses)
            # The batch's results travel with the event, so the caller can cache them at once
            # and a canceled or crashed job keeps what it finished.
            yield clock(done, loaded[-1].path.name, faces=faces, results=list(analyses))
    return report
