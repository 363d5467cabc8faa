"""The images a run trains on: which ones, their captions, and their pixels at the training size.

Which images (``images`` in the job's params): ``"picks"`` (the newest training set, made by
"Use picks as training set"; without one, the images flagged as picks), ``"all"`` (every image
in the catalog), or a list of image ids, image files and folders (the image files directly in a
folder, as A1111's dataset directory). Files outside the catalog can be trained on; they simply
have no ``run_images`` row.

Pixels: A1111 stretches every image to the training size; charstudio resizes to cover it and
crops the centre, which is the same for images of the training size's aspect ratio (the
workflow's 512×512 generations) and keeps faces undistorted otherwise. Both use bicubic
filtering. Transparency becomes the loss weight when asked (A1111's "Use PNG alpha channel as
loss weight"): the alpha channel at latent size, shifted to a minimum of 0 and scaled to a mean
of 1 so the loss stays comparable to unweighted training.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charstudio.catalog.importer import IMAGE_SUFFIXES
from charstudio.training.templates import caption_from_filename, read_sidecar_caption

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from charstudio.catalog.project import Project

__all__ = [
    "ImageSelectionError",
    "TrainingImage",
    "caption_for",
    "gather_images",
    "load_training_pixels",
]


class ImageSelectionError(ValueError):
    """No usable images for a run; the message says what to do."""


@dataclass(frozen=True)
class TrainingImage:
    """One training image: where it is, its catalog id (None outside the catalog) and the
    caption that ``[filewords]`` becomes."""

    path: Path
    image_id: int | None
    caption: str

    def to_json(self, project: Project) -> dict[str, Any]:
        return {
            "path": project.catalog_path_for(self.path),
            "image_id": self.image_id,
            "caption": self.caption,
        }

    @classmethod
    def from_json(cls, project: Project, data: dict[str, Any]) -> TrainingImage:
        return cls(project.file_path(str(data["path"])), data.get("image_id"), data["caption"])


def caption_for(path: Path, catalog_prompt: str | None) -> str:
    """The ``.txt`` beside the image, else the catalog's prompt, else A1111's file-name rule."""
    sidecar = read_sidecar_caption(path)
    if sidecar is not None:
        return sidecar
    if catalog_prompt:
        return catalog_prompt.strip()
    return caption_from_filename(path)


def _picked_ids(project: Project) -> list[int]:
    newest = project.catalog.training_set()
    if newest is not None and newest[1]:
        return newest[1]
    from charstudio.catalog.queries import ImageFilter

    return project.catalog.filtered_ids(ImageFilter(view="picked", sort="time"))


def _files_in(folder: Path) -> list[Path]:
    return sorted(
        folder / name
        for name in os.listdir(folder)
        if Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith(".")
    )


def _from_catalog(project: Project, image_id: int) -> TrainingImage:
    try:
        record = project.catalog.image(image_id)
    except KeyError:
        raise ImageSelectionError(f"no image with id {image_id} in this project") from None
    path = project.file_path(record.path)
    return TrainingImage(path, image_id, caption_for(path, record.prompt))


def _from_file(project: Project, path: Path) -> TrainingImage:
    record = project.catalog.image_by_path(project.catalog_path_for(path))
    if record is not None:
        return TrainingImage(path, record.id, caption_for(path, record.prompt))
    return TrainingImage(path, None, caption_for(path, None))


def gather_images(project: Project, selection: str | Sequence[int | str]) -> list[TrainingImage]:
    """The training images a selection names, each once, in a stable order."""
    if selection == "picks":
        ids = _picked_ids(project)
        if not ids:
            raise ImageSelectionError(
                "no picks to train on: flag the best images as picks (P) and use them as the "
                "training set, or name the images to train on"
            )
        images = [_from_catalog(project, i) for i in ids]
    elif selection == "all":
        images = [_from_catalog(project, r.id) for r in project.catalog.images() if r.id]
    elif isinstance(selection, str):
        raise ImageSelectionError(
            f"images must be 'picks', 'all' or a list of ids and paths, not {selection!r}"
        )
    else:
        images = []
        for item in selection:
            if isinstance(item, int) and not isinstance(item, bool):
                images.append(_from_catalog(project, item))
                continue
            path = project.file_path(str(item)).expanduser()
            if path.is_dir():
                images += [_from_file(project, file) for file in _files_in(path)]
            elif path.is_file():
                images.append(_from_file(project, path))
            else:
                raise ImageSelectionError(f"training image not found: {item}")
    unique = list({image.path.resolve(): image for image in images}.values())
    missing = [str(image.path) for image in unique if not image.path.is_file()]
    if missing:
        raise ImageSelectionError(
            f"{len(missing)} training image file(s) are missing, e.g. {missing[0]}"
        )
    if not unique:
        raise ImageSelectionError("no images to train on")
    return unique


def load_training_pixels(
    path: Path, width: int, height: int, *, with_alpha: bool = False
) -> tuple[Image.Image, Image.Image | None]:
    """The image at the training size (RGB) and, when asked and present, its alpha channel."""
    from PIL import Image, ImageOps

    with Image.open(path) as opened:
        opened.load()
        alpha = None
        if with_alpha and "A" in opened.getbands():
            alpha = opened.getchannel("A")
        rgb = opened.convert("RGB")
    size = (width, height)
    resample = Image.Resampling.BICUBIC
    rgb = ImageOps.fit(rgb, size, method=resample, centering=(0.5, 0.5))
    if alpha is not None:
        alpha = ImageOps.fit(alpha, size, method=resample, centering=(0.5, 0.5))
    return rgb, alpha


def alpha_weight(alpha: Image.Image | None, latent_size: tuple[int, int]) -> np.ndarray:
    """A1111's loss weight map ``[h, w]`` at latent size: alpha, min 0, mean 1 (ones without
    alpha, or when the alpha channel is flat zero)."""
    import numpy as np
    from PIL import Image

    width, height = latent_size
    if alpha is None:
        return np.ones((height, width), dtype=np.float32)
    weight = np.asarray(
        alpha.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32
    ).copy()
    weight -= weight.min()
    mean = float(weight.mean())
    if mean <= 0:
        return np.ones((height, width), dtype=np.float32)
    return weight / mean
