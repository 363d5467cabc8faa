"""charstudio: a workstation for consistent Stable Diffusion 1.5 characters."""

__version__ = "0.1.0"
