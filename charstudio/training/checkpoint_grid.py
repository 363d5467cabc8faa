"""Compare a training run's checkpoints: the grid job (workflow steps 4 and 5).

X = checkpoint steps (``NAME-20``, ``NAME-40`` …), Y = seeds (a batch of 4 from one fixed seed),
optionally Z = base checkpoints. For a LoRA run X = its saved epochs (and averages of epochs,
:mod:`charstudio.training.lora_average`), labelled "epoch N"; the prompt's ``[name]`` becomes
the run's activation token and ``<lora:NAME-EEEEEE:W>`` is added, with the run folder searched
for LoRAs; Z may also hold LoRA weights (0.6/0.8/1.0), one Z slice per base checkpoint and
weight. The spec's ``steps`` are the checkpoints' steps either way (an average's is negative).

Every cell is made by the engine's one batch path
(:class:`~charstudio.engine.runner.ModelRunner`) with the step's embedding file from the run
folder, so a cell shows exactly what generating with ``NAME-STEP`` gives. Cells are files in
``grids/grid-NNNNN/`` recorded in ``grid_cells`` as they are made (the viewer shows them while
the job runs), kept out of the culling catalog. At the end each cell's face is scored against
the training images (:mod:`charstudio.analysis.identity`) when the face recognizer is
available, and the grid is saved as one PNG with A1111-style legends.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charstudio.catalog.records import utc_now
from charstudio.jobs.protocol import CancelToken, Job, JobCanceled, ProgressClock
from charstudio.training import records

if TYPE_CHECKING:
    from PIL import Image

    from charstudio.catalog.project import Project

__all__ = [
    "DEFAULT_GRID_PROMPT",
    "GridSpec",
    "checkpoint_grid_job",
    "lora_grid_steps",
    "parse_steps",
    "refine_steps",
]

DEFAULT_GRID_PROMPT = (
    "a medium closeup color portrait photo of [name] wearing a sweater on a greek island"
)
DEFAULT_GRID_SEED = 12345678
GRIDS_FOLDER = "grids"
_RANGE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*(?::\s*(\d+))?\s*$")


def parse_steps(text: str) -> list[int]:
    """``"20:140:20"`` (start:end:every, end included), ``"20:140"`` (every 20), or a list
    ``"20, 40, 55"``; ValueError with the reason otherwise."""
    match = _RANGE.match(text)
    if match:
        start, end, every = int(match[1]), int(match[2]), int(match[3] or 20)
        if every < 1 or end < start:
            raise ValueError(f"steps {text!r}: write START:END:EVERY with START ≤ END, EVERY ≥ 1")
        return list(range(start, end + 1, every))
    try:
        steps = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise ValueError(f"steps {text!r}: write 20:140:20 or 20,40,60") from None
    if not steps or any(s < 1 for s in steps):
        raise ValueError(f"steps {text!r}: give at least one step number ≥ 1")
    return sorted(set(steps))


def refine_steps(start: int, end: int, every: int = 5) -> list[int]:
    """The "refine" preset: every ``every`` steps inside the range the artist selected."""
    if end < start:
        start, end = end, start
    first = -(-start // every) * every  # the first multiple of ``every`` from ``start``
    return list(range(first, end + 1, every)) or [start]


@dataclass(frozen=True)
class GridSpec:
    """What to compare; defaults are the workflow's (DPM++ 2M Karras, 30 steps, no negative)."""

    run_id: int
    steps: tuple[int, ...]
    seed: int = DEFAULT_GRID_SEED
    batch: int = 4
    prompt: str = DEFAULT_GRID_PROMPT
    negative_prompt: str = ""
    sampler: str = "DPM++ 2M"
    schedule_type: str | None = "Karras"
    sampling_steps: int = 30
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    models: tuple[str, ...] = ()  # Z: base checkpoints (default: the run's model)
    weights: tuple[float, ...] = ()  # Z: LoRA weights (LoRA runs; default 1.0)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["steps"], data["models"] = list(self.steps), list(self.models)
        data["weights"] = list(self.weights)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GridSpec:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["steps"] = tuple(int(s) for s in known.get("steps", ()))
        known["models"] = tuple(str(m) for m in known.get("models", ()))
        known["weights"] = tuple(float(w) for w in known.get("weights", ()))
        return cls(**known)

    def z_slices(self, run_model: str) -> list[tuple[str, float | None]]:
        """(base checkpoint, LoRA weight or None) of each Z slice, in order."""
        models = list(self.models) or [run_model]
        weights: list[float | None] = list(self.weights) or [None]
        return [(model, weight) for model in models for weight in weights]


