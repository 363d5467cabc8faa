"""Which PyTorch build fits this computer's NVIDIA GPU: uv's ``--torch-backend`` value.

``nvidia-smi`` (installed with every NVIDIA driver) reports each GPU's name, the driver
version, the memory and the compute capability. The pick is the newest CUDA build, among those
PyTorch publishes for the pinned torch, that the driver can run and that is compiled for the
GPU's architecture; anything else gets the CPU build, with a reason in plain words.

Standard library only: the Windows first run calls this before the environment exists.
"""

from __future__ import annotations

import enum
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

CC = tuple[int, int]  # a compute capability, (major, minor)

# ── The tables ───────────────────────────────────────────────────────────────────────────────
#
# The oldest NVIDIA driver each CUDA build runs on, as (Windows, Linux). The numbers are uv's
# own (crates/uv-torch/src/backend.rs in astral-sh/uv: WINDOWS_CUDA_VERSIONS and
# LINUX_CUDA_DRIVERS, unchanged through uv 0.13), which come from NVIDIA's CUDA Toolkit release
# notes, "minimum required driver version for CUDA minor version compatibility": every CUDA 13.x
# needs driver 580 or newer; every 12.x needs 528.33 (Windows) / 525.60.13 (Linux); 11.1 to
# 11.8 need 452.39 / 450.80.02.
MIN_DRIVER: Mapping[str, tuple[str, str]] = {
    "cu132": ("580", "580"),
    "cu130": ("580", "580"),
    "cu129": ("528.33", "525.60.13"),
    "cu128": ("528.33", "525.60.13"),
    "cu126": ("528.33", "525.60.13"),
    "cu124": ("528.33", "525.60.13"),
    "cu121": ("528.33", "525.60.13"),
    "cu118": ("452.39", "450.80.02"),
}


@dataclass(frozen=True)
class CudaBuild:
    """One CUDA build of torch: uv's backend name, the CUDA version, the GPU architectures it
    has compiled kernels for, and the architecture of its PTX (JIT-compiled by the driver for
    newer GPUs), if any."""

    backend: str
    cuda: str
    archs: tuple[CC, ...]
    ptx: CC | None = None
    ptx_on_windows: bool = False

    def runs_on(self, cc: CC, *, windows: bool) -> bool:
        # A kernel compiled for X.y runs on every X.z with z >= y (same major version).
        if any(major == cc[0] and minor <= cc[1] for major, minor in self.archs):
            return True
        return self.ptx is not None and cc >= self.ptx and (self.ptx_on_windows or not windows)


# The CUDA builds PyTorch publishes for the torch pinned in requirements/lock.txt.
# UPDATE THIS WHEN TORCH IS RE-PINNED (tests/test_torch_variant.py compares PINNED_TORCH with
# the lock). It cannot be checked from here: the index that serves these builds is not reachable
# from the machines that write this code. Sources: PyTorch's RELEASE.md ("PyTorch CUDA Support
# Matrix", architectures for Linux x86 and Windows builds) and the release's CUDA-matrix RFC.
# torch 2.15 ships CUDA 13.0 and 13.2 only (pytorch/pytorch issue 190385 drops 12.6, the last
# build for Maxwell/Pascal/Volta); both are compiled for Turing 7.5, Ampere 8.0/8.6, Hopper 9.0
# and Blackwell 10.0/12.0, with PTX for 12.0 on Linux only. For comparison, torch 2.12–2.14
# also shipped ``CudaBuild("cu126", "12.6", ((5, 0), (6, 0), (7, 0), (7, 5), (8, 0), (8, 6),
# (9, 0)))``, and RTX 50xx (Blackwell, 12.0) needs cu128 or newer.
PINNED_TORCH = "2.15"
_CUDA13_ARCHS: tuple[CC, ...] = ((7, 5), (8, 0), (8, 6), (9, 0), (10, 0), (12, 0))
TORCH_CUDA_BUILDS: tuple[CudaBuild, ...] = (
    CudaBuild("cu132", "13.2", _CUDA13_ARCHS, ptx=(12, 0)),
    CudaBuild("cu130", "13.0", _CUDA13_ARCHS, ptx=(12, 0)),
)

# ── Detection ────────────────────────────────────────────────────────────────────────────────

SMI_FIELDS = "name,driver_version,memory.total,compute_cap"
SMI_FIELDS_OLD = "name,driver_version,memory.total"  # drivers before compute_cap existed
SMI_TIMEOUT_S = 20.0
# Where drivers before 2019 put nvidia-smi on Windows (newer ones put it in System32, on PATH).
WINDOWS_SMI_FALLBACK = Path(r"C:\Program Files\NVIDIA Corporation\NVSMI\nvidia-smi.exe")
CREATE_NO_WINDOW = 0x08000000

_FAMILIES = {5: "Maxwell", 6: "Pascal", 7: "Volta", 8: "Ampere", 9: "Hopper", 10: "Blackwell"}


