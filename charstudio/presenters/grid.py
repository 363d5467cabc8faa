"""What the checkpoint grid viewer shows, without widgets (workflow step 4).

A grid is the catalog's record of one grid job: columns are the run's checkpoints (``NAME-40``
for an embedding run, "epoch 4" for a LoRA run) for each Z slice (base checkpoint, and LoRA
weight), rows the seeds of the batch. :class:`GridPresenter` holds what the
viewer draws: the cells by axis value, the column and row labels, the per-column identity
scores and the suggestion in words (the scores and the rule are the core's,
:mod:`charstudio.analysis.identity`), which step is chosen, the title, and the inputs of the
grid PNG (drawn by :mod:`charstudio.engine.grid_image`, as the job draws it).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charstudio.analysis.identity import StepScore, Suggestion, step_scores, suggest_step
from charstudio.atomic_files import copy_file_atomic
from charstudio.engine.sweeps import model_display_name
from charstudio.training import records
from charstudio.training.checkpoint_grid import GridSpec
from charstudio.training.grid_records import (
    GridRecord,
    grid_job_state,
    read_cells,
    read_grid,
    set_chosen_step,
)

if TYPE_CHECKING:
    from PIL import Image

    from charstudio.catalog import Project

__all__ = [
    "GridCellView",
    "GridPresenter",
    "GridShape",
    "LoupeEntry",
    "cell_from",
    "compact_label",
]


@dataclass
class GridCellView:
    """One cell as the viewer holds it. ``state``: "pending" (not made yet), "loading",
    "shown", "missing" (the file could not be read) or "failed" (it came out NaN: no file,
    ``error`` says why)."""

    z: int
    x: int
    y: int
    step: int
    seed: int
    path: str  # relative to the project, as recorded
    score: float | None = None
    faces: int | None = None
    state: str = "pending"
    error: str | None = None


def cell_from(data: dict[str, Any]) -> GridCellView:
    """A cell from the catalog row or the job's progress event (``detail["cell"]``)."""
    score = data.get("score")
    faces = data.get("faces")
    return GridCellView(
        z=int(data.get("z") or 0),
        x=int(data.get("x") or 0),
        y=int(data.get("y") or 0),
        step=int(data.get("step") or 0),
        seed=int(data.get("seed") or 0),
        path=str(data.get("path") or ""),
        score=float(score) if score is not None else None,
        faces=int(faces) if faces is not None else None,
        error=str(data["error"]) if data.get("error") else None,
    )


@dataclass(frozen=True)
class GridShape:
    """The axes of a grid: checkpoints by step (X), seeds (Y), Z slices, and the cell size.

    Columns are numbered flat across the Z blocks: column ``z * len(steps) + x``."""

    steps: tuple[int, ...]  # the checkpoints' steps (a LoRA average's is negative)
    seeds: tuple[int, ...]
    z_labels: tuple[str, ...]  # one per Z block: its base checkpoint (and LoRA weight)
    cell_w: int
    cell_h: int

    @property
    def column_count(self) -> int:
        return len(self.steps) * len(self.z_labels)

    @property
    def cell_count(self) -> int:
        return self.column_count * len(self.seeds)

    def column(self, index: int) -> tuple[int, int, int]:
        """(z, x, step) of a flat column index."""
        z, x = divmod(index, len(self.steps))
        return z, x, self.steps[x]

    def column_of(self, z: int, x: int) -> int:
        return z * len(self.steps) + x

    def contains(self, cell: GridCellView) -> bool:
        return cell.z < len(self.z_labels) and cell.x < len(self.steps) and cell.y < len(self.seeds)

    @classmethod
    def of(
        cls, spec: GridSpec | None, cells: Sequence[GridCellView], z_labels: tuple[str, ...]
    ) -> GridShape:
        """The shape ``spec`` asks for; without a readable spec, the shape the cells have."""
        if spec is not None:
            steps = spec.steps
            seeds = tuple(spec.seed + i for i in range(spec.batch))
            size = (spec.width, spec.height)
        else:
            steps = tuple(sorted({c.step for c in cells}))
            seeds = tuple(sorted({c.seed for c in cells}))
            size = (512, 512)
        count = max([len(z_labels), *(c.z + 1 for c in cells)])
        z_labels = (*z_labels, *(f"Z {z + 1}" for z in range(len(z_labels), count)))
        return cls(steps or (0,), seeds or (0,), z_labels, max(8, size[0]), max(8, size[1]))


