"""A LoRA run's saved epochs, and the average of the best few (FaceChain's "ensemble").

Each saved epoch is ``runs/lora-NNN-NAME/NAME-EEEEEE.safetensors`` (kohya's zero-padded epoch)
with a ``checkpoints`` row whose step is the optimizer step at the end of that epoch. An
average is ``NAME-avg-4-6-8.safetensors`` beside them, recorded as a checkpoint with a
*negative* step (-1 for the first average of the run, -2 for the next …), so it never collides
with a real step, sorts before the epochs and is never mistaken for the last epoch to resume
from; the grid scores it like any epoch.

How the average is made. Each module's update is ``delta = (alpha / rank) * up @ down``; the
average LoRA's update is the mean of the inputs' deltas, re-factored to the run's rank.
Averaging ``up`` and ``down`` separately would not average the updates
(``mean(up) @ mean(down)`` is not ``mean(up @ down)``, and two epochs' factors need not even
share a basis), so the deltas are averaged and the result is split again by SVD, which gives
the best rank-r approximation (exact whenever the mean has rank at most r). The SVD is taken
through the factors, never the full matrix: stacking the k inputs' factors gives
``mean = A @ B`` with A ``[out, k*r]`` and B ``[k*r, in]``; QR of A and of B^T reduces it to
the SVD of a small ``k*r × k*r`` matrix, so a full SD 1.5 LoRA averages in seconds on a CPU.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charstudio.training import records

if TYPE_CHECKING:
    import torch

    from charstudio.catalog.catalog import Catalog
    from charstudio.catalog.project import Project

__all__ = [
    "AverageResult",
    "LoraCheckpoint",
    "average_lora_tensors",
    "average_top_epochs",
    "lora_checkpoints",
    "top_epochs",
]

_EPOCH_STEM = re.compile(r"-(\d{6})$")  # NAME-000004
_AVERAGE_STEM = re.compile(r"-avg((?:-\d+)+)$")  # NAME-avg-4-6-8
DEFAULT_TOP_K = 3


@dataclass(frozen=True)
class LoraCheckpoint:
    """One usable file of a LoRA run: a saved epoch or an average of epochs."""

    step: int  # the checkpoints row's step: the optimizer step, negative for an average
    path: str  # relative to the project
    epoch: int | None  # None for an average
    averaged: tuple[int, ...] = ()  # the epochs an average was made of
    loss: float | None = None

    @property
    def stem(self) -> str:
        """What ``<lora:STEM:w>`` names it by."""
        return Path(self.path).stem

    @property
    def label(self) -> str:
        if self.epoch is not None:
            return f"epoch {self.epoch}"
        return f"average of epochs {', '.join(str(e) for e in self.averaged)}"


def _parse(record: records.CheckpointRecord, steps_per_epoch: int | None) -> LoraCheckpoint:
    stem = Path(record.path).stem
    if match := _AVERAGE_STEM.search(stem):
        epochs = tuple(int(e) for e in match[1].strip("-").split("-"))
        return LoraCheckpoint(record.step, record.path, None, epochs, record.loss)
    if match := _EPOCH_STEM.search(stem):
        epoch = int(match[1])
    elif steps_per_epoch:
        epoch = max(1, round(record.step / steps_per_epoch))
    else:
        epoch = record.step
    return LoraCheckpoint(record.step, record.path, epoch, (), record.loss)


def lora_checkpoints(catalog: Catalog, run: records.RunRecord) -> list[LoraCheckpoint]:
    """The run's epochs in order, then its averages (oldest first)."""
    per_epoch = run.params.get("steps_per_epoch")
    found = [
        _parse(r, int(per_epoch) if per_epoch else None)
        for r in records.run_checkpoints(catalog, run.id)
    ]
    epochs = sorted((c for c in found if c.epoch is not None), key=lambda c: c.step)
    averages = sorted((c for c in found if c.epoch is None), key=lambda c: -c.step)
    return epochs + averages


# -- the arithmetic ------------------------------------------------------------------------