def _family(cc: CC) -> str:
    if cc == (7, 5):
        return "Turing"
    if cc == (8, 9):
        return "Ada Lovelace"
    if cc[0] >= 12:
        return "Blackwell"
    return _FAMILIES.get(cc[0], f"compute capability {cc[0]}.{cc[1]}")


class Outcome(enum.Enum):
    CUDA = "cuda"  # a CUDA build fits
    NO_GPU = "no_gpu"  # no nvidia-smi: no NVIDIA driver, so no NVIDIA GPU to use
    SMI_FAILED = "smi_failed"  # nvidia-smi is there but did not answer usefully
    UNSUPPORTED_GPU = "unsupported_gpu"  # no published build is compiled for this GPU
    DRIVER_TOO_OLD = "driver_too_old"  # a build fits the GPU, but the driver is older than it needs
    CPU_CHOSEN = "cpu_chosen"  # the artist asked for the CPU build


@dataclass(frozen=True)
class Gpu:
    name: str
    driver: str
    memory_mib: int | None
    compute_capability: CC | None

    @property
    def label(self) -> str:
        if self.memory_mib is None:
            return self.name
        return f"{self.name} ({round(self.memory_mib / 1024)} GB)"


@dataclass(frozen=True)
class TorchVariant:
    """What was found and which torch build to install; ``reason`` is for the artist."""

    backend: str
    outcome: Outcome
    reason: str
    gpu_name: str | None = None
    driver: str | None = None
    memory_mib: int | None = None
    compute_capability: CC | None = None
    cuda: str | None = None  # "13.2" when backend is a CUDA build
    min_driver: str | None = None  # for DRIVER_TOO_OLD: the oldest driver that would do

    @property
    def gpu_label(self) -> str | None:
        if self.gpu_name is None:
            return None
        return Gpu(self.gpu_name, self.driver or "", self.memory_mib, None).label

    def without_gpu(self) -> TorchVariant:
        """The CPU build, chosen by the artist (e.g. after "driver too old")."""
        what = self.gpu_label or "the GPU"
        return replace(
            self,
            backend="cpu",
            outcome=Outcome.CPU_CHOSEN,
            cuda=None,
            reason=f"Not using {what}, as you chose → CPU build (slow)",
        )


def _version(text: str) -> tuple[int, ...]:
    if not re.fullmatch(r"\d+(\.\d+)*", text):
        raise ValueError(f"not a driver version: {text!r}")
    return tuple(int(part) for part in text.split("."))


def _optional(field: str) -> str | None:
    field = field.strip()
    return None if not field or field.startswith("[") else field  # "[N/A]", "[Not Supported]"


def parse_smi(output: str, *, with_compute_cap: bool = True) -> list[Gpu]:
    """The GPUs in the output of ``nvidia-smi --query-gpu=SMI_FIELDS
    --format=csv,noheader,nounits`` (``SMI_FIELDS_OLD`` without ``with_compute_cap``);
    ValueError when it is anything else."""
    count = 4 if with_compute_cap else 3
    gpus = []
    for line in output.splitlines():
        if not line.strip():
            continue
        fields = [f.strip() for f in line.rsplit(",", count - 1)]
        if len(fields) != count or not fields[0]:
            raise ValueError(f"unexpected nvidia-smi line: {line!r}")
        _version(fields[1])
        memory = _optional(fields[2])
        cc_text = _optional(fields[3]) if len(fields) == 4 else None
        cc: CC | None = None
        if cc_text is not None:
            major, dot, minor = cc_text.partition(".")
            if not (dot and major.isdigit() and minor.isdigit()):
                raise ValueError(f"not a compute capability: {cc_text!r}")
            cc = (int(major), int(minor))
        if memory is not None and not memory.isdigit():
            raise ValueError(f"not a memory size: {memory!r}")
        gpus.append(Gpu(fields[0], fields[1], int(memory) if memory else None, cc))
    if not gpus:
        raise ValueError("nvidia-smi listed no GPU")
    return gpus


def _cpu(
    outcome: Outcome, reason: str, gpu: Gpu | None = None, *, min_driver: str | None = None
) -> TorchVariant:
    return TorchVariant(
        backend="cpu",
        outcome=outcome,
        reason=reason,
        gpu_name=gpu.name if gpu else None,
        driver=gpu.driver if gpu else None,
        memory_mib=gpu.memory_mib if gpu else None,
        compute_capability=gpu.compute_capability if gpu else None,
        min_driver=min_driver,
    )


