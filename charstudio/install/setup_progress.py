"""The words and the fraction a view shows for a set-up's progress events."""

from __future__ import annotations

import math

from charstudio.install.setup_events import (
    DownloadProgress,
    Event,
    Finished,
    GpuDetected,
    Installing,
    StepStarted,
)
from charstudio.install.torch_variant import TorchVariant


def format_size(size: int) -> str:
    if size >= 1 << 30:
        return f"{size / (1 << 30):.1f} GB"
    return f"{max(size, 0) / (1 << 20):.0f} MB"


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return "less than a minute left"
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min left"
    return f"about {minutes // 60} h {minutes % 60:02d} min left"


def format_amounts(done: int, total: int) -> str:
    if total >= 1 << 30:
        return f"{done / (1 << 30):.1f} of {total / (1 << 30):.1f} GB"
    return f"{done / (1 << 20):.0f} of {total / (1 << 20):.0f} MB"


class SetupProgress:
    """The state of a set-up as a view shows it: a sentence, a fraction (None: not known),
    and the graphics-card line. Fed the events in order; ``now`` moves downloads on between
    events."""

    def __init__(self) -> None:
        self.variant: TorchVariant | None = None
        self.step: StepStarted | None = None
        self.download: DownloadProgress | None = None
        self.installing = False
        self.finished = False

    def apply(self, event: Event) -> None:
        if isinstance(event, GpuDetected):
            self.variant = event.variant
        elif isinstance(event, StepStarted):
            self.step, self.download, self.installing = event, None, False
        elif isinstance(event, DownloadProgress):
            self.download = event
        elif isinstance(event, Installing):
            self.installing = True
        elif isinstance(event, Finished):
            self.finished = True

    def what(self) -> str:
        variant = self.variant
        if variant is None or variant.backend == "cpu":
            return "PyTorch (CPU build)"
        card = f" for your {variant.gpu_name}" if variant.gpu_name else ""
        return f"PyTorch with CUDA {variant.cuda}{card}"

    def headline(self, now: float) -> str:
        if self.finished:
            return "Starting charstudio…"
        if self.step is None:
            return "Checking your graphics card…"
        if not self.step.downloads:
            return "Preparing Python…"
        if self.installing:
            return f"Installing {self.what()}…"
        if self.download is None:
            return f"Getting ready to download {self.what()}…"
        progress = self.download.now(now)
        parts = [format_amounts(progress.done_bytes, progress.total_bytes)]
        if eta := format_eta(progress.eta_s):
            parts.append(eta)
        return f"Downloading {self.what()} — " + " · ".join(parts)

    def fraction(self, now: float) -> float | None:
        """Downloads fill 90% of the bar, installing the rest; None while not measurable."""
        if self.finished:
            return 1.0
        if self.installing:
            return 0.95
        if self.download is None or self.download.total_bytes <= 0:
            return None
        progress = self.download.now(now)
        if progress.done_bytes <= 0:
            return None
        return 0.9 * progress.done_bytes / progress.total_bytes

    def detail(self) -> str:
        return self.variant.reason if self.variant else ""
