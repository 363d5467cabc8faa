"""The events a set-up reports, in order, to whoever shows its progress (``FirstRun.run``)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from charstudio.install.environment import EnvironmentSpec
from charstudio.install.setup_failures import SetupFailure
from charstudio.install.torch_variant import TorchVariant


@dataclass(frozen=True)
class GpuDetected:
    variant: TorchVariant


@dataclass(frozen=True)
class StepStarted:
    index: int  # 0-based
    count: int
    label: str
    argv: tuple[str, ...]
    downloads: bool  # the step that installs the packages (and downloads them)


@dataclass(frozen=True)
class DownloadProgress:
    """Bytes downloaded so far of those uv announced. uv reports a download only when it starts
    and when it ends, so ``done_bytes`` is an estimate (see ``uv_output.DownloadTracker``);
    ``at`` is when it was made, and ``rate`` (bytes/s) lets a view move it on between events
    with ``now``."""

    done_bytes: int
    total_bytes: int
    packages_done: int
    packages_total: int
    rate: float | None
    at: float
    current: str = ""

    @property
    def complete(self) -> bool:
        return self.packages_done >= self.packages_total

    def now(self, when: float) -> DownloadProgress:
        """This estimate carried forward to ``when`` at the measured rate."""
        if self.rate is None or self.complete or when <= self.at:
            return self
        ceiling = max(self.done_bytes, int(self.total_bytes * 0.99))
        done = min(ceiling, int(self.done_bytes + self.rate * (when - self.at)))
        return replace(self, done_bytes=done, at=when)

    @property
    def eta_s(self) -> float | None:
        if self.complete:
            return 0.0
        if not self.rate:
            return None
        return max(0.0, (self.total_bytes - self.done_bytes) / self.rate)


@dataclass(frozen=True)
class Installing:
    """Downloads are done; uv is putting the packages in place."""


@dataclass(frozen=True)
class Finished:
    spec: EnvironmentSpec


@dataclass(frozen=True)
class Failed:
    failure: SetupFailure


@dataclass(frozen=True)
class Cancelled:
    """The set-up stopped because the artist cancelled it."""


Event = GpuDetected | StepStarted | DownloadProgress | Installing | Finished | Failed | Cancelled
