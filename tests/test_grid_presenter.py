"""What the checkpoint grid viewer shows, driven without Qt (workflow step 4).

Grids are catalog rows (``grids``, ``grid_cells``) with small PNG cell files written here, as the
grid job writes them; the presenter reads them back into cells by axis value, labels, scores,
the suggestion in words, the chosen step and the grid PNG.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from charstudio.catalog import Project
from charstudio.catalog.records import utc_now
from charstudio.jobs.queue import JobQueue
from charstudio.presenters.grid import GridPresenter, cell_from, compact_label
from charstudio.training import records
from charstudio.training.checkpoint_grid import GridSpec
from charstudio.training.grid_records import read_grid

TOKEN = "fr3nchl4dy"
RUN_FOLDER = f"runs/ti-001-{TOKEN}"
SEED = 12345678
STEPS = (20, 40, 60, 80, 100)
RUN_MODEL = "/models/v1-5-pruned-emaonly.safetensors"
# Step 60 is the first where all four faces pass 0.5; identity drops again at step 100.
SCORES = {
    20: [0.2, 0.31, None, 0.28],
    40: [0.45, 0.52, 0.4, 0.49],
    60: [0.62, 0.58, 0.66, 0.55],
    80: [0.7, 0.72, 0.68, 0.61],
    100: [0.66, 0.41, 0.7, 0.63],
}


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    project = Project.create(tmp_path / "proj", "Léa", token=TOKEN)
    run_id = records.create_run(
        project.catalog, name=TOKEN, folder=RUN_FOLDER, params={"model": RUN_MODEL}, job_id=None
    )
    for step in range(5, 151, 5):
        path = f"{RUN_FOLDER}/{TOKEN}-{step}.pt"
        records.record_checkpoint(project.catalog, run_id, step, path, 0.1, "0" * 64)
    project.run_id = run_id  # type: ignore[attr-defined]
    yield project
    project.close()


def add_grid(
    project: Project,
    steps: tuple[int, ...] = STEPS,
    *,
    scores: dict[int, list[float | None]] | None = None,
    made: int | None = None,
    job_id: int | None = None,
    models: tuple[str, ...] = (),
) -> int:
    """A grid as the job records it: its row, then ``made`` cells (all by default), each a PNG
    (32×32, a colour per step) and a ``grid_cells`` row."""
    run_id = project.run_id  # type: ignore[attr-defined]
    spec = GridSpec(run_id=run_id, steps=steps, width=32, height=32, models=models)
    with project.catalog.transaction() as conn:
        grid_id = int(
            conn.execute(
                "INSERT INTO grids (run_id, params, created_at, job_id) VALUES (?, ?, ?, ?)",
                (run_id, json.dumps(spec.to_json()), utc_now(), job_id),
            ).lastrowid
            or 0
        )
        cells = [
            (z, x, y)
            for z in range(max(1, len(models)))
            for x in range(len(steps))
            for y in range(4)
        ]
        for z, x, y in cells[:made]:
            relative = f"grids/grid-{grid_id:05d}/z{z}-{TOKEN}-{steps[x]}-{SEED + y}.png"
            (project.root / relative).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 32), (40 * x, 60 * y, 100 * z)).save(project.root / relative)
            score = scores[steps[x]][y] if scores else None
            faces = (0 if score is None else 1) if scores else None
            conn.execute(
                "INSERT INTO grid_cells (grid_id, x, y, z, step, seed, path, score, faces) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (grid_id, x, y, z, steps[x], SEED + y, relative, score, faces),
            )
    return grid_id


def opened(project: Project, grid_id: int) -> GridPresenter:
    presenter = GridPresenter()
    cells, _keep = presenter.load(project, grid_id)
    for cell in cells:
        presenter.put_cell(cell)
    presenter.refresh_scores()
    return presenter


def test_cells_sit_by_step_and_seed_under_their_checkpoint_names(project) -> None:
    presenter = opened(project, add_grid(project, scores=SCORES))
    assert presenter.column_labels() == [f"{TOKEN}-{s}" for s in STEPS]
    assert presenter.row_labels() == [f"Seed {SEED + y}" for y in range(4)]
    for column, step in enumerate(STEPS):
        for row in range(4):
            cell = presenter.cell(column, row)
            assert cell is not None and (cell.step, cell.seed) == (step, SEED + row)
    assert presenter.title().endswith(f"· {TOKEN} · steps 20–100 every 20 · 4 seeds")
    assert presenter.detail().startswith("DPM++ 2M Karras, 30 steps, CFG 7, 32×32")
    # Narrow columns show the step alone; a name that is not NAME-STEP stays whole.
    assert compact_label(f"{TOKEN}-40", 40) == "40" and compact_label("step 40", 40) == "40"
    assert compact_label("best", 40) == "best"


def test_the_suggestion_is_the_cores_rule_in_words(project) -> None:
    presenter = opened(project, add_grid(project, scores=SCORES))
    scores = presenter.column_scores
    assert scores[0] is not None and scores[0].detection_rate == 0.75
    assert scores[2] is not None and scores[2].minimum == pytest.approx(0.55)
    assert presenter.suggested_step() == 60 and presenter.suggested_columns() == [2]
    text = presenter.suggestion_text()
    assert text.startswith("Suggested: step 60 — first where every image (4)")
    assert "over-baked" in text
    assert presenter.column_note(2) == "★ suggested" and presenter.column_note(2, True) == "★"
    assert presenter.column_note(0) == "0.26 · min 0.20"
    assert presenter.column_note(0, compact=True) == "0.26"
    assert "★ suggested" in presenter.column_tooltip(2)
    assert "faces 3/4" in presenter.column_tooltip(0)


def test_a_grid_without_scores_says_why(project) -> None:
    job_id = JobQueue(project).submit("grid", {})
    reason = "no identity scores: face recognition weights are not installed"
    project.catalog.update_job(
        job_id, status="done", result={"suggestion": {"step": None, "reason": reason}}
    )
    presenter = opened(project, add_grid(project, job_id=job_id))
    assert presenter.suggested_step() is None and not presenter.is_scored()
    assert presenter.suggestion_text() == (
        "No identity scores: face recognition weights are not installed. "
        "The grid works without them: judge the faces by eye."
    )
    assert presenter.plot_note() == "No identity scores: face recognition weights are not installed"

    canceled = JobQueue(project).submit("grid", {})
    project.catalog.update_job(canceled, status="canceled")
    presenter = opened(project, add_grid(project, made=6, job_id=canceled))
    assert "canceled before its cells were scored" in presenter.suggestion_text()
    assert presenter.detail().endswith("canceled: 6 of 20 cells")


def test_a_running_grid_counts_its_cells_and_takes_new_ones(project) -> None:
    job_id = JobQueue(project).submit("grid", {})
    project.catalog.update_job(job_id, status="running")
    grid_id = add_grid(project, made=0, job_id=job_id)
    presenter = opened(project, grid_id)
    assert presenter.suggestion is None
    assert presenter.suggestion_text().startswith("Making the grid: 0 of 20 cells.")
    assert presenter.plot_note() == "Identity scores come when every cell is made"
    event = {"x": 1, "y": 2, "z": 0, "step": 40, "seed": SEED + 2, "path": "grids/a.png"}
    cell = presenter.put_cell(cell_from(event))
    assert cell is not None and presenter.cell(1, 2) is cell
    assert presenter.put_cell(cell_from({**event, "x": 9})) is None  # outside the grid
    failed = presenter.put_cell(cell_from({**event, "x": 0, "path": "", "error": "NaN"}))
    assert failed is not None and failed.state == "failed"
    presenter.refresh_scores()
    assert presenter.detail().endswith("making: 2 of 20 cells")
    assert "1 cell(s) failed: NaN" in presenter.column_tooltip(0)


def test_choosing_a_step_is_stored_and_c_again_clears_it(project) -> None:
    grid_id = add_grid(project, scores=SCORES)
    presenter = opened(project, grid_id)
    assert presenter.choose(3) == (True, 80)
    assert read_grid(project.catalog, grid_id).chosen_step == 80
    assert presenter.title().endswith(f"chosen: {TOKEN}-80")
    assert presenter.export_label() == f"Export {TOKEN}-80…"
    assert presenter.choose(3, toggle=False) == (False, 80)  # a click never undoes a choice
    assert presenter.choose(3) == (True, None)
    assert read_grid(project.catalog, grid_id).chosen_step is None
    assert presenter.export_label() == "Export chosen step…"


def test_reloading_the_same_grid_keeps_the_view(project) -> None:
    grid_id = add_grid(project, scores=SCORES)
    presenter = opened(project, grid_id)
    assert presenter.load(project, grid_id)[1] is True
    assert presenter.load(project, add_grid(project, (40, 60)))[1] is False


def test_the_grid_png_is_the_jobs_or_drawn_from_the_cells(project, tmp_path) -> None:
    grid_id = add_grid(project, scores=SCORES)
    presenter = opened(project, grid_id)
    assert presenter.legend(2) == f"{TOKEN}-60 (0.60 / min 0.55)"
    drawn = presenter.save_png(tmp_path / "out" / "drawn")
    assert drawn.name == "drawn.png"
    with Image.open(drawn) as image:  # 5 × 4 cells of 32 px plus the legends
        assert image.width > 5 * 32 and image.height > 4 * 32
        # The made cells are in it: the colour of step 40, seed +1 appears.
        assert (40, 60, 0) in {pixel for _count, pixel in image.getcolors(1 << 16)}
    stored = project.root / "grids" / f"grid-{grid_id:05d}.png"
    Image.new("RGB", (10, 10), (1, 2, 3)).save(stored)
    with project.catalog.transaction() as conn:
        conn.execute("UPDATE grids SET path = ? WHERE id = ?", (f"grids/{stored.name}", grid_id))
    presenter = opened(project, grid_id)
    assert presenter.save_png(tmp_path / "copy.png").read_bytes() == stored.read_bytes()
    assert presenter.default_png_name() == f"{TOKEN}-grid-{grid_id}.png"


def test_a_z_grid_has_a_block_of_columns_per_model(project, tmp_path) -> None:
    other = "/models/deliberate_v2.safetensors"
    presenter = opened(project, add_grid(project, (20, 40), models=(RUN_MODEL, other)))
    assert presenter.has_z() and presenter.shape is not None
    assert presenter.shape.column_count == 4 and presenter.shape.column(3) == (1, 1, 40)
    assert presenter.column_labels() == [f"{TOKEN}-20", f"{TOKEN}-40"] * 2
    assert "deliberate_v2" in presenter.column_tooltip(2)
    with Image.open(presenter.save_png(tmp_path / "z.png")) as image:
        assert image.width > 4 * 32


def test_the_loupe_steps_through_one_seed_then_the_next(project) -> None:
    presenter = opened(project, add_grid(project))
    entries, current = presenter.loupe_entries((2, 1))
    assert len(entries) == 20
    assert [e.name for e in entries[:2]] == [
        f"{TOKEN}-20 · seed {SEED}",
        f"{TOKEN}-40 · seed {SEED}",
    ]
    assert entries[current].path.name == f"z0-{TOKEN}-60-{SEED + 1}.png"
    assert entries[current].path.is_file()


def test_a_lora_grid_is_labelled_by_epoch_with_a_z_slice_per_weight(project) -> None:
    run_id = records.create_run(
        project.catalog, name="zxq", folder="runs/lora-001-zxq", params={}, job_id=None, kind="lora"
    )
    for step, stem in ((50, "zxq-000001"), (100, "zxq-000002"), (150, "zxq-000003")):
        path = f"runs/lora-001-zxq/{stem}.safetensors"
        records.record_checkpoint(project.catalog, run_id, step, path, 0.1, "")
    average = "runs/lora-001-zxq/zxq-avg-2-3.safetensors"
    records.record_checkpoint(project.catalog, run_id, -1, average, None, "")
    project.run_id = run_id  # type: ignore[attr-defined]
    job_id = JobQueue(project).submit("grid", {})
    reason = "epoch 2 is the first where every image (4) shows a face scoring at least 0.50"
    suggestion = {"step": 100, "epoch": 2, "reason": reason}
    project.catalog.update_job(job_id, status="done", result={"suggestion": suggestion})
    grid_id = add_grid(project, (50, 100, 150, -1), job_id=job_id)
    with project.catalog.transaction() as conn:
        spec = GridSpec(run_id=run_id, steps=(50, 100, 150, -1), weights=(0.6, 1.0))
        params = json.dumps({**spec.to_json(), "width": 32, "height": 32})
        conn.execute("UPDATE grids SET params = ? WHERE id = ?", (params, grid_id))
    presenter = opened(project, grid_id)
    labels = ["epoch 1", "epoch 2", "epoch 3", "average of epochs 2, 3"]
    assert presenter.column_labels() == labels * 2
    assert [compact_label(n, s) for n, s in zip(labels, (50, 100, 150, -1), strict=True)] == [
        "1",
        "2",
        "3",
        "avg 2,3",
    ]
    assert presenter.shape is not None and presenter.shape.z_labels == ("weight 0.6", "weight 1")
    assert presenter.unit == "epoch"
    assert "· epochs 1–3 + 1 average · 4 seeds · 2 Z slices" in presenter.title()
    assert presenter.suggestion_text() == (
        "Suggested: epoch 2 — first where every image (4) shows a face scoring at least 0.50"
    )
    assert presenter.legend(1) == "epoch 2"
