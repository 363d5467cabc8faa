"""Training on the picks: textual inversion (A1111-compatible embeddings), Qt-free.

Entry points: :func:`charstudio.training.ti.train_ti_job` (the queue job),
:func:`charstudio.training.pause.request_pause`, :class:`TrainTISettings` and, for the command
line, :mod:`charstudio.training.cli_args`. Importing this package does not import torch.
"""

from charstudio.training.settings import TrainSettingsError, TrainTISettings

__all__ = ["TrainSettingsError", "TrainTISettings"]
