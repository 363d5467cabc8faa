"""Export the chosen step of a run: ``NAME.pt`` (A1111) and ``NAME.safetensors``.

The files go into the project's ``embeddings/`` (so the bare token name works in the next
generation at once) and into any folders the artist keeps for other tools: an A1111
``embeddings/`` folder, a ComfyUI ``models/embeddings/`` folder. Both files carry the same
vectors; the ``.pt`` holds A1111's keys with the step and the training model's hash and name.
An existing file of the same name is replaced atomically. The catalog records each export.

The folder and name rules and the catalog record are shared with the LoRA export
(:mod:`charstudio.training.lora_export`): :func:`export_targets`, :func:`export_name`,
:func:`record_exports`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charstudio.catalog.records import utc_now
from charstudio.portable_paths import windows_name_problem
from charstudio.training import records

if TYPE_CHECKING:
    from charstudio.catalog.project import Project

__all__ = [
    "EXPORT_FOLDERS_SETTING",
    "ExportResult",
    "export_embedding",
    "export_name",
    "export_targets",
    "record_exports",
]

EXPORT_FOLDERS_SETTING = "export_folders"  # remembered A1111/ComfyUI embedding folders


@dataclass
class ExportResult:
    run_id: int
    step: int
    name: str
    files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "step": self.step, "name": self.name, "files": self.files}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_name(name: str | None, default: str) -> str:
    """The export's file name (``name`` or the run's); ValueError for one that cannot be a
    file name on Windows (``con``, ``a/b``, ``name.``)."""
    chosen = (name or default).strip()
    problem = windows_name_problem(chosen, what="export name")
    if problem:
        raise ValueError(problem)
    return chosen


def export_targets(project: Project, own: str, folders: Sequence[Path | str]) -> list[Path]:
    """The project's own folder ``own`` first (what its next generation finds by name), then
    the artist's folders for other tools, each created if missing; a folder given twice is
    written once."""
    targets: list[Path] = []
    for folder in [project.root / own, *(Path(f).expanduser() for f in folders)]:
        if all(folder.resolve() != t.resolve() for t in targets):
            folder.mkdir(parents=True, exist_ok=True)
            targets.append(folder)
    return targets


def record_exports(
    project: Project, run_id: int, step: int, name: str, paths: Sequence[Path]
) -> None:
    """One ``exports`` row per written file, and ``step`` marked chosen on the run's grids."""
    now = utc_now()
    rows = [(run_id, step, name, project.catalog_path_for(p), _sha256(p), now) for p in paths]
    with project.catalog.transaction() as conn:
        conn.executemany(
            "INSERT INTO exports (run_id, step, name, path, sha256, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute("UPDATE grids SET chosen_step = ? WHERE run_id = ?", (step, run_id))


def export_embedding(
    project: Project,
    run_id: int,
    step: int,
    *,
    folders: Sequence[Path | str] = (),
    name: str | None = None,
) -> ExportResult:
    """Write step ``step`` of run ``run_id`` as ``NAME.pt`` and ``NAME.safetensors`` into the
    project's embeddings/ and ``folders``; mark the step chosen on the run's grids. A name
    that cannot be a file name on Windows (``con``, ``a/b``, ``name.``) is a ValueError."""
    from charstudio.engine.embeddings import load_embedding, save_a1111_pt, save_safetensors

    catalog = project.catalog
    run = records.get_run(catalog, run_id)
    checkpoint = next((c for c in records.run_checkpoints(catalog, run_id) if c.step == step), None)
    if checkpoint is None:
        steps = ", ".join(str(c.step) for c in records.run_checkpoints(catalog, run_id))
        raise ValueError(
            f"run {run_id} has no checkpoint at step {step} (saved: {steps or 'none'})"
        )
    source = project.root / checkpoint.path
    embedding = load_embedding(source, width=None)  # our own file: any width the run used
    name = export_name(name, run.name)
    model_hash = run.params.get("model_hash")
    model_name = run.params.get("model_name")
    result = ExportResult(run_id, step, name)
    written: list[Path] = []
    for folder in export_targets(project, "embeddings", folders):
        pt = save_a1111_pt(
            folder / f"{name}.pt",
            name,
            embedding.vectors,
            step=step,
            checkpoint_hash=model_hash,
            checkpoint_name=model_name,
        )
        st = save_safetensors(
            folder / f"{name}.safetensors", embedding.vectors, {"name": name, "step": str(step)}
        )
        written += [pt, st]
    result.files = [str(p) for p in written]
    record_exports(project, run_id, step, name, written)
    return result
