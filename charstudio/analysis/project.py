"""A project's analysis: cached in the catalog's ``analyses`` table, redone only for changed files.

What the GUI and the command line ask for lives here, computed from the cache in milliseconds:
each image's culling flags (from the stored result and the current thresholds), duplicate
stacks (from the stored pHashes), look-alike rankings and identity clusters (from the stored
embeddings). The ``analyze`` job fills the cache for the images that need it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from charstudio.analysis.duplicates import DEFAULT_MAX_DISTANCE, duplicate_stacks
from charstudio.analysis.flags import DEFAULT_THRESHOLDS, FlagThresholds, face_flags
from charstudio.analysis.results import ANALYSIS_VERSION, FaceAnalysis
from charstudio.catalog.records import utc_now
from charstudio.jobs.protocol import CancelToken, Job

if TYPE_CHECKING:
    import numpy as np

    from charstudio.analysis.similarity import EmbeddingSet
    from charstudio.catalog.catalog import Catalog
    from charstudio.catalog.project import Project

__all__ = [
    "analyze_project",
    "duplicate_groups",
    "embedding_set",
    "image_flags",
    "load_analyses",
    "project_report",
    "rank_similar",
    "save_analyses",
    "stale_image_ids",
]


# -- the cache -------------------------------------------------------------------------------


def save_analyses(catalog: Catalog, analyses: Iterable[tuple[int, FaceAnalysis]]) -> int:
    """Store results (the embedding as float32 bytes, the rest as JSON) in one transaction.
    Failed analyses (unreadable files) are not cached: they describe the failure, not the image.
    """
    import numpy as np

    rows = []
    for image_id, analysis in analyses:
        if not analysis.ok:
            continue
        data = analysis.to_json()
        data["embedding"] = None
        vector = analysis.embedding_array()
        rows.append(
            (
                image_id,
                analysis.sha256,
                analysis.version,
                len(analysis.faces),
                json.dumps(data),
                None if vector is None else np.asarray(vector, np.float32).tobytes(),
                analysis.embedding_model,
                analysis.phash,
                utc_now(),
            )
        )
    with catalog.transaction() as conn:
        conn.executemany(
            "INSERT INTO analyses (image_id, sha256, version, faces, result, embedding, "
            "embedding_model, phash, analyzed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (image_id) DO UPDATE SET sha256 = excluded.sha256, "
            "version = excluded.version, faces = excluded.faces, result = excluded.result, "
            "embedding = excluded.embedding, embedding_model = excluded.embedding_model, "
            "phash = excluded.phash, analyzed_at = excluded.analyzed_at",
            rows,
        )
    return len(rows)


def load_analyses(
    catalog: Catalog, image_ids: Iterable[int] | None = None
) -> dict[int, FaceAnalysis]:
    """The current cached analyses (made from the image's present file), by image id."""
    import numpy as np

    query = (
        "SELECT a.image_id, a.result, a.embedding FROM analyses a "
        "JOIN images i ON i.id = a.image_id WHERE a.sha256 = i.sha256 AND a.version = ?"
    )
    wanted = None if image_ids is None else set(image_ids)
    with catalog.transaction() as conn:
        rows = conn.execute(query, (ANALYSIS_VERSION,)).fetchall()
    out: dict[int, FaceAnalysis] = {}
    for image_id, result, blob in rows:
        if wanted is not None and image_id not in wanted:
            continue
        data = json.loads(result)
        if blob is not None:
            data["embedding"] = np.frombuffer(blob, dtype=np.float32).tolist()
        out[image_id] = FaceAnalysis.from_json(data)
    return out


def stale_image_ids(catalog: Catalog, *, want_embeddings: bool) -> list[int]:
    """Images with no current analysis: never analyzed, the file changed since, made by an
    older analysis, or (when a recognizer is available now) analyzed without one."""
    from charstudio.analysis.pipeline import EMBED_MIN_CONFIDENCE

    query = (
        "SELECT i.id, a.image_id IS NULL OR a.sha256 != i.sha256 OR a.version != ?, a.result "
        "FROM images i LEFT JOIN analyses a ON a.image_id = i.id "
        "WHERE a.image_id IS NULL OR a.sha256 != i.sha256 OR a.version != ? "
        "OR (? AND a.faces > 0 AND a.embedding IS NULL) ORDER BY i.id"
    )
    with catalog.transaction() as conn:
        rows = conn.execute(query, (ANALYSIS_VERSION, ANALYSIS_VERSION, want_embeddings))
        rows = rows.fetchall()
    stale = []
    for image_id, outdated, result in rows:
        # Without an embedding only a face confident enough to embed makes it stale: faint
        # detections never get one, and must not be analyzed again and again.
        if outdated or FaceAnalysis.from_json(json.loads(result)).confident_faces(
            EMBED_MIN_CONFIDENCE
        ):
            stale.append(image_id)
    return stale


# -- the job -----------------------------------------------------------------------------------


def analyze_project(
    project: Project,
    *,
    cancel: CancelToken | None = None,
    recognizer: Any = "default",
    detector: Any = None,
    image_ids: Sequence[int] | None = None,
) -> Job[dict[str, Any]]:
    """Analyze the images that need it (or ``image_ids``), caching each batch's results.

    ``recognizer`` "default" uses the face recognizer when its weights are installed and
    skips embeddings otherwise (the report says why); None skips them.
    """
    from charstudio.analysis.detection import FaceDetector
    from charstudio.analysis.job import analyze_images
    from charstudio.analysis.recognition import Recognizer

    catalog = project.catalog
    if recognizer == "default":
        recognizer = Recognizer()
    usable = recognizer is not None and recognizer.available()
    ids = (
        list(image_ids)
        if image_ids is not None
        else stale_image_ids(catalog, want_embeddings=usable)
    )
    items, missing = [], []
    for image_id in ids:
        record = catalog.image(image_id)
        path = project.file_path(record.path)
        if path.is_file():
            items.append((image_id, path, record.sha256))
        else:
            missing.append({"image_id": image_id, "path": str(path), "error": "file not found"})
    ids_by_sha: dict[str, list[int]] = {}
    for image_id, _path, sha256 in items:
        ids_by_sha.setdefault(sha256, []).append(image_id)

    job = analyze_images(
        items, detector=detector or FaceDetector(), recognizer=recognizer, cancel=cancel
    )
    saved: set[str] = set()

    def save(analyses: Iterable[FaceAnalysis]) -> None:
        fresh = [a for a in analyses if a.sha256 not in saved]
        save_analyses(catalog, [(i, a) for a in fresh for i in ids_by_sha.get(a.sha256, [])])
        saved.update(a.sha256 for a in fresh)

    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            report = stop.value
            break
        save(event.detail.pop("results", ()))  # cached batch by batch: cancel keeps them
        yield event
    save(report.results.values())
    result = report.to_json()
    result["failed"] = [*missing, *result["failed"]]
    result["embeddings"] = usable
    return result


# -- questions answered from the cache ----------------------------------------------------------


def image_flags(
    catalog: Catalog, thresholds: FlagThresholds = DEFAULT_THRESHOLDS
) -> dict[int, list[str]]:
    """Culling flags of every analyzed image (an empty list: nothing to flag)."""
    return {
        image_id: list(face_flags(analysis, thresholds))
        for image_id, analysis in load_analyses(catalog).items()
    }


def duplicate_groups(
    catalog: Catalog, *, max_distance: int = DEFAULT_MAX_DISTANCE
) -> list[list[int]]:
    """Stacks of near-duplicate images (two or more each), largest first, by image id order."""
    hashes = {image_id: a.phash for image_id, a in sorted(load_analyses(catalog).items())}
    return duplicate_stacks(hashes, max_distance=max_distance)


def embedding_set(catalog: Catalog) -> EmbeddingSet[int]:
    from charstudio.analysis.similarity import EmbeddingSet

    vectors: dict[int, np.ndarray] = {}
    for image_id, analysis in sorted(load_analyses(catalog).items()):
        vector = analysis.embedding_array()
        if vector is not None:
            vectors[image_id] = vector
    return EmbeddingSet.from_mapping(vectors)


def rank_similar(catalog: Catalog, reference_ids: Sequence[int]) -> list[tuple[int, float]]:
    """Every image with a face embedding, most like the references' centroid first."""
    from charstudio.analysis.similarity import rank_by_similarity

    return rank_by_similarity(embedding_set(catalog), reference_ids)


@dataclass(frozen=True)
class ImageReport:
    id: int
    path: str
    faces: int
    flags: list[str]
    phash: str | None
    duplicate_group: int | None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def project_report(
    catalog: Catalog, thresholds: FlagThresholds = DEFAULT_THRESHOLDS
) -> list[ImageReport]:
    """Per analyzed image: faces above the confidence threshold, flags, pHash and the number
    (1-based, largest stack first) of its duplicate stack, if any."""
    analyses = load_analyses(catalog)
    group_of = {
        image_id: number
        for number, stack in enumerate(duplicate_groups(catalog), start=1)
        for image_id in stack
    }
    paths = {r.id: r.path for r in catalog.images()}
    return [
        ImageReport(
            id=image_id,
            path=paths[image_id],
            faces=len(analysis.confident_faces(thresholds.min_confidence)),
            flags=list(face_flags(analysis, thresholds)),
            phash=analysis.phash,
            duplicate_group=group_of.get(image_id),
        )
        for image_id, analysis in sorted(analyses.items())
    ]