def _module_stems(tensors: Mapping[str, Any]) -> list[str]:
    return sorted(
        k[: -len(".lora_down.weight")] for k in tensors if k.endswith(".lora_down.weight")
    )


def average_lora_tensors(
    inputs: Sequence[Mapping[str, torch.Tensor]],
    *,
    rank: int | None = None,
    alpha: float | None = None,
) -> dict[str, torch.Tensor]:
    """kohya tensors whose every module's update is the mean of the inputs' updates, at
    ``rank`` (default: the inputs' largest) with ``alpha`` (default: the first input's).

    A module missing from some inputs counts as a zero update there. Float32 results; the
    writer stores them as fp16. ValueError when the inputs do not describe the same modules
    with the same shapes.
    """
    import torch

    if not inputs:
        raise ValueError("nothing to average: no LoRA files given")
    stems = sorted({s for tensors in inputs for s in _module_stems(tensors)})
    out: dict[str, torch.Tensor] = {}
    for stem in stems:
        ups: list[torch.Tensor] = []
        downs: list[torch.Tensor] = []
        shape_down: tuple[int, ...] | None = None
        shape_up: tuple[int, ...] | None = None
        first_alpha: float | None = None
        for tensors in inputs:
            if f"{stem}.lora_down.weight" not in tensors:
                continue
            down = tensors[f"{stem}.lora_down.weight"].float()
            up = tensors[f"{stem}.lora_up.weight"].float()
            r = int(down.shape[0])
            a = tensors.get(f"{stem}.alpha")
            a_value = float(a.float().reshape(-1)[0]) if a is not None else float(r)
            first_alpha = a_value if first_alpha is None else first_alpha
            here = (tuple(down.shape[1:]), tuple(up.shape[:1]) + tuple(up.shape[2:]))
            if shape_down is None:
                shape_down, shape_up = here
            elif here != (shape_down, shape_up):
                raise ValueError(f"{stem}: the files disagree on this module's shape")
            # Fold each input's scale and the 1/k of the mean into its up factor.
            ups.append(up.flatten(1) * (a_value / r / len(inputs)))
            downs.append(down.flatten(1))
        assert shape_down is not None and shape_up is not None
        target_rank = rank or max(int(d.shape[0]) for d in downs)
        target_alpha = float(alpha if alpha is not None else first_alpha or target_rank)
        new_up, new_down = _refactor(torch.cat(ups, 1), torch.cat(downs, 0), target_rank)
        # Stored factors times alpha / rank give the update back.
        new_up = new_up * (target_rank / target_alpha)
        kernel = shape_down[1:]  # () for Linear, (kh, kw) for Conv2d
        out[f"{stem}.lora_down.weight"] = new_down.reshape(target_rank, *shape_down).contiguous()
        out[f"{stem}.lora_up.weight"] = new_up.reshape(
            shape_up[0], target_rank, *([1] * len(kernel))
        ).contiguous()
        out[f"{stem}.alpha"] = torch.tensor(target_alpha)
    return out


def _refactor(a: torch.Tensor, b: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(up, down) of the best rank-``rank`` approximation of ``a @ b`` (float32), with the
    singular values split evenly between them; zero-padded when ``a @ b`` has a lower rank."""
    import torch

    qa, ra = torch.linalg.qr(a.double())
    qb, rb = torch.linalg.qr(b.double().T)
    u, s, vh = torch.linalg.svd(ra @ rb.T)
    keep = min(rank, int(s.shape[0]))
    root = s[:keep].sqrt()
    up = (qa @ u[:, :keep]) * root
    down = root[:, None] * (vh[:keep] @ qb.T)
    if keep < rank:
        up = torch.cat([up, up.new_zeros(up.shape[0], rank - keep)], 1)
        down = torch.cat([down, down.new_zeros(rank - keep, down.shape[1])], 0)
    return up.float(), down.float()


# -- choosing and writing ------------------------------------------------------------------


def top_epochs(project: Project, run: records.RunRecord, k: int = DEFAULT_TOP_K) -> list[int]:
    """The ``k`` epochs with the highest mean identity score in the run's newest scored grid."""
    from charstudio.training.grid_records import list_grids, read_cells

    by_step = {c.step: c for c in lora_checkpoints(project.catalog, run) if c.epoch is not None}
    for grid in list_grids(project.catalog, run.id):
        scores: dict[int, list[float]] = {}
        for cell in read_cells(project.catalog, grid.id):
            if cell["step"] in by_step and cell["score"] is not None:
                scores.setdefault(cell["step"], []).append(float(cell["score"]))
        if scores:
            ranked = sorted(scores, key=lambda s: -sum(scores[s]) / len(scores[s]))
            return sorted(by_step[s].epoch for s in ranked[:k])  # type: ignore[misc]
    raise ValueError(
        f"run {run.id} ({run.name}) has no grid with identity scores to choose the best "
        "epochs from: make a grid first, or name the epochs to average"
    )


@dataclass
class AverageResult:
    run_id: int
    step: int
    path: str  # relative to the project
    epochs: list[int]

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "step": self.step, "path": self.path,
                "epochs": self.epochs}  # fmt: skip