@dataclass
class GridCell:
    x: int
    y: int
    z: int
    step: int
    seed: int
    path: str  # "" for a failed cell
    score: float | None = None
    faces: int | None = None
    error: str | None = None  # why the cell failed (NaN); it has no file and no score

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass
class GridResult:
    grid_id: int
    grid_path: str | None = None
    cells: list[GridCell] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    suggestion: dict[str, Any] = field(default_factory=dict)
    canceled: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "grid_id": self.grid_id,
            "grid_path": self.grid_path,
            "cells": [asdict(c) for c in self.cells],
            "scores": self.scores,
            "suggestion": self.suggestion,
            "canceled": self.canceled,
        }


def _checkpoint_names(project: Project, run: records.RunRecord, steps: Sequence[int]) -> dict:
    if run.kind == "lora":
        return {c.step: c.stem for c in _lora_columns(project, run, steps)}
    available = {c.step: c for c in records.run_checkpoints(project.catalog, run.id)}
    missing = [s for s in steps if s not in available]
    if missing:
        have = ", ".join(str(s) for s in sorted(available)) or "none"
        raise ValueError(
            f"run {run.id} ({run.name}) has no checkpoint for step "
            f"{', '.join(map(str, missing))}; saved steps: {have}"
        )
    return {s: Path(available[s].path).stem for s in steps}


def _lora_columns(project: Project, run: records.RunRecord, steps: Sequence[int]) -> list:
    """The LoRA run's checkpoints for ``steps``, in that order; ValueError naming the epochs
    the run has when one is missing."""
    from charstudio.training.lora_average import lora_checkpoints

    available = {c.step: c for c in lora_checkpoints(project.catalog, run)}
    missing = [s for s in steps if s not in available]
    if missing:
        have = ", ".join(c.label.removeprefix("epoch ") for c in available.values() if c.epoch)
        raise ValueError(
            f"run {run.id} ({run.name}) has no saved epoch at step "
            f"{', '.join(map(str, missing))}; saved epochs: {have or 'none'}"
        )
    return [available[s] for s in steps]


def lora_grid_steps(
    project: Project, run_id: int, epochs: Sequence[int] | None = None, averaged: bool = False
) -> tuple[int, ...]:
    """The spec's ``steps`` for a LoRA run's ``epochs`` (default: every saved epoch), plus its
    averages when ``averaged``; ValueError naming the saved epochs when one is missing."""
    from charstudio.training.lora_average import lora_checkpoints

    run = records.get_run(project.catalog, run_id)
    saved = lora_checkpoints(project.catalog, run)
    by_epoch = {c.epoch: c.step for c in saved if c.epoch is not None}
    wanted = list(epochs) if epochs else sorted(by_epoch)  # type: ignore[arg-type]
    missing = [e for e in wanted if e not in by_epoch]
    if missing:
        have = ", ".join(str(e) for e in sorted(by_epoch)) or "none"  # type: ignore[arg-type]
        raise ValueError(
            f"run {run.id} ({run.name}) has no saved epoch {', '.join(map(str, missing))}; "
            f"saved epochs: {have}"
        )
    steps = [by_epoch[e] for e in wanted]
    if averaged:
        steps += [c.step for c in saved if c.epoch is None]
    if not steps:
        raise ValueError(f"run {run.id} ({run.name}) has no saved epochs yet")
    return tuple(steps)


