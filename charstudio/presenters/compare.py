"""The Compare panel's rules without widgets: its form ↔ the grid job's :class:`GridSpec`.

X = a run's saved steps (``NAME-20`` … ``NAME-140``), Y = a batch of seeds from one fixed seed,
optionally Z = other base checkpoints (at 512×768, as the workflow checks a step across
models). Here: the checks a grid passes before it is queued, the settings the panel remembers
in the project (read leniently), the runs and grids it lists, Refine's steps, and the words of
its progress and outcome.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charstudio.engine.sweeps import SAMPLER_NAMES, model_display_name
from charstudio.jobs.protocol import readable_job_error
from charstudio.jobs.queue import JobQueue
from charstudio.presenters.saved_settings import apply_saved
from charstudio.training import records
from charstudio.training.checkpoint_grid import GridSpec, parse_steps, refine_steps
from charstudio.training.grid_records import GridRecord, grid_for_job, grid_job_state

if TYPE_CHECKING:
    from charstudio.catalog import Project

__all__ = [
    "CROSS_MODEL_SIZE",
    "KIND",
    "SETTING_KEY",
    "GridForm",
    "RefinePlan",
    "RunChoice",
    "axes_text",
    "cancel_queued_grids",
    "describe_steps",
    "dropped_note",
    "finish_text",
    "finished_grid",
    "grid_line",
    "grid_spec",
    "grid_tooltip",
    "models_text",
    "queued_text",
    "refine_plan",
    "run_choices",
    "run_text",
    "settings_to_store",
    "status_title",
    "steps_preset",
    "steps_text",
    "stored_spec",
]

KIND = "grid"  # the grid job's kind in the queue
SETTING_KEY = "compare.grid"  # project setting: the panel's last settings (not run or steps)
CROSS_MODEL_SIZE = (512, 768)  # workflow step 4: "check it across several checkpoints at 512×768"
STORED = (
    "seed",
    "batch",
    "prompt",
    "negative_prompt",
    "sampler",
    "schedule_type",
    "sampling_steps",
    "cfg_scale",
    "width",
    "height",
)
# What the panel's fields take; a stored value outside them falls back to its default.
LIMITS: dict[str, tuple[float, float]] = {
    "seed": (0, 2**63 - 1),
    "batch": (1, 16),
    "sampling_steps": (1, 150),
    "cfg_scale": (1.0, 30.0),
    "width": (64, 2048),
    "height": (64, 2048),
}


@dataclass(frozen=True)
class RunChoice:
    """A training run as the panel offers it."""

    id: int
    name: str
    status: str
    steps: tuple[int, ...]  # the steps with a saved checkpoint
    model: str | None  # the base checkpoint it was trained on
    kind: str = "ti"  # "lora": each saved step ends an epoch; the grid labels epochs

    def label(self) -> str:
        unit = "epochs" if self.kind == "lora" else "steps"
        saved = f"{len(self.steps)} {unit} saved" if self.steps else f"no saved {unit}"
        prefix = "LoRA " if self.kind == "lora" else ""
        return f"{prefix}{self.name} · run {self.id} · {saved}"


@dataclass(frozen=True)
class GridForm:
    """The panel's fields as the artist left them (text fields as typed)."""

    run_id: int | None
    steps: str
    seed: str
    batch: int
    prompt: str
    negative_prompt: str
    sampler: str
    schedule_type: str | None  # None: the sampler's default ("Automatic")
    sampling_steps: int
    cfg_scale: float
    width: int
    height: int
    extra_models: tuple[str, ...] = ()  # checked Z checkpoints besides the run's own


def steps_text(steps: Sequence[int]) -> str:
    """Steps as the steps field takes them: ``20:140:20`` for an even range, else a list."""
    steps = sorted(steps)
    if len(steps) >= 3:
        every = steps[1] - steps[0]
        if every > 0 and all(b - a == every for a, b in itertools.pairwise(steps)):
            return f"{steps[0]}:{steps[-1]}:{every}"
    return ", ".join(str(s) for s in steps)


def describe_steps(steps: Sequence[int], limit: int = 10) -> str:
    """Short words for a run's saved steps: ``1–150`` when every step was saved."""
    if not steps:
        return "none"
    steps = sorted(steps)
    if steps == list(range(steps[0], steps[-1] + 1)) and len(steps) > 2:
        return f"{steps[0]}–{steps[-1]}"
    text = steps_text(steps)
    if ":" in text:
        first, last, every = text.split(":")
        return f"{first}–{last} every {every}"
    shown = ", ".join(str(s) for s in steps[:limit])
    return shown + (f" … {steps[-1]}" if len(steps) > limit else "")


def steps_preset(saved: Sequence[int], every: int = 20) -> list[int]:
    """The workflow's first grid: every ``every`` steps among the saved ones (NAME-20, NAME-40
    …); a run that saved fewer steps than that compares all it has. ``every`` 1: all."""
    if every <= 1:
        return sorted(saved)
    chosen = [s for s in sorted(saved) if s % every == 0]
    return chosen if len(chosen) >= 2 else sorted(saved)


