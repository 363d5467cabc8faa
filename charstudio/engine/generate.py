"""The generate job: a request's sweep plan → PNGs with A1111 infotext → catalog rows → grid.

Every image is written atomically under a name fixed by the job and its place in the plan
(``images/generated/job-00012/0007-123456789.png``) and recorded right after its batch is
decoded, tagged with the job id and its sweep coordinates, so the grid shows it while the job
runs. Cancel is checked between sampling steps: a canceled batch leaves nothing behind, the
batches before it stay. A job re-run after a crash plans the same images (the request keeps
its ``plan_seed``) and skips the ones already recorded. Sweeps save an A1111-style grid image
into ``grids/`` and the catalog's ``grids`` table.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from charstudio.atomic_files import remove_file
from charstudio.catalog.importer import image_record
from charstudio.catalog.records import utc_now
from charstudio.engine.requests import GenerateRequest
from charstudio.engine.runner import GenerationError, ImagesFailed, ModelRunner
from charstudio.engine.sweeps import ImageJob, SweepPlan
from charstudio.jobs.protocol import CancelToken, Job, JobCanceled, ProgressClock
from charstudio.metadata.imagefile import CHARSTUDIO_KEY, probe_image_bytes, write_png
from charstudio.metadata.infotext import format_infotext

if TYPE_CHECKING:
    from PIL import Image

    from charstudio.catalog.project import Project

__all__ = ["GenerateResult", "check_request", "generate_job", "output_path"]

PREVIEW_INTERVAL_S = 0.25  # a live preview at most four times a second
GRIDS_FOLDER = "grids"


@dataclass
class GenerateResult:
    job_id: int
    image_ids: list[int] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # catalog paths, in plan order
    grid_path: str | None = None
    skipped: int = 0  # images already made by an earlier run of the same job
    canceled: bool = False
    # Images that came out NaN: {"index", "seed", "error"}; nothing was written for them.
    failed: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. the VAE switched to fp32

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "image_ids": self.image_ids,
            "paths": self.paths,
            "grid_path": self.grid_path,
            "skipped": self.skipped,
            "canceled": self.canceled,
            "failed": self.failed,
            "notes": self.notes,
        }


def check_request(
    project: Project,
    request: GenerateRequest,
    *,
    runner: ModelRunner | None = None,
    read_files: bool = True,
) -> list[str]:
    """Everything that would stop the request, in words, before it is queued: axes that do not
    parse or apply (Prompt S/R text not in the prompt), checkpoints, VAE and LoRA files that do
    not exist, embedding files that cannot be used. The command line and the GUI share it;
    ``read_files=False`` (the GUI thread) skips opening LoRA and embedding files."""
    try:
        plan = request.plan()
    except ValueError as error:
        return [str(error)]
    runner = runner or ModelRunner(project)
    runner.base_model = request.settings.model
    problems: list[str] = []
    seen: set[Any] = set()
    for cell in plan.cells:
        s = cell.settings
        key = (s.model, s.vae, s.prompt, s.negative_prompt, s.sampler, s.schedule_type)
        if key in seen:
            continue
        seen.add(key)
        found = runner.problems(s, read_files=read_files)
        problems.extend(p for p in found if p not in problems)
    for axis in (plan.x, plan.y, plan.z):
        if axis is not None and axis.type == "Embedding":
            # In a prompt an unknown name is just words (as in A1111); an axis that names
            # embeddings means files, so a missing one is an error.
            for name in runner.embeddings.missing(str(v) for v in axis.values):
                problems.insert(0, f"Embedding axis: no usable embedding named {name!r}")
    return problems


def output_path(job_id: int, index: int, seed: int) -> str:
    """Catalog path of image ``index`` of a job: fixed, so a re-run finds what it made."""
    return f"images/generated/job-{job_id:05d}/{index:04d}-{seed}.png"


@dataclass
class _Batch:
    images: list[tuple[int, ImageJob]]  # (index in the plan, image)

    @property
    def cell_settings(self) -> Any:
        return self.images[0][1].cell.settings

    @property
    def seeds(self) -> list[int]:
        return [job.seed for _, job in self.images]

    @property
    def subseeds(self) -> list[int] | None:
        """The images' variation seeds; None without a variation strength."""
        subseeds = [job.subseed for _, job in self.images]
        return None if None in subseeds else subseeds  # type: ignore[return-value]


def plan_batches(plan: SweepPlan) -> list[_Batch]:
    """The plan cut into the batches the sampler runs, each image with its plan index."""
    batches: list[_Batch] = []
    index = 0
    for cell in plan.cells:
        for seeds, subseeds in zip(cell.batches(), cell.subseed_batches(), strict=True):
            batch = _Batch([])
            for position, (seed, subseed) in enumerate(zip(seeds, subseeds, strict=True)):
                job = ImageJob(cell, len(batches), position, seed, subseed)
                batch.images.append((index, job))
                index += 1
            batches.append(batch)
    return batches


