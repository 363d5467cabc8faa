"""Making charstudio's Python environment: standard library only, because it runs before the
environment exists (from ``bootstrap.py`` in a source checkout and from the Windows first run).
"""