def grid_spec(form: GridForm, runs: Sequence[RunChoice]) -> GridSpec:
    """The grid the form describes; ValueError saying what to fix."""
    run = next((r for r in runs if r.id == form.run_id), None)
    if run is None:
        raise ValueError("Choose a training run (train one in the Train panel first)")
    if not run.steps:
        raise ValueError(f"Run {run.id} ({run.name}) has no saved steps to compare yet")
    steps = parse_steps(form.steps.strip() or "-")
    missing = [s for s in steps if s not in run.steps]
    if missing:
        raise ValueError(
            f"No checkpoint for step {', '.join(map(str, missing[:8]))}"
            f"{' …' if len(missing) > 8 else ''}; {run.name} saved steps "
            f"{describe_steps(run.steps)}"
        )
    seed_text = form.seed.strip()
    if not seed_text:
        raise ValueError("Give a seed: the same seed in every column is what compares them")
    if not seed_text.isdigit():
        raise ValueError(f"The seed {seed_text!r} is not a whole number")
    prompt = form.prompt.strip()
    if "[name]" not in prompt:
        raise ValueError("The prompt needs [name]: it becomes each column's NAME-STEP")
    extra = [m for m in form.extra_models if m != run.model]
    models = (run.model or "", *extra) if extra else ()
    return GridSpec(
        run_id=run.id,
        steps=tuple(steps),
        seed=int(seed_text),
        batch=form.batch,
        prompt=prompt,
        negative_prompt=form.negative_prompt.strip(),
        sampler=form.sampler,
        schedule_type=form.schedule_type,
        sampling_steps=form.sampling_steps,
        cfg_scale=form.cfg_scale,
        width=form.width,
        height=form.height,
        models=tuple(models),
    )


def axes_text(spec: GridSpec) -> str:
    """``7 steps × 4 seeds = 28 images (seeds 12345678–12345681)``."""
    z = max(1, len(spec.models))
    cells = len(spec.steps) * spec.batch * z
    grids = f" × {z} models" if z > 1 else ""
    return (
        f"{len(spec.steps)} steps × {spec.batch} seeds{grids} = {cells} images "
        f"(seeds {spec.seed}–{spec.seed + spec.batch - 1})"
    )


# -- saved settings ------------------------------------------------------------------------------


def _fits(name: str, value: object) -> bool:
    if name == "sampler":
        return value in SAMPLER_NAMES
    low, high = LIMITS.get(name, (None, None))
    if low is None or high is None or not isinstance(value, int | float):
        return True
    return low <= value <= high


def stored_spec(stored: object) -> tuple[GridSpec, list[str]]:
    """The panel's saved values over the defaults, and the names of the values that were
    unreadable (each falls back to its default alone, so one bad value keeps the others)."""
    default = GridSpec(run_id=0, steps=())
    derived = frozenset(f for f in GridSpec.__dataclass_fields__ if f not in STORED)
    spec, dropped = apply_saved(default, stored, skip=derived, accept=_fits)
    if isinstance(spec.cfg_scale, int):  # JSON writes 7.0 as 7
        spec = dataclasses.replace(spec, cfg_scale=float(spec.cfg_scale))
    return spec, dropped


def settings_to_store(spec: GridSpec) -> dict[str, Any]:
    """What the panel remembers of a grid (not its run or steps, which belong to one run)."""
    values = spec.to_json()
    return {key: values[key] for key in STORED}


def dropped_note(dropped: Sequence[str]) -> str:
    if not dropped:
        return ""
    return f"Saved grid settings reset to their defaults (unreadable): {', '.join(dropped)}"


# -- what the panel lists ------------------------------------------------------------------------


def run_choices(project: Project) -> list[RunChoice]:
    """The project's embedding and LoRA runs, newest first, with the steps each saved (a LoRA
    run's averaged epochs, recorded with negative steps, are left to the command line)."""
    choices = []
    for run in reversed(records.list_runs(project.catalog, kind=None)):
        saved = records.run_checkpoints(project.catalog, run.id)
        steps = tuple(c.step for c in saved if c.step >= 0)
        model = run.params.get("model")
        choices.append(
            RunChoice(run.id, run.name, run.status, steps, model and str(model), run.kind)
        )
    return choices


def run_text(run: RunChoice | None) -> str:
    """The line under the run choice."""
    if run is None:
        return "Train an embedding or a LoRA first (the Train and LoRA panels)."
    model = model_display_name(run.model) if run.model else "unknown"
    epochs = " (each ends an epoch; columns read epoch N)" if run.kind == "lora" else ""
    return f"{run.status} · saved steps {describe_steps(run.steps)}{epochs} · trained on {model}"


def models_text(run: RunChoice | None, extra: int) -> str:
    """The Z axis's first model (always the run's own) and how many more are checked."""
    model = model_display_name(run.model) if run and run.model else "the run's model"
    return f"{model} (the run's own model)" + (f" + {extra} more" if extra else "")


