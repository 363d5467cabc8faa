"""Errors the catalog raises; every message names the file and the problem."""

from __future__ import annotations


class CatalogError(Exception):
    """A project or catalog cannot be opened or used."""


class CatalogTooNewError(CatalogError):
    """The catalog was written by a newer charstudio; it is left untouched."""


class CatalogBusyError(CatalogError):
    """Another connection held the write lock for longer than the busy timeout."""


class CatalogReadOnlyError(CatalogError):
    """The project folder or catalog file cannot be written: it is open for viewing only."""