@dataclass(frozen=True)
class LoupeEntry:
    """A cell as the full-size view steps through it."""

    path: Path
    name: str  # "NAME-40 · seed 12345678"
    seed: int


def compact_label(name: str, step: int) -> str:
    """A column label short enough for a narrow column: the number that tells the columns of
    one run apart (the full label is in the tooltip): 40 for ``NAME-40`` or "step 40", 4 for
    "epoch 4", "avg 4,6" for "average of epochs 4, 6"."""
    if name.endswith(f"-{step}") or name == f"step {step}":
        return str(step)
    if name.startswith("epoch "):
        return name.removeprefix("epoch ")
    if name.startswith("average of epochs "):
        return "avg " + name.removeprefix("average of epochs ").replace(" ", "")
    return name


def _numbers_text(numbers: Sequence[int]) -> str:
    """``20–100 every 20`` (``1–10`` when every one) for an even range of three or more, else
    ``20, 45, 50``."""
    every = numbers[1] - numbers[0] if len(numbers) > 2 else 0
    if every > 0 and all(b - a == every for a, b in itertools.pairwise(numbers)):
        return f"{numbers[0]}–{numbers[-1]}" + (f" every {every}" if every > 1 else "")
    return ", ".join(map(str, numbers))


def model_label(model: str) -> str:
    return model_display_name(model) if model else "the run's model"