def generate_job(
    project: Project,
    params: dict[str, Any],
    cancel: CancelToken | None = None,
    job_id: int = 0,
    *,
    runner: ModelRunner | None = None,
) -> Job[GenerateResult]:
    """Run a generation request (``GenerateRequest.to_params()``). Yields ``Progress`` whose
    ``done``/``total`` count sampling steps over the whole job, with ``detail``:
    ``images_done``, ``images_total``, ``it_per_s`` (steps per second of the current batch),
    ``preview`` (a small PIL image of the batch being sampled, now and then),
    ``new_image_ids`` (the images just recorded), ``failed`` (images that came out NaN, with
    the reason; nothing is written for them) and ``note`` (the VAE switched to fp32). A job
    whose every image failed raises :class:`GenerationError` with the reason."""
    cancel = cancel or CancelToken()
    request = GenerateRequest.from_params(params)
    runner = runner or ModelRunner(project)
    problems = check_request(project, request, runner=runner)
    if problems:
        raise GenerationError("; ".join(problems))
    plan = request.plan()
    batches = plan_batches(plan)
    catalog = project.catalog
    total_steps = sum(b.cell_settings.steps for b in batches)
    images_total = plan.image_count
    clock = ProgressClock(total_steps)
    result = GenerateResult(job_id)
    made: dict[int, tuple[int, Image.Image | None]] = {}  # plan index -> (image id, image)
    steps_done = images_done = 0
    wants_grid = request.has_axes and request.save_grid
    grid_scale = _grid_scale(plan)

    yield clock(0, f"Generating {images_total} images", images_done=0, images_total=images_total)
    for batch in batches:
        paths = [output_path(job_id, index, job.seed) for index, job in batch.images]
        existing = [catalog.image_by_path(p) for p in paths]
        if all(rec is not None and project.file_path(rec.path).is_file() for rec in existing):
            for (index, _), rec in zip(batch.images, existing, strict=True):
                assert rec is not None and rec.id is not None
                made[index] = (rec.id, None)
                result.image_ids.append(rec.id)
                result.paths.append(rec.path)
            result.skipped += len(batch.images)
            steps_done += batch.cell_settings.steps
            images_done += len(batch.images)
            continue

        settings = batch.cell_settings
        label = f"Image {images_done + 1}/{images_total}"
        yield clock(
            steps_done, f"{label}: loading", images_done=images_done, images_total=images_total
        )
        started = time.perf_counter()
        last_preview = 0.0
        run = runner.batch(settings, batch.seeds, cancel=cancel, subseeds=batch.subseeds)
        failed: list[dict[str, Any]] = []
        while True:
            try:
                event = next(run)
            except StopIteration as stop:
                outputs = stop.value
                break
            except JobCanceled:
                result.canceled = True
                return result
            except ImagesFailed as failure:  # keep the good images, write nothing for the rest
                outputs = failure.outputs
                failed = [
                    {"index": batch.images[i][0], "seed": batch.seeds[i], "error": reason}
                    for i, reason in sorted(failure.reasons.items())
                ]
                break
            now = time.perf_counter()
            detail: dict[str, Any] = {
                "images_done": images_done,
                "images_total": images_total,
                "it_per_s": event.step / max(now - started, 1e-9),
                "step": event.step,
                "steps": event.total,
            }
            if now - last_preview >= PREVIEW_INTERVAL_S or event.step == event.total:
                from charstudio.engine.sampling import preview_image

                detail["preview"] = preview_image(event.latents)
                last_preview = now
            yield clock(
                steps_done + event.step,
                f"{label} · step {event.step}/{event.total}",
                **detail,
            )
        new_ids = _record_batch(project, job_id, batch, paths, outputs, result, made)
        for index, _ in batch.images:  # keep only small copies, and only for a grid
            if index not in made:  # failed
                continue
            image_id, image = made[index]
            keep = image is not None and wants_grid
            made[index] = (image_id, _grid_copy(image, grid_scale) if keep else None)
        steps_done += settings.steps
        images_done += len(batch.images)
        result.failed.extend(failed)
        extra: dict[str, Any] = {}
        if failed:
            extra["failed"] = failed
        for note in runner.notes:
            if note not in result.notes:
                result.notes.append(note)
                extra["note"] = note
        message = f"{images_done}/{images_total} images"
        if result.failed:
            message += f" ({len(result.failed)} failed: {result.failed[0]['error']})"
        if "note" in extra:
            message += f" · {extra['note']}"
        yield clock(
            steps_done,
            message,
            images_done=images_done,
            images_total=images_total,
            new_image_ids=new_ids,
            **extra,
        )
        if cancel.canceled:
            result.canceled = True
            return result

    if result.failed and not result.image_ids:
        first = result.failed[0]["error"]
        raise GenerationError(first[:1].upper() + first[1:] + " (no image was saved)")
    if wants_grid and made:
        result.grid_path = _save_grid(project, job_id, plan, batches, made, request)
    return result


