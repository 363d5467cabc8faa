"""A character project: one folder with the catalog and the files it refers to."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from charstudio.catalog.catalog import Catalog
from charstudio.catalog.errors import CatalogError
from charstudio.catalog.records import utc_now
from charstudio.portable_paths import (
    folder_room_problem,
    is_windows_reserved,
    portable_name,
    windows_name_problem,
)

CATALOG_NAME = "charstudio.sqlite"
SUBFOLDERS = ("images", "models", "embeddings", "loras", "runs", "grids")


# Characters of the name kept in a new project's folder name and in a default token.
FOLDER_NAME_LENGTH = 48
_TOKEN_LENGTH = 48
MAX_TOKEN_LENGTH = 64  # as for an embedding name (training.token_names)


def default_token(name: str) -> str:
    """A trigger token from the character's name: lower-case letters and digits only, never a
    name Windows reserves (a character called "Con" gets ``con_char``: ``con.pt`` would be a
    device on Windows)."""
    token = re.sub(r"[^a-z0-9]", "", name.lower())[:_TOKEN_LENGTH] or "character"
    return f"{token}_char" if is_windows_reserved(token) else token


def project_folder_name(name: str) -> str:
    """The folder name a new project gets from the character's name: its letters (any
    script), digits, ``_`` and ``-`` with other runs made ``-``, at most
    :data:`FOLDER_NAME_LENGTH` characters, and a name Windows accepts."""
    slug = re.sub(r"[^\w\-]+", "-", name.strip()).strip("-")[:FOLDER_NAME_LENGTH]
    return portable_name(slug.strip("-"), max_length=FOLDER_NAME_LENGTH, fallback="character")


def _token_problem(token: str) -> str | None:
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", token):
        return f"token {token!r}: use letters, digits, '_' or '-' only (it is typed in prompts)"
    if len(token) > MAX_TOKEN_LENGTH:
        return f"token {token!r} is longer than {MAX_TOKEN_LENGTH} characters"
    return windows_name_problem(token, what="token")


def _deepest_file(root: Path) -> str:
    """The deepest file charstudio makes in every project, relative to it: a thumbnail (run
    folders are checked when a run starts). Temporary files beside a file that only just fits
    get short names, so they fit too."""
    from charstudio.metadata.thumbcache import thumbnail_path

    return thumbnail_path(root, "0" * 64).relative_to(root).as_posix()


def is_project(folder: Path) -> bool:
    return (Path(folder) / CATALOG_NAME).is_file()


@dataclass
class Project:
    root: Path
    catalog: Catalog

    @classmethod
    def create(cls, folder: Path, name: str, token: str | None = None) -> Project:
        folder = Path(folder).expanduser().resolve()
        if is_project(folder) and (folder / CATALOG_NAME).stat().st_size > 0:
            # (an empty catalog is what an interrupted 'new' leaves: it is made again)
            raise CatalogError(f"{folder}: already a charstudio project")
        if folder.exists() and not folder.is_dir():
            raise CatalogError(f"{folder}: exists and is not a folder")
        if not name.strip():
            raise CatalogError("the character needs a name")
        token = token if token is not None else default_token(name)
        problem = _token_problem(token) or folder_room_problem(folder, _deepest_file(folder))
        if problem:
            raise CatalogError(problem)
        for sub in ("", *SUBFOLDERS):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        catalog = Catalog(folder / CATALOG_NAME, create=True)
        try:
            catalog.set_setting("name", name.strip())
            catalog.set_setting("token", token)
            catalog.set_setting("created_at", utc_now())
        except BaseException:
            catalog.close()  # Windows cannot delete or move a folder with an open catalog
            raise
        return cls(folder, catalog)

    @classmethod
    def open(cls, folder: Path) -> Project:
        folder = Path(folder).expanduser().resolve()
        if folder.is_file() and folder.name == CATALOG_NAME:
            folder = folder.parent
        if not is_project(folder):
            raise CatalogError(
                f"{folder}: not a charstudio project (no {CATALOG_NAME}); "
                "create one with 'charstudio new'"
            )
        catalog = Catalog(folder / CATALOG_NAME)
        try:
            for sub in SUBFOLDERS:  # recreate folders an artist may have deleted
                if catalog.read_only is None:  # (a read-only folder is shown as it is)
                    (folder / sub).mkdir(exist_ok=True)
        except BaseException:
            catalog.close()  # Windows cannot delete or move a folder with an open catalog
            raise
        return cls(folder, catalog)

    def close(self) -> None:
        self.catalog.close()

    @property
    def read_only(self) -> str | None:
        """Why the project is open for viewing only (read-only folder or catalog), or None."""
        return self.catalog.read_only

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def name(self) -> str:
        return str(self.catalog.get_setting("name", self.root.name))

    @property
    def token(self) -> str:
        return str(self.catalog.get_setting("token", default_token(self.name)))

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    def catalog_path_for(self, file: Path) -> str:
        """How the catalog names a file: POSIX relative inside the project, else absolute."""
        file = Path(file).resolve()
        try:
            return PurePosixPath(file.relative_to(self.root).as_posix()).as_posix()
        except ValueError:
            return file.as_posix()

    def file_path(self, catalog_path: str) -> Path:
        """The file a catalog path refers to."""
        path = Path(catalog_path)
        return path if path.is_absolute() else self.root / path

    def missing_image_ids(self) -> list[int]:
        """Images whose file no longer exists (e.g. added in place, then moved)."""
        return [r.id for r in self.catalog.images() if not self.file_path(r.path).is_file()]
