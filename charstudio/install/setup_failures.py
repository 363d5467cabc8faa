"""What went wrong in a set-up, in words for the artist: the kinds of failure, how uv's output
shows them, and the message for each."""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import TYPE_CHECKING

from charstudio.install.torch_variant import TorchVariant

if TYPE_CHECKING:  # first_run imports this module
    from charstudio.install.first_run import Installation


class FailureKind(enum.Enum):
    OFFLINE = "offline"
    DISK_FULL = "disk_full"
    DRIVER_TOO_OLD = "driver_too_old"
    GPU_BUILD_MISSING = "gpu_build_missing"
    UV_BROKEN = "uv_broken"
    INSTALLATION_BROKEN = "installation_broken"
    ALREADY_RUNNING = "already_running"
    OTHER = "other"


class SetupFailure(Exception):
    """A failed set-up, in words for the artist: ``summary`` for a view that shows the log's
    path on its own, ``message`` (the summary and the log's path) everywhere else."""

    def __init__(
        self,
        kind: FailureKind,
        summary: str,
        log_path: Path,
        *,
        can_retry: bool,
        can_continue_without_gpu: bool = False,
        message: str | None = None,
    ) -> None:
        self.kind = kind
        self.summary = summary
        self.message = message or f"{summary}\n\nDetails are in the log: {log_path}"
        self.log_path = log_path
        self.can_retry = can_retry
        self.can_continue_without_gpu = can_continue_without_gpu
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"SetupFailure({self.kind.name}, {self.message!r})"


_DISK_FULL = re.compile(
    r"no space left on device|os error 28\b|not enough space on the disk|os error 112\b"
    r"|disk quota exceeded|os error 122\b",
    re.IGNORECASE,
)
_OFFLINE = re.compile(
    r"dns error|failed to lookup address|name or service not known|no such host is known"
    r"|temporary failure in name resolution|tcp connect error|connection refused"
    r"|actively refused|connection reset|forcibly closed|connection closed|connection aborted"
    r"|network is unreachable|no route to host|timed out|network timeout|error sending request"
    r"|os error (?:10050|10051|10054|10060|10061|10065|11001|11002|11004|101|104|110|111|113)\b"
    r"|invalid peer certificate|certificate verify failed|unknown ?issuer|tls handshake"
    r"|because the network was disabled",
    re.IGNORECASE,
)
_NOT_FOUND = re.compile(r"no solution found|not found in the package registry", re.IGNORECASE)
_TORCH = re.compile(r"\btorch(vision|audio)?\b", re.IGNORECASE)


def classify(output: str) -> FailureKind:
    """The kind of failure uv's output shows."""
    if _DISK_FULL.search(output):
        return FailureKind.DISK_FULL
    if _OFFLINE.search(output):
        return FailureKind.OFFLINE
    if _NOT_FOUND.search(output) and _TORCH.search(output):
        return FailureKind.GPU_BUILD_MISSING
    return FailureKind.OTHER


def failure_for(
    kind: FailureKind,
    log_path: Path,
    *,
    installation: Installation | None = None,
    variant: TorchVariant | None = None,
) -> SetupFailure:
    """The artist's message for a kind of failure; every one names the log."""
    retry, without_gpu = True, False
    if kind is FailureKind.OFFLINE:
        text = (
            "charstudio couldn't reach the download server. Check that this computer is "
            "connected to the internet (and that no firewall or proxy blocks charstudio), then "
            "click Retry. What was already downloaded is kept."
        )
    elif kind is FailureKind.DISK_FULL:
        where = f" (the drive with {installation.home})" if installation else ""
        text = (
            "There isn't enough free disk space to install charstudio's components"
            f"{where}. They need several gigabytes. Free up some space, then click Retry."
        )
    elif kind is FailureKind.DRIVER_TOO_OLD:
        driver = variant.driver if variant and variant.driver else "installed"
        needed = variant.min_driver if variant and variant.min_driver else "a newer one"
        card = f" for your {variant.gpu_label}" if variant and variant.gpu_label else ""
        text = (
            f"Your NVIDIA graphics driver ({driver}) is too old for the GPU version of PyTorch"
            f"{card}: it needs driver {needed} or newer. Update the driver with the NVIDIA app "
            "or from NVIDIA's website, then click Retry. Or continue without the GPU: "
            "charstudio works, but generating and training are very slow."
        )
        without_gpu = True
    elif kind is FailureKind.GPU_BUILD_MISSING:
        cuda = f" for CUDA {variant.cuda}" if variant and variant.cuda else ""
        text = (
            f"The download server has no PyTorch build{cuda} for this version of charstudio. "
            "Click Retry later, or continue without the GPU (very slow) until an update of "
            "charstudio fixes this."
        )
        without_gpu = True
    elif kind is FailureKind.UV_BROKEN:
        text = (
            "charstudio's installation is damaged: its setup tool (uv) is missing or cannot "
            "run. Please reinstall charstudio."
        )
        retry = False
    elif kind is FailureKind.ALREADY_RUNNING:
        text = (
            "charstudio is already being set up in another window. It opens by itself when "
            "that is done."
        )
    elif kind is FailureKind.INSTALLATION_BROKEN:
        text = "charstudio's installation is incomplete. Please reinstall charstudio."
        retry = False
    else:
        return SetupFailure(
            kind,
            "Setting up charstudio failed.",
            log_path,
            can_retry=True,
            message=f"Setting up charstudio failed; details in {log_path}",
        )
    return SetupFailure(kind, text, log_path, can_retry=retry, can_continue_without_gpu=without_gpu)