def _record_batch(
    project: Project,
    job_id: int,
    batch: _Batch,
    paths: Sequence[str],
    outputs: Sequence[tuple[Image.Image | None, Any]],
    result: GenerateResult,
    made: dict[int, tuple[int, Image.Image | None]],
) -> list[int]:
    catalog = project.catalog
    new_ids: list[int] = []
    for (index, job), path, (image, params) in zip(batch.images, paths, outputs, strict=True):
        if image is None:  # came out NaN: no file, no row
            continue
        existing = catalog.image_by_path(path)
        if existing is not None and existing.id is not None:  # kept from an interrupted run
            made[index] = (existing.id, image)
            result.image_ids.append(existing.id)
            result.paths.append(path)
            continue
        target = project.file_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        # The sweep coordinates travel with the file too, beside A1111's "parameters".
        sweep = {CHARSTUDIO_KEY: _json({"sweep": job.coordinates})} if job.coordinates else None
        write_png(image, target, format_infotext(params), sweep)
        data = target.read_bytes()
        sha256 = hashlib.sha256(data).hexdigest()
        twin = catalog.image_by_sha256(sha256)
        if twin is not None and twin.id is not None:
            # Pixel-identical to an image already catalogued (a sweep that repeats a value):
            # the catalog keeps one row per picture, so this cell shows the earlier one. A copy
            # that stays open elsewhere (antivirus scanning it) is left behind, uncatalogued.
            with contextlib.suppress(OSError):
                remove_file(target)
            made[index] = (twin.id, image)
            result.image_ids.append(twin.id)
            result.paths.append(twin.path)
            continue
        record = image_record(
            path,
            probe=probe_image_bytes(data),
            sha256=sha256,
            file_size=len(data),
            file_mtime=target.stat().st_mtime,
            job_id=job_id or None,
            sweep=job.coordinates,
        )
        image_id = catalog.add_image(record)
        made[index] = (image_id, image)
        result.image_ids.append(image_id)
        result.paths.append(path)
        new_ids.append(image_id)
    return new_ids


def _grid_scale(plan: SweepPlan) -> float:
    """How much each image shrinks in the saved grid: a cell tiles its images batch by batch
    (A1111 puts a batch grid in each plot cell) and is at most two images wide."""
    columns = plan.base.batch_size if plan.base.images_per_job > 1 else 1
    return min(1.0, 2 / columns)


def _grid_copy(image: Image.Image, scale: float) -> Image.Image:
    """The copy kept for the grid: small from the start, so a 288-image sweep stays light."""
    from PIL import Image

    if scale >= 1.0:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.convert("RGB").resize(size, Image.Resampling.LANCZOS)


def _cell_image(images: Sequence[Image.Image], columns: int) -> Image.Image:
    from PIL import Image

    if len(images) == 1:
        return images[0]
    width, height = images[0].size
    rows = math.ceil(len(images) / columns)
    sheet = Image.new("RGB", (columns * width, rows * height), (255, 255, 255))
    for i, image in enumerate(images):
        sheet.paste(image.convert("RGB"), ((i % columns) * width, (i // columns) * height))
    return sheet


def _save_grid(
    project: Project,
    job_id: int,
    plan: SweepPlan,
    batches: Sequence[_Batch],
    made: dict[int, tuple[int, Image.Image | None]],
    request: GenerateRequest,
) -> str:
    from PIL import Image

    from charstudio.engine.grid_image import make_grid_image, make_zgrid

    per_cell: dict[tuple[int, int, int], list[tuple[int, int, Image.Image]]] = {}
    for batch in batches:
        for index, job in batch.images:
            if index not in made:  # failed (NaN): the cell shows what did come out
                continue
            image_id, image = made[index]
            if image is None:  # made by an earlier run: read it back from its file
                record = project.catalog.image(image_id)
                with Image.open(project.file_path(record.path)) as opened:
                    image = _grid_copy(opened.convert("RGB"), _grid_scale(plan))
            cell = job.cell
            per_cell.setdefault((cell.x_index, cell.y_index, cell.z_index), []).append(
                (image_id, job.seed, image)
            )
    nx, ny, nz = plan.shape
    columns = plan.base.batch_size if plan.base.images_per_job > 1 else 1
    grids = []
    for z in range(nz):
        cells = {
            (x, y): _cell_image([img for _, _, img in per_cell[(x, y, z)]], columns)
            for x in range(nx)
            for y in range(ny)
            if (x, y, z) in per_cell
        }
        grids.append(make_grid_image(cells, plan.labels("X"), plan.labels("Y")))
    grid = grids[0] if nz == 1 else make_zgrid(grids, plan.labels("Z"))

    relative = f"{GRIDS_FOLDER}/job-{job_id:05d}-xyz.png"
    target = project.root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    first = batches[0].images[0][1]
    write_png(grid, target, format_infotext(first.params()))
    catalog = project.catalog
    with catalog.transaction() as conn:
        grid_id = conn.execute(
            "INSERT INTO grids (params, path, created_at, job_id) VALUES (?, ?, ?, ?)",
            (_json(request.to_params()), relative, utc_now(), job_id or None),
        ).lastrowid
        conn.executemany(
            "INSERT INTO grid_cells (grid_id, x, y, z, image_id, seed) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (grid_id, x, y, z, items[0][0], items[0][1])
                for (x, y, z), items in sorted(per_cell.items())
            ],
        )
    return relative


def _json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)