def average_top_epochs(
    project: Project,
    run_id: int,
    *,
    epochs: Sequence[int] | None = None,
    k: int = DEFAULT_TOP_K,
) -> AverageResult:
    """Average ``epochs`` (default: the ``k`` best-scored in the newest grid) into
    ``NAME-avg-E1-E2….safetensors`` in the run folder, with the run's kohya metadata, and
    record it as a checkpoint; doing the same epochs again replaces the file in place."""
    from safetensors.torch import load_file

    from charstudio.training.lora_metadata import save_lora_file

    catalog = project.catalog
    run = records.get_run(catalog, run_id)
    if run.kind != "lora":
        raise ValueError(f"run {run.id} ({run.name}) is not a LoRA run")
    checkpoints = lora_checkpoints(catalog, run)
    by_epoch = {c.epoch: c for c in checkpoints if c.epoch is not None}
    chosen = sorted(set(epochs)) if epochs else top_epochs(project, run, k)
    missing = [e for e in chosen if e not in by_epoch]
    if missing:
        have = ", ".join(str(e) for e in sorted(by_epoch)) or "none"  # type: ignore[arg-type]
        raise ValueError(
            f"run {run.id} ({run.name}) has no saved epoch {', '.join(map(str, missing))}; "
            f"saved epochs: {have}"
        )
    if len(chosen) < 2:
        raise ValueError("an average needs at least two epochs")
    sources = [project.root / by_epoch[e].path for e in chosen]
    try:
        inputs = [load_file(str(p)) for p in sources]
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the epochs to average: {exc}") from exc
    metadata = _source_metadata(sources[-1])
    dim = _int(run.params.get("dim")) or _int(metadata.get("ss_network_dim"))
    alpha = _float(run.params.get("alpha")) or _float(metadata.get("ss_network_alpha"))
    tensors = average_lora_tensors(inputs, rank=dim, alpha=alpha)

    stem = f"{Path(sources[-1]).stem.rsplit('-', 1)[0]}-avg-" + "-".join(map(str, chosen))
    relative = f"{run.folder}/{stem}.safetensors"
    metadata = {k: v for k, v in metadata.items()
                if not k.startswith(("sshs_", "modelspec."))}  # fmt: skip
    metadata["ss_output_name"] = stem
    metadata["ss_training_comment"] = (
        f"average of epochs {', '.join(map(str, chosen))} of {run.name} (charstudio)"
    )
    existing = next((c for c in checkpoints if c.path == relative), None)
    step = existing.step if existing else min([0, *(c.step for c in checkpoints)]) - 1
    token = str(run.params.get("token") or "") or None
    digest = save_lora_file(
        project.root / relative,
        tensors,
        metadata,
        resolution=int(run.params.get("resolution") or 512),
        trigger=token,
    )
    records.record_checkpoint(catalog, run.id, step, relative, None, digest)
    return AverageResult(run.id, step, relative, list(chosen))


def _source_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "", "None") else None
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "", "None") else None
    except (TypeError, ValueError):
        return None
