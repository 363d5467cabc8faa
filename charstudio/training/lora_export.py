"""Export a LoRA run's chosen epoch (or an average of epochs) as ``NAME.safetensors``.

The file goes where :func:`charstudio.training.export.export_targets` puts every export: the
project's own ``loras/`` (so ``<lora:NAME:0.8>`` works in the next generation at once), then
the artist's folders for other tools, typically A1111's ``models/Lora`` and ComfyUI's
``models/loras``; an install's root folder given instead is turned into its LoRA folder.
Beside each file A1111's sidecars: ``NAME.json`` (activation text = the run's token, preferred
weight, negative text; the card's "Edit metadata" fields) and ``NAME.preview.png`` (the
chosen epoch's grid cell, else the run's newest sample).

The file is the run's own with ``ss_output_name`` set to NAME (A1111 shows that alias) and its
``sshs`` hashes and ``modelspec`` fields written again; it is validated
(:func:`~charstudio.training.lora_validate.validate_lora`) before anything is written, so an
export never leaves a file A1111 or ComfyUI would load only in part. Files are replaced
atomically; each exported ``.safetensors`` is recorded in ``exports``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charstudio.atomic_files import copy_file_atomic, write_bytes_atomic
from charstudio.training import records
from charstudio.training.export import export_name, export_targets, record_exports
from charstudio.training.lora_average import LoraCheckpoint, lora_checkpoints

if TYPE_CHECKING:
    from charstudio.catalog.project import Project

__all__ = [
    "DEFAULT_PREFERRED_WEIGHT",
    "LORA_EXPORT_FOLDERS_SETTING",
    "LoraExportResult",
    "choose_checkpoint",
    "export_lora",
    "lora_folder",
]

LORA_EXPORT_FOLDERS_SETTING = "lora_export_folders"  # remembered A1111/ComfyUI LoRA folders
DEFAULT_PREFERRED_WEIGHT = 0.8  # the workflow's <lora:name:0.8>
OWN_FOLDER = "loras"


@dataclass
class LoraExportResult:
    run_id: int
    step: int
    epoch: int | None
    averaged: list[int]
    name: str
    files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "step": self.step,
            "epoch": self.epoch,
            "averaged": self.averaged,
            "name": self.name,
            "files": self.files,
        }


def lora_folder(folder: Path | str) -> Path:
    """``folder``, or the LoRA folder inside it when it is an A1111 or ComfyUI install (or its
    ``models`` folder): A1111 keeps LoRAs in ``models/Lora``, ComfyUI in ``models/loras``."""
    path = Path(folder).expanduser()
    models = path / "models" if (path / "models").is_dir() else path
    if models.name == "models":
        for name in ("Lora", "loras"):
            if (models / name).is_dir():
                return models / name
        if (models / "Stable-diffusion").is_dir():
            return models / "Lora"
        if (models / "checkpoints").is_dir():
            return models / "loras"
    return path


def choose_checkpoint(
    project: Project,
    run: records.RunRecord,
    *,
    epoch: int | None = None,
    step: int | None = None,
    averaged: bool = False,
) -> LoraCheckpoint:
    """The run's file for ``epoch``, ``step``, or its newest average; ValueError saying what
    the run has otherwise."""
    saved = lora_checkpoints(project.catalog, run)
    epochs = ", ".join(str(c.epoch) for c in saved if c.epoch is not None) or "none"
    if averaged:
        found = next((c for c in saved if c.epoch is None), None)
        if found is None:
            raise ValueError(f"run {run.id} ({run.name}) has no averaged LoRA; average first")
        return found
    if epoch is not None:
        found = next((c for c in saved if c.epoch == epoch), None)
        what = f"epoch {epoch}"
    elif step is not None:
        found = next((c for c in saved if c.step == step), None)
        what = f"step {step}"
    else:
        raise ValueError("say which epoch to export (or the averaged LoRA)")
    if found is None:
        raise ValueError(f"run {run.id} ({run.name}) has no saved {what}; saved epochs: {epochs}")
    return found


def _preview_source(project: Project, run: records.RunRecord, step: int) -> Path | None:
    """The chosen checkpoint's first grid cell (newest grid), else the run's newest sample."""
    with project.catalog.transaction() as conn:
        row = conn.execute(
            "SELECT c.path FROM grid_cells c JOIN grids g ON g.id = c.grid_id "
            "WHERE g.run_id = ? AND c.step = ? AND c.path IS NOT NULL "
            "ORDER BY g.id DESC, c.z, c.y LIMIT 1",
            (run.id, step),
        ).fetchone()
    if row and (project.root / row[0]).is_file():
        return project.root / row[0]
    samples = sorted(
        (p for p in (project.root / run.folder).rglob("*.png") if not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime_ns,
    )
    return samples[-1] if samples else None


def _sidecar(token: str, weight: float, negative: str, note: str) -> bytes:
    data = {
        "description": note,
        "sd version": "SD1",
        "activation text": token,
        "preferred weight": weight,
        "negative text": negative,
        "notes": "",
    }
    return (json.dumps(data, indent=4, ensure_ascii=False) + "\n").encode("utf-8")


def export_lora(
    project: Project,
    run_id: int,
    *,
    epoch: int | None = None,
    step: int | None = None,
    averaged: bool = False,
    folders: Sequence[Path | str] = (),
    name: str | None = None,
    weight: float = DEFAULT_PREFERRED_WEIGHT,
    negative: str = "",
    preview: Path | str | None = None,
) -> LoraExportResult:
    """Validate and write the chosen file of LoRA run ``run_id`` as ``NAME.safetensors`` with
    its sidecars into the project's ``loras/`` and ``folders``; mark it chosen on the run's
    grids. ValueError (the validator's message included) before anything is written when the
    choice, the name or the file is wrong."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from charstudio.training.lora_metadata import lora_file_bytes
    from charstudio.training.lora_validate import table_for_model, validate_lora

    catalog = project.catalog
    run = records.get_run(catalog, run_id)
    if run.kind != "lora":
        raise ValueError(f"run {run.id} ({run.name}) is not a LoRA run")
    chosen = choose_checkpoint(project, run, epoch=epoch, step=step, averaged=averaged)
    name = export_name(name, run.name)
    source = project.root / chosen.path
    try:
        tensors = load_file(str(source))
        metadata = _metadata(source)
    except (OSError, SafetensorError, ValueError) as exc:
        raise ValueError(f"{source}: cannot be read ({exc})") from exc
    metadata = {k: v for k, v in metadata.items() if not k.startswith(("sshs_", "modelspec."))}
    metadata["ss_output_name"] = name
    token = str(run.params.get("token") or run.name)
    data = lora_file_bytes(
        tensors, metadata, resolution=int(run.params.get("resolution") or 512), trigger=token
    )
    model = run.params.get("model")
    validate_lora(
        source.with_name(f"{name}.safetensors"),
        data=data,
        table=table_for_model(str(model) if model else None),
        expect_name=name,
    )

    preview_path = Path(preview) if preview else _preview_source(project, run, chosen.step)
    note = f"{run.name}, {chosen.label} (trained with charstudio)"
    sidecar = _sidecar(token, float(weight), negative, note)
    result = LoraExportResult(run.id, chosen.step, chosen.epoch, list(chosen.averaged), name)
    written: list[Path] = []
    own = project.root / OWN_FOLDER
    targets = export_targets(project, OWN_FOLDER, [lora_folder(f) for f in folders])
    for folder in targets:
        target = folder / f"{name}.safetensors"
        write_bytes_atomic(target, data)
        written.append(target)
        result.files.append(str(target))
        if folder == own:
            continue  # the project's own copy needs no card: charstudio reads the file
        write_bytes_atomic(folder / f"{name}.json", sidecar)
        result.files.append(str(folder / f"{name}.json"))
        if preview_path is not None and preview_path.is_file():
            copy_file_atomic(preview_path, folder / f"{name}.preview.png")
            result.files.append(str(folder / f"{name}.preview.png"))
    record_exports(project, run.id, chosen.step, name, written)
    return result


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})