def checkpoint_grid_job(
    project: Project,
    params: dict[str, Any],
    cancel: CancelToken | None = None,
    job_id: int = 0,
    *,
    runner: Any = None,
    scorer: Any = "default",
) -> Job[GridResult]:
    """Make the grid of ``GridSpec.from_json(params)``; yields progress with ``detail["cell"]``
    for every finished cell; returns a :class:`GridResult`."""
    from charstudio.engine.runner import ImagesFailed, ModelRunner
    from charstudio.engine.sweeps import GenerationSettings
    from charstudio.metadata.imagefile import write_png
    from charstudio.metadata.infotext import format_infotext

    spec = GridSpec.from_json(params)
    catalog = project.catalog
    run = records.get_run(catalog, spec.run_id)
    names = _checkpoint_names(project, run, spec.steps)
    lora = run.kind == "lora"
    if spec.weights and not lora:
        raise ValueError(f"run {run.id} ({run.name}) is not a LoRA run: it has no LoRA weights")
    slices = spec.z_slices(str(run.params.get("model") or ""))
    runner = runner or ModelRunner(project)
    if lora:
        runner.loras.folders.append(project.root / run.folder)  # <lora:NAME-EEEEEE> is there
    else:
        runner.embeddings.folders.append(project.root / run.folder)  # NAME-STEP resolves there

    with catalog.transaction() as conn:
        grid_id = conn.execute(
            "INSERT INTO grids (run_id, params, created_at, job_id) VALUES (?, ?, ?, ?)",
            (run.id, json.dumps(spec.to_json()), utc_now(), job_id or None),
        ).lastrowid
    folder = f"{GRIDS_FOLDER}/grid-{grid_id:05d}"
    (project.root / folder).mkdir(parents=True, exist_ok=True)
    result = GridResult(int(grid_id or 0))
    seeds = [spec.seed + i for i in range(spec.batch)]
    total = len(slices) * len(spec.steps) * spec.sampling_steps
    clock = ProgressClock(total)
    done = 0
    images: dict[tuple[int, int, int], Image.Image] = {}
    unit = "epochs" if lora else "steps"
    yield clock(0, f"Grid of {len(spec.steps)} {unit} × {spec.batch} seeds", grid_id=grid_id)
    for z, (model, weight) in enumerate(slices):
        for x, step in enumerate(spec.steps):
            settings = GenerationSettings(
                prompt=_cell_prompt(spec.prompt, run, names[step], weight),
                negative_prompt=spec.negative_prompt,
                seed=spec.seed,
                steps=spec.sampling_steps,
                sampler=spec.sampler,
                schedule_type=spec.schedule_type,
                cfg_scale=spec.cfg_scale,
                width=spec.width,
                height=spec.height,
                model=model,
                batch_size=spec.batch,
            )
            problems = runner.problems(settings)
            if problems:
                raise ValueError("; ".join(problems))
            batch = runner.batch(settings, seeds, cancel=cancel)
            reasons: dict[int, str] = {}
            while True:
                try:
                    event = next(batch)
                except StopIteration as stop:
                    outputs = stop.value
                    break
                except JobCanceled:
                    result.canceled = True
                    return result
                except ImagesFailed as failure:  # NaN: those cells fail, the others stay
                    outputs, reasons = failure.outputs, failure.reasons
                    break
                yield clock(done + event.step, f"{names[step]}: step {event.step}/{event.total}")
            done += spec.sampling_steps
            for y, (image, params_) in enumerate(outputs):
                if image is None:
                    cell = GridCell(x, y, z, step, seeds[y], "", error=reasons.get(y, "failed"))
                    message = f"{names[step]} seed {seeds[y]} failed: {cell.error}"
                else:
                    relative = f"{folder}/z{z}-{names[step]}-{seeds[y]}.png"
                    write_png(image, project.root / relative, format_infotext(params_))
                    cell = GridCell(x, y, z, step, seeds[y], relative)
                    images[(x, y, z)] = image
                    message = f"{names[step]} seed {seeds[y]}"
                _save_cell(catalog, grid_id, cell)
                result.cells.append(cell)
                yield clock(done, message, cell=asdict(cell))

    if result.cells and all(cell.failed for cell in result.cells):
        raise ValueError(f"every cell of the grid failed: {result.cells[0].error}")
    _score(project, run, result, scorer)
    for cell in result.cells:
        _save_cell(catalog, grid_id, cell)
    result.grid_path = _save_grid_image(project, run, folder, spec, names, slices, images, result)
    with catalog.transaction() as conn:
        conn.execute("UPDATE grids SET path = ? WHERE id = ?", (result.grid_path, grid_id))
    return result


