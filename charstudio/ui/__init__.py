"""The Qt shell over charstudio's core: windows, models, views and job adapters."""