def choose_for_gpu(
    gpu: Gpu, *, windows: bool, builds: Sequence[CudaBuild] = TORCH_CUDA_BUILDS
) -> TorchVariant:
    """The torch build for one GPU (see the module docstring)."""
    cc = gpu.compute_capability
    fitting = [b for b in builds if cc is None or b.runs_on(cc, windows=windows)]
    if not fitting:
        assert cc is not None
        oldest = min(arch for b in builds for arch in b.archs)
        if cc < oldest:
            why = (
                f"is too old for PyTorch {PINNED_TORCH} (it is {_family(cc)}, compute capability "
                f"{cc[0]}.{cc[1]}; PyTorch needs {oldest[0]}.{oldest[1]}, {_family(oldest)}, "
                "or newer)"
            )
        else:
            why = (
                f"is newer than PyTorch {PINNED_TORCH} supports (compute capability "
                f"{cc[0]}.{cc[1]}); a newer charstudio will support it"
            )
        return _cpu(Outcome.UNSUPPORTED_GPU, f"{gpu.label} {why} → CPU build (slow)", gpu)
    driver = _version(gpu.driver)
    column = 0 if windows else 1
    usable = [b for b in fitting if driver >= _version(MIN_DRIVER[b.backend][column])]
    if not usable:
        needed = min((MIN_DRIVER[b.backend][column] for b in fitting), key=_version)
        reason = (
            f"{gpu.label}: driver {gpu.driver} is too old; PyTorch {PINNED_TORCH} needs "
            f"driver {needed} or newer"
        )
        return _cpu(Outcome.DRIVER_TOO_OLD, reason, gpu, min_driver=needed)
    best = max(usable, key=lambda b: _version(b.cuda))
    return TorchVariant(
        backend=best.backend,
        outcome=Outcome.CUDA,
        reason=f"{gpu.label}, driver {gpu.driver} → CUDA {best.cuda} build",
        gpu_name=gpu.name,
        driver=gpu.driver,
        memory_mib=gpu.memory_mib,
        compute_capability=cc,
        cuda=best.cuda,
    )


def choose(
    gpus: Sequence[Gpu], *, windows: bool, builds: Sequence[CudaBuild] = TORCH_CUDA_BUILDS
) -> TorchVariant:
    """The build for the best of several GPUs: one a CUDA build fits, the most memory first."""
    ranked = sorted(
        (choose_for_gpu(gpu, windows=windows, builds=builds) for gpu in gpus),
        key=lambda v: (v.outcome is not Outcome.CUDA, -(v.memory_mib or 0)),
    )
    return ranked[0]


class SmiRunner:
    """Runs nvidia-smi: ``(argv, timeout) -> (exit code, output)``; raises OSError or
    subprocess.TimeoutExpired like ``subprocess.run``."""

    def __call__(self, argv: Sequence[str], timeout: float) -> tuple[int, str]:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            encoding="utf-8",
            errors="replace",
            creationflags=CREATE_NO_WINDOW if os.name == "nt" else 0,
            check=False,
        )
        return done.returncode, done.stdout


def find_nvidia_smi(
    environ: Mapping[str, str] | None = None, *, windows: bool | None = None
) -> str | None:
    env = os.environ if environ is None else environ
    if windows is None:
        windows = os.name == "nt"
    found = shutil.which("nvidia-smi", path=env.get("PATH", os.defpath))
    if found is None and windows and WINDOWS_SMI_FALLBACK.is_file():
        found = str(WINDOWS_SMI_FALLBACK)
    return found


def _first_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[0][:160] if lines else "no output"


def detect(
    *,
    environ: Mapping[str, str] | None = None,
    windows: bool | None = None,
    run: Callable[[Sequence[str], float], tuple[int, str]] | None = None,
    timeout: float = SMI_TIMEOUT_S,
    builds: Sequence[CudaBuild] = TORCH_CUDA_BUILDS,
) -> TorchVariant:
    """Ask nvidia-smi about the GPUs and choose the torch build; never raises."""
    if windows is None:
        windows = os.name == "nt"
    smi = find_nvidia_smi(environ, windows=windows)
    if smi is None:
        return _cpu(Outcome.NO_GPU, "No NVIDIA graphics card found → CPU build (slow)")
    runner = run or SmiRunner()
    query = ["--format=csv,noheader,nounits"]
    with_compute_cap = True
    try:
        code, output = runner([smi, f"--query-gpu={SMI_FIELDS}", *query], timeout)
        if code != 0:  # a driver too old to know compute_cap refuses the whole query
            old_code, old_output = runner([smi, f"--query-gpu={SMI_FIELDS_OLD}", *query], timeout)
            if old_code == 0:
                code, output, with_compute_cap = old_code, old_output, False
    except subprocess.TimeoutExpired:
        return _cpu(Outcome.SMI_FAILED, "nvidia-smi did not answer in time → CPU build (slow)")
    except OSError as error:
        return _cpu(Outcome.SMI_FAILED, f"nvidia-smi could not run ({error}) → CPU build (slow)")
    if code != 0:
        return _cpu(
            Outcome.SMI_FAILED,
            f"nvidia-smi failed (exit code {code}: {_first_line(output)}) → CPU build (slow)",
        )
    try:
        gpus = parse_smi(output, with_compute_cap=with_compute_cap)
    except ValueError:
        return _cpu(
            Outcome.SMI_FAILED,
            f"nvidia-smi's answer was not understood ({_first_line(output)}) → CPU build (slow)",
        )
    return choose(gpus, windows=windows, builds=builds)