def _cell_prompt(prompt: str, run: records.RunRecord, name: str, weight: float | None) -> str:
    """The cell's prompt: TI runs put the step's embedding name for ``[name]``; LoRA runs the
    activation token, and add the epoch's ``<lora:NAME-EEEEEE:W>``."""
    if run.kind != "lora":
        return prompt.replace("[name]", name)
    token = str(run.params.get("token") or run.name)
    text = prompt.replace("[name]", token)
    return f"{text} <lora:{name}:{1.0 if weight is None else weight:g}>"


def _save_cell(catalog: Any, grid_id: Any, cell: GridCell) -> None:
    with catalog.transaction() as conn:
        conn.execute(
            "INSERT INTO grid_cells (grid_id, x, y, z, step, seed, path, score, faces, error) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (grid_id, x, y, z) DO UPDATE SET "
            "score = excluded.score, faces = excluded.faces, error = excluded.error",
            (grid_id, cell.x, cell.y, cell.z, cell.step, cell.seed, cell.path or None,
             _finite(cell.score), cell.faces, cell.error),
        )  # fmt: skip


def _score(project: Project, run: records.RunRecord, result: GridResult, scorer: Any) -> None:
    """Faces and identity scores of the cells; scores need the recognizer and analyzed
    training images, faces only the detector."""
    from charstudio.analysis.identity import step_scores, suggest_step

    made = [cell for cell in result.cells if not cell.failed]  # failed cells are not scored
    if scorer is None or not made:
        return
    if scorer == "default":
        scorer = IdentityScorer.for_run(project, run.id)
    for cell in made:
        faces, score = scorer.score(project.root / cell.path)
        cell.faces, cell.score = faces, _finite(score)
    by_step: dict[int, list[float | None]] = {}
    for cell in made:
        by_step.setdefault(cell.step, []).append(cell.score)
    scores = step_scores(by_step)
    result.scores = [asdict(s) for s in scores]
    if run.kind == "lora":
        _suggest_epoch(project, run, result, scores, scorer)
        return
    if scorer.available:
        suggestion = suggest_step(scores)
    else:
        from charstudio.analysis.identity import Suggestion

        suggestion = Suggestion(None, scorer.message)
    result.suggestion = {"step": suggestion.step, "reason": suggestion.reason}


def _suggest_epoch(
    project: Project, run: records.RunRecord, result: GridResult, scores: list, scorer: Any
) -> None:
    """The LoRA rule is the TI one over epochs (the first epoch whose every image is the
    character: later ones risk over-baking); an average of epochs is named beside it when it
    passes with a higher mean. Scores carry ``epoch`` and ``label``."""
    import re

    from charstudio.analysis.identity import DEFAULT_IDENTITY_SIMILARITY, suggest_step
    from charstudio.training.lora_average import lora_checkpoints

    columns = {c.step: c for c in lora_checkpoints(project.catalog, run)}
    for entry in result.scores:
        column = columns.get(entry["step"])
        entry["epoch"] = column.epoch if column else None
        entry["label"] = column.label if column else f"step {entry['step']}"
    if not scorer.available:
        result.suggestion = {"step": None, "epoch": None, "reason": scorer.message}
        return
    # suggest_step works on numbers that order in time: give it the epochs.
    by_epoch = {
        columns[s.step].epoch: s for s in scores if s.step in columns and columns[s.step].epoch
    }
    picked = suggest_step([replace(s, step=e) for e, s in by_epoch.items()])
    reason = re.sub(r"\bsteps?\b", "epoch", picked.reason)
    step = by_epoch[picked.step].step if picked.step is not None else None
    best_epoch = by_epoch.get(picked.step) if picked.step is not None else None
    for score in scores:
        column = columns.get(score.step)
        if column is None or column.epoch is not None:
            continue
        if score.passes(DEFAULT_IDENTITY_SIMILARITY) and (
            best_epoch is None or (score.mean or 0) > (best_epoch.mean or 0)
        ):
            reason += f"; the {column.label} also passes, with a higher mean ({score.mean:.2f})"
    result.suggestion = {"step": step, "epoch": picked.step, "reason": reason}


def _finite(value: float | None) -> float | None:
    """A score that is a number, else None (NaN never reaches the catalog or JSON)."""
    import math

    return value if value is None or math.isfinite(value) else None


