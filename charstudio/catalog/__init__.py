"""The project folder and its SQLite catalog (Qt-free)."""

from charstudio.catalog.catalog import Catalog
from charstudio.catalog.errors import (
    CatalogBusyError,
    CatalogError,
    CatalogReadOnlyError,
    CatalogTooNewError,
)
from charstudio.catalog.project import CATALOG_NAME, SUBFOLDERS, Project, is_project
from charstudio.catalog.records import COLORS, FLAGS, REJECT_REASONS, Decision, ImageRecord
from charstudio.catalog.schema import SCHEMA_VERSION

__all__ = [
    "CATALOG_NAME",
    "COLORS",
    "FLAGS",
    "REJECT_REASONS",
    "SCHEMA_VERSION",
    "SUBFOLDERS",
    "Catalog",
    "CatalogBusyError",
    "CatalogError",
    "CatalogReadOnlyError",
    "CatalogTooNewError",
    "Decision",
    "ImageRecord",
    "Project",
    "is_project",
]