def grid_line(grid: GridRecord) -> str:
    """An earlier grid in the list: its axes, then when it was made and the chosen step."""
    parts = [f"Grid {grid.id}"]
    spec = grid.spec
    if spec is not None:
        parts.append(f"steps {describe_steps(spec.steps, limit=6)}")
        parts.append(f"{spec.batch} seeds")
        if len(spec.models) > 1:
            parts.append(f"{len(spec.models)} models")
        total = len(spec.steps) * spec.batch * max(1, len(spec.models))
        if grid.cell_count < total:
            parts.append(f"{grid.cell_count}/{total} cells")
    second = [grid.created_at[:16].replace("T", " ")]
    if grid.chosen_step is not None:
        second.append(f"chosen step {grid.chosen_step}")
    return " · ".join(parts) + "\n" + " · ".join(second)


def grid_tooltip(grid: GridRecord) -> str:
    return f"Prompt: {grid.spec.prompt}\nMade {grid.created_at}" if grid.spec else ""


# -- the job -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefinePlan:
    """Refine's grid (None when the run saved fewer than two steps in the range), the steps
    in the range the run did not save, and why there is no grid."""

    spec: GridSpec | None
    skipped: tuple[int, ...] = ()
    problem: str = ""

    def note(self, start: int, end: int, job_id: int) -> str:
        if not self.skipped:
            return ""
        missing = ", ".join(map(str, self.skipped))
        return f"Refining {start}–{end} (job {job_id}); not saved by the run: {missing}"


def refine_plan(project: Project, spec: GridSpec, start: int, end: int) -> RefinePlan:
    """A grid of ``spec``'s settings every 5 steps from ``start`` to ``end`` (those saved)."""
    saved = {c.step for c in records.run_checkpoints(project.catalog, spec.run_id)}
    wanted = refine_steps(start, end)
    steps = [s for s in wanted if s in saved]
    if len(steps) < 2:
        problem = f"Refine: the run saved no steps between {start} and {end} beyond those shown"
        return RefinePlan(None, problem=problem)
    skipped = tuple(s for s in wanted if s not in saved)
    return RefinePlan(dataclasses.replace(spec, steps=tuple(steps)), skipped)


def cancel_queued_grids(project: Project) -> list[int]:
    """Take the grid jobs that have not started off the queue; their ids."""
    queue = JobQueue(project)
    return [j.id for j in queue.pending() if j.kind == KIND and queue.cancel_queued(j.id)]


def queued_text(job_id: int, spec: GridSpec) -> str:
    return f"Grid of {len(spec.steps)} steps × {spec.batch} seeds queued (job {job_id})"


def status_title(status: str, message: str = "") -> str:
    """The panel's last line when a job ends: ``Done: …``, ``Canceled.``, ``Failed: …``."""
    titles = {"done": "Done", "canceled": "Canceled", "failed": "Failed"}
    title = titles.get(status, status.capitalize())
    return f"{title}: {message}" if message else f"{title}."


def finished_grid(
    project: Project | None, job_id: int, live_grid: int | None
) -> tuple[dict[str, Any], int | None]:
    """A finished grid job's result and its grid (from the result, the grid the job recorded
    while it ran, or the catalog)."""
    if project is None:
        return {}, live_grid
    _status, result = grid_job_state(project.catalog, job_id)
    grid_id = result.get("grid_id") or live_grid
    if not isinstance(grid_id, int):
        grid_id = grid_for_job(project.catalog, job_id)
    return result, grid_id


def finish_text(status: str, error: str | None, result: Mapping[str, Any], grid_id: Any) -> str:
    """What a grid job came to: the error, what a canceled grid keeps, or the suggestion."""
    if status == "failed":
        return readable_job_error(error)
    cells = len(result.get("cells") or [])
    if status == "canceled":
        return f"grid {grid_id} canceled; its finished cells are kept" if grid_id else ""
    suggestion = result.get("suggestion") or {}
    if not isinstance(suggestion, Mapping):
        suggestion = {}
    if suggestion.get("step") is not None:
        return f"grid {grid_id} done ({cells} images): suggested step {suggestion['step']}"
    reason = str(suggestion.get("reason") or "")
    return f"grid {grid_id} done ({cells} images)" + (f"; {reason}" if reason else "")


# -- exporting ---------------------------------------------------------------------------------


def run_kind(project: Project, run_id: int) -> str:
    return records.get_run(project.catalog, run_id).kind


def lora_folders(embedding_folders: Sequence[str | Path]) -> list[Path]:
    """The export dialog's A1111/ComfyUI embedding folders, as the LoRA export wants them: the
    LoRA folder of the install they belong to (A1111's ``models/Lora``, ComfyUI's
    ``models/loras``). A folder that belongs to no install is used as it is."""
    from charstudio.training.lora_export import lora_folder

    out = []
    for folder in map(Path, embedding_folders):
        install = lora_folder(folder.parent) if folder.name.casefold() == "embeddings" else None
        out.append(install if install is not None and install != folder.parent else folder)
    return out