class IdentityScorer:
    """Scores generated faces against the centroid of a run's training images."""

    def __init__(self, detector: Any, recognizer: Any, reference: Any, message: str = "") -> None:
        self.detector = detector
        self.recognizer = recognizer
        self.reference = reference  # unit centroid vector, or None
        self.message = message

    @property
    def available(self) -> bool:
        return self.recognizer is not None and self.reference is not None

    @classmethod
    def for_run(cls, project: Project, run_id: int, recognizer: Any = "default") -> IdentityScorer:
        from charstudio.analysis.detection import FaceDetector
        from charstudio.analysis.project import analyze_project, load_analyses
        from charstudio.analysis.recognition import Recognizer
        from charstudio.analysis.similarity import centroid
        from charstudio.jobs.protocol import run_job

        detector = FaceDetector()
        recognizer = Recognizer() if recognizer == "default" else recognizer
        if recognizer is None or not recognizer.available():
            message = getattr(recognizer, "message", "") or "no face recognizer"
            return cls(detector, None, None, f"no identity scores: {message}")
        image_ids = records.run_image_ids(project.catalog, run_id)
        cached = load_analyses(project.catalog, image_ids)
        todo = [i for i in image_ids if i not in cached or cached[i].embedding is None]
        if todo:
            run_job(analyze_project(project, recognizer=recognizer, image_ids=todo))
            cached = load_analyses(project.catalog, image_ids)
        vectors = [a.embedding_array() for a in cached.values() if a.embedding is not None]
        if not vectors:
            return cls(detector, None, None, "no identity scores: no face in the training images")
        import numpy as np

        return cls(detector, recognizer, centroid(np.stack(vectors)))

    def score(self, path: Path) -> tuple[int, float | None]:
        """(faces found, similarity of the main face to the reference or None)."""
        from charstudio.analysis.flags import DEFAULT_THRESHOLDS
        from charstudio.analysis.job import load_rgb
        from charstudio.analysis.pipeline import analyze_image

        analysis = analyze_image(
            load_rgb(path), detector=self.detector, recognizer=self.recognizer, with_phash=False
        )
        faces = len(analysis.confident_faces(DEFAULT_THRESHOLDS.min_confidence))
        vector = analysis.embedding_array()
        if vector is None or self.reference is None:
            return faces, None
        return faces, float(vector @ self.reference)


def _save_grid_image(
    project: Project,
    run: records.RunRecord,
    folder: str,
    spec: GridSpec,
    names: dict[int, str],
    slices: list[tuple[str, float | None]],
    images: dict[tuple[int, int, int], Image.Image],
    result: GridResult,
) -> str:
    from charstudio.engine.grid_image import make_grid_image, make_zgrid
    from charstudio.engine.sweeps import model_display_name
    from charstudio.metadata.imagefile import write_png

    scores = {s["step"]: s for s in result.scores}

    failed = {c.step for c in result.cells if c.failed} - {
        c.step for c in result.cells if not c.failed
    }

    titles = dict(names)
    if run.kind == "lora":
        titles = {c.step: c.label for c in _lora_columns(project, run, spec.steps)}

    def label(step: int) -> str:
        score = scores.get(step, {})
        if step in failed:
            return f"{titles[step]} (failed: NaN)"
        if score.get("mean") is None:
            return titles[step]
        return f"{titles[step]} ({score['mean']:.2f} / min {score['minimum']:.2f})"

    def z_label(model: str, weight: float | None) -> str:
        shown = model_display_name(model)
        if weight is None:
            return shown
        return f"weight {weight:g}" if len({m for m, _ in slices}) == 1 else f"{shown}, {weight:g}"

    x_labels = [label(step) for step in spec.steps]
    y_labels = [f"Seed: {spec.seed + y}" for y in range(spec.batch)]
    grids = [
        make_grid_image(
            {(x, y): img for (x, y, zz), img in images.items() if zz == z}, x_labels, y_labels
        )
        for z in range(len(slices))
    ]
    grid = grids[0] if len(grids) == 1 else make_zgrid(grids, [z_label(m, w) for m, w in slices])
    relative = f"{folder}.png"
    write_png(grid, project.root / relative, None)
    return relative