class GridPresenter:
    """One open grid: its record, shape, cells, scores, suggestion and chosen step."""

    def __init__(self) -> None:
        self.project: Project | None = None
        self.record: GridRecord | None = None
        self.shape: GridShape | None = None
        self.names: dict[int, str] = {}  # step -> NAME-STEP (the checkpoint file's stem)
        self.cells: dict[tuple[int, int, int], GridCellView] = {}  # (z, x, y) -> cell
        self.column_scores: list[StepScore | None] = []
        self.suggestion: Suggestion | None = None
        self.job_status: str | None = None
        self._result: dict[str, Any] = {}  # the job's result (its suggestion), once it ended
        self._run_name: str | None = None
        self._run_model = ""
        self.unit = "step"  # what the columns are: a TI run's steps, a LoRA run's epochs

    # -- loading ------------------------------------------------------------------------------

    def clear(self) -> None:
        self.record = self.shape = self.suggestion = None
        self.names, self.cells, self.column_scores, self._result = {}, {}, [], {}
        self.job_status = self._run_name = None

    def load(self, project: Project, grid_id: int) -> tuple[list[GridCellView], bool]:
        """Read grid ``grid_id`` (KeyError when it is gone). Returns its recorded cells, to be
        put with :meth:`put_cell` once the view has the shape, and whether the shape is the
        one shown already (the same grid reloaded: the view keeps its zoom and focus)."""
        record = read_grid(project.catalog, grid_id)
        status, result = grid_job_state(project.catalog, record.job_id)
        cells = [cell_from(c) for c in read_cells(project.catalog, grid_id)]
        same = self.project is project and self.record is not None and self.record.id == grid_id
        old_shape = self.shape
        self.project = project
        self._read_run(project, record, cells)
        self.shape = GridShape.of(record.spec, cells, self._z_labels(record.spec))
        self.record, self.job_status, self._result = record, status, result
        keep = same and self.shape == old_shape
        if not keep:
            self.cells = {}
        return cells, keep

    def _read_run(
        self, project: Project, record: GridRecord, cells: Iterable[GridCellView]
    ) -> None:
        """Column labels as the job names the checkpoints (an embedding run's NAME-STEP, the
        file stems; a LoRA run's "epoch N"), and the run's name and model (the Z model when
        the grid names none)."""
        self.names, self._run_model, self._run_name, self.unit = {}, "", None, "step"
        if record.run_id is None:
            return
        try:
            run = records.get_run(project.catalog, record.run_id)
        except KeyError:
            return
        self._run_model, self._run_name = str(run.params.get("model") or ""), run.name
        if run.kind == "lora":
            from charstudio.training.lora_average import lora_checkpoints

            self.unit = "epoch"
            for lora in lora_checkpoints(project.catalog, run):
                self.names[lora.step] = lora.label
        else:
            for checkpoint in records.run_checkpoints(project.catalog, run.id):
                self.names[checkpoint.step] = Path(checkpoint.path).stem
            steps = record.spec.steps if record.spec else tuple(c.step for c in cells)
            for step in steps:
                self.names.setdefault(step, f"{run.name}-{step}")

    def _z_labels(self, spec: GridSpec | None) -> tuple[str, ...]:
        """One label per Z slice, as the job writes them in the grid PNG: the base checkpoint,
        with the LoRA weight when the grid compares weights ("weight 0.8" for one model)."""
        models = list(spec.models) if spec and spec.models else [self._run_model]
        weights = list(spec.weights) if spec else []
        if not weights:
            return tuple(model_label(m) for m in models)
        one_model = len(set(models)) == 1
        return tuple(
            f"weight {w:g}" if one_model else f"{model_label(m)}, {w:g}"
            for m in models
            for w in weights
        )

    def put_cell(self, cell: GridCellView) -> GridCellView | None:
        """Record a cell; None when the view has nothing to redraw (outside the grid's shape,
        or the same file again with its score, which arrives after the image)."""
        if self.shape is None or not self.shape.contains(cell):
            return None  # outside the grid's shape (its params edited by hand)
        key = (cell.z, cell.x, cell.y)
        old = self.cells.get(key)
        if old is not None and old.path == cell.path and old.state in ("loading", "shown"):
            old.score, old.faces = cell.score, cell.faces
            return None
        if cell.error is not None:
            cell.state = "failed"
        self.cells[key] = cell
        return cell

    def refresh_scores(self, result: dict[str, Any] | None = None) -> None:
        """Per-column step scores of the cells so far, and the suggestion: the job's when its
        result has one, else the core's rule over the scored cells, else why there is none."""
        if result is not None:
            self._result = result
        shape = self.shape
        if shape is None:
            return
        self.column_scores = []
        for column in range(shape.column_count):
            z, x, step = shape.column(column)
            cells = [c for c in self._column_cells(z, x) if c.error is None]  # failed: unscored
            if any(c.score is not None for c in cells):
                self.column_scores.append(step_scores({step: [c.score for c in cells]})[0])
            else:
                self.column_scores.append(None)
        self.suggestion = self._make_suggestion(self._result)

    def _column_cells(self, z: int, x: int) -> list[GridCellView]:
        return [c for (cz, cx, _y), c in self.cells.items() if (cz, cx) == (z, x)]

    def _make_suggestion(self, result: dict[str, Any]) -> Suggestion | None:
        stored = result.get("suggestion")
        if isinstance(stored, dict) and stored.get("reason"):
            step = stored.get("step")
            return Suggestion(int(step) if isinstance(step, int) else None, str(stored["reason"]))
        cells = [c for c in self.cells.values() if c.error is None]
        if any(c.score is not None for c in cells):
            by_step: dict[int, list[float | None]] = {}
            for cell in cells:
                by_step.setdefault(cell.step, []).append(cell.score)
            return suggest_step(step_scores(by_step))
        if self.job_status in ("queued", "running"):
            return None  # scores come at the end of the job
        if self.job_status == "canceled" or result.get("canceled"):
            why = "the grid was canceled before its cells were scored"
        elif self.job_status == "failed":
            why = "the grid job failed before its cells were scored"
        elif cells and any(c.faces is not None for c in cells):
            why = "the face recognizer was not available when this grid was made"
        else:
            why = "this grid's cells were never scored"
        return Suggestion(None, f"no identity scores: {why}")

    # -- what the grid shows --------------------------------------------------------------------

    def cell(self, column: int, row: int) -> GridCellView | None:
        if self.shape is None:
            return None
        z, x, _step = self.shape.column(column)
        return self.cells.get((z, x, row))

    def file_path(self, cell: GridCellView) -> Path | None:
        if self.project is None or not cell.path:
            return None
        return self.project.file_path(cell.path)

    def made_count(self) -> int:
        return sum(1 for c in self.cells.values() if c.path or c.error is not None)

    def has_z(self) -> bool:
        return self.shape is not None and len(self.shape.z_labels) > 1

    def step_name(self, step: int) -> str:
        """A column's label: ``NAME-40`` (embedding runs), "epoch 4" (LoRA runs)."""
        return self.names.get(step, f"step {step}")

    def unit_name(self, step: int) -> str:
        """The column in the suggestion's words: "step 60", "epoch 4"."""
        return self.step_name(step) if self.unit == "epoch" else f"step {step}"

    def column_labels(self) -> list[str]:
        if self.shape is None:
            return []
        return [self.step_name(self.shape.column(c)[2]) for c in range(self.shape.column_count)]

    def row_labels(self) -> list[str]:
        return [f"Seed {seed}" for seed in self.shape.seeds] if self.shape else []

    def score(self, column: int) -> StepScore | None:
        return self.column_scores[column] if column < len(self.column_scores) else None

    def is_scored(self) -> bool:
        return any(s is not None for s in self.column_scores)

    def chosen_step(self) -> int | None:
        return self.record.chosen_step if self.record else None

    def suggested_step(self) -> int | None:
        return self.suggestion.step if self.suggestion else None

    def suggested_columns(self) -> list[int]:
        step, shape = self.suggested_step(), self.shape
        if step is None or shape is None:
            return []
        return [c for c in range(shape.column_count) if shape.column(c)[2] == step]

    def column_note(self, column: int, compact: bool = False) -> str:
        """The second line of a column's label: suggested, chosen, or its scores."""
        assert self.shape is not None
        step = self.shape.column(column)[2]
        score = self.score(column)
        if step == self.suggested_step():
            return "★" if compact else "★ suggested"
        if step == self.chosen_step():
            return "✓" if compact else "chosen"
        if score is None or score.mean is None or score.minimum is None:
            return ""
        return f"{score.mean:.2f}" if compact else f"{score.mean:.2f} · min {score.minimum:.2f}"

    def suggestion_text(self) -> str:
        """The line under the grid: the suggested step and why, or why there is none."""
        if self.shape is None:
            return ""
        suggestion = self.suggestion
        if suggestion is None:
            return (
                f"Making the grid: {self.made_count()} of {self.shape.cell_count} cells. "
                "Identity scores and the suggested step come when every cell is made."
            )
        reason = suggestion.reason
        if suggestion.step is not None:
            label = self.unit_name(suggestion.step)
            reason = reason.removeprefix(f"{label} is the ")
            return f"Suggested: {label} — {reason}"
        if reason.startswith("no identity scores"):
            return (
                f"No identity scores: {reason.partition(':')[2].strip().rstrip('.')}. The grid "
                "works without them: judge the faces by eye."
            )
        return f"No suggestion: {reason}"

    def plot_note(self) -> str:
        """What the identity plot says while it has nothing to draw."""
        if self.suggestion is None:
            return "Identity scores come when every cell is made"
        return self.suggestion_text().split(". The grid works")[0]

    def column_tooltip(self, column: int) -> str:
        if self.shape is None:
            return ""
        z, x, step = self.shape.column(column)
        lines = [self.step_name(step)]
        if self.has_z():
            lines.append(self.shape.z_labels[z])
        failed = [c for c in self._column_cells(z, x) if c.error]
        if failed:
            lines.append(f"{len(failed)} cell(s) failed: {failed[0].error}")
        score = self.score(column)
        if score is not None:
            faces = round(score.detection_rate * score.cells)
            low = "-" if score.minimum is None else f"{score.minimum:.2f}"
            mean = "-" if score.mean is None else f"{score.mean:.2f}"
            lines.append(f"identity mean {mean} · lowest {low} · faces {faces}/{score.cells}")
        if step == self.suggested_step():
            lines.append("★ suggested")
        if step == self.chosen_step():
            lines.append("✓ chosen")
        lines.append("Click: choose this step · Shift+click: select a range to refine")
        return "\n".join(lines)

    def base_name(self) -> str:
        """The run's name (the embedding's), else the project's token."""
        if self._run_name:
            return self._run_name
        return self.project.token if self.project is not None else "grid"

    def title(self) -> str:
        record, shape = self.record, self.shape
        if record is None or shape is None:
            return "No grid open"
        if self.unit == "epoch":
            labels = [self.step_name(s) for s in shape.steps]
            epochs = [int(n.removeprefix("epoch ")) for n in labels if n.startswith("epoch ")]
            columns = f"epochs {_numbers_text(epochs)}" if epochs else ""
            averages = len(labels) - len(epochs)
            if averages:
                columns += f"{' + ' if columns else ''}{averages} average{'s' * (averages > 1)}"
        else:
            columns = f"steps {_numbers_text(shape.steps)}"
        title = f"Grid {record.id} · {self.base_name()} · {columns} · {len(shape.seeds)} seeds"
        spec = record.spec
        if len(shape.z_labels) > 1:
            slices = "Z slices" if spec is not None and spec.weights else "models"
            title += f" · {len(shape.z_labels)} {slices}"
        chosen = self.chosen_step()
        if chosen is not None:
            title += f" · chosen: {self.names.get(chosen, chosen)}"
        return title

    def detail(self) -> str:
        """Sampling settings and how many cells are made."""
        if self.record is None or self.shape is None:
            return ""
        spec = self.record.spec
        parts = []
        if spec is not None:
            sampler = f"{spec.sampler} {spec.schedule_type or ''}".strip()
            parts.append(
                f"{sampler}, {spec.sampling_steps} steps, CFG {spec.cfg_scale:g}, "
                f"{spec.width}×{spec.height}, seeds {spec.seed}–{spec.seed + spec.batch - 1}"
            )
        made, total = self.made_count(), self.shape.cell_count
        if self.job_status in ("queued", "running"):
            parts.append(f"making: {made} of {total} cells")
        elif self.job_status in ("canceled", "failed"):
            parts.append(f"{self.job_status}: {made} of {total} cells")
        elif made < total:
            parts.append(f"incomplete: {made} of {total} cells")
        return " · ".join(parts)

    def prompt(self) -> str:
        spec = self.record.spec if self.record else None
        return spec.prompt if spec is not None else ""

    def export_label(self) -> str:
        chosen = self.chosen_step()
        label = self.names.get(chosen, "") if chosen is not None else ""
        return f"Export {label}…" if label else "Export chosen step…"

    def selected_steps(self, first: int, last: int) -> tuple[int, int] | None:
        """The first and last step of columns ``first``..``last`` (None unless they differ)."""
        if self.shape is None:
            return None
        steps = [self.shape.column(c)[2] for c in range(first, last + 1)]
        low, high = min(steps), max(steps)
        return (low, high) if low != high else None

    def loupe_entries(self, focus: tuple[int, int]) -> tuple[list[LoupeEntry], int]:
        """The made cells row by row (←/→ step through the checkpoints of one seed) and the
        index of the ``focus`` (column, row) cell."""
        entries: list[LoupeEntry] = []
        current = 0
        if self.shape is None:
            return entries, current
        for row in range(len(self.shape.seeds)):
            for column in range(self.shape.column_count):
                cell = self.cell(column, row)
                path = self.file_path(cell) if cell is not None else None
                if cell is None or path is None:
                    continue
                if (column, row) == focus:
                    current = len(entries)
                name = f"{self.step_name(cell.step)} · seed {cell.seed}"
                entries.append(LoupeEntry(path, name, cell.seed))
        return entries, current

    # -- the artist's choice ----------------------------------------------------------------

    def choose(self, column: int, toggle: bool = True) -> tuple[bool, int | None]:
        """Store ``column``'s step as the grid's chosen step; with ``toggle`` choosing the
        chosen step again clears it. Returns (whether it changed, the chosen step now)."""
        if self.shape is None or self.record is None or self.project is None:
            return False, None
        step = self.shape.column(column)[2]
        if step == self.record.chosen_step and not toggle:
            return False, step
        new = None if step == self.record.chosen_step else step
        set_chosen_step(self.project.catalog, self.record.id, new)
        self.record = read_grid(self.project.catalog, self.record.id)
        return True, new

    # -- the grid PNG -------------------------------------------------------------------------

    def default_png_name(self) -> str:
        grid_id = self.record.id if self.record else 0
        return f"{self.base_name()}-grid-{grid_id}.png"

    def legend(self, column: int) -> str:
        """A column's legend in the PNG: NAME-STEP with its scores, as the job writes it."""
        assert self.shape is not None
        name = self.step_name(self.shape.column(column)[2])
        score = self.score(column)
        if score is None or score.mean is None or score.minimum is None:
            return name
        return f"{name} ({score.mean:.2f} / min {score.minimum:.2f})"

    def save_png(self, dest: Path) -> Path:
        """Copy the job's grid PNG to ``dest`` (".png" added when missing); a grid without
        one (still running, canceled) is drawn from its cells. OSError when it cannot be
        written."""
        if self.record is None or self.project is None:
            raise ValueError("no grid is open")
        dest = Path(dest)
        if dest.suffix.lower() != ".png":
            dest = dest.with_name(dest.name + ".png")
        dest.parent.mkdir(parents=True, exist_ok=True)
        stored = self.project.file_path(self.record.path) if self.record.path else None
        if stored is not None and stored.is_file():
            copy_file_atomic(stored, dest)
        else:
            from charstudio.metadata.imagefile import write_png

            write_png(self.render_png(), dest, None)
        return dest

    def render_png(self) -> Image.Image:
        """The grid as one image with A1111-style legends (NAME-STEP with scores, Seed: N)."""
        from PIL import Image

        from charstudio.engine.grid_image import make_grid_image, make_zgrid

        shape = self.shape
        if shape is None or self.project is None:
            raise ValueError("no grid is open")
        grids = []
        for z in range(len(shape.z_labels)):
            images: dict[tuple[int, int], Image.Image | None] = {}
            for (cz, x, y), cell in self.cells.items():
                path = self.file_path(cell)
                if cz == z and path is not None and path.is_file():
                    with Image.open(path) as opened:
                        images[(x, y)] = opened.convert("RGB")
            labels = [self.legend(shape.column_of(z, x)) for x in range(len(shape.steps))]
            seeds = [f"Seed: {seed}" for seed in shape.seeds]
            grids.append(
                make_grid_image(images, labels, seeds, cell_size=(shape.cell_w, shape.cell_h))
            )
        if len(grids) == 1:
            return grids[0]
        return make_zgrid(grids, list(shape.z_labels))
