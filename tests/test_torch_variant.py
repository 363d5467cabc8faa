"""Choosing the torch build (uv's --torch-backend) from what nvidia-smi says."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from charstudio.install import torch_variant
from charstudio.install.environment import LOCK_FILE
from charstudio.install.torch_variant import (
    MIN_DRIVER,
    PINNED_TORCH,
    TORCH_CUDA_BUILDS,
    CudaBuild,
    Gpu,
    Outcome,
    choose,
    detect,
    parse_smi,
)

RTX_3060 = "NVIDIA GeForce RTX 3060, 581.57, 12288, 8.6"
RTX_4090 = "NVIDIA GeForce RTX 4090, 591.44, 24564, 8.9"
RTX_5090 = "NVIDIA GeForce RTX 5090, 581.80, 32607, 12.0"
RTX_2060 = "NVIDIA GeForce RTX 2060, 580.97, 6144, 7.5"
GTX_1080 = "NVIDIA GeForce GTX 1080, 581.57, 8192, 6.1"
TITAN_V = "NVIDIA TITAN V, 581.57, 12288, 7.0"
# torch 2.14's legacy build, to check the choice when an older CUDA build is published too.
CU126 = CudaBuild("cu126", "12.6", ((5, 0), (6, 0), (7, 0), (7, 5), (8, 0), (8, 6), (9, 0)))
WITH_CU126 = (*TORCH_CUDA_BUILDS, CU126)


def smi_standin(folder: Path, output: str, code: int = 0, *, old_driver: bool = False) -> Path:
    """An ``nvidia-smi`` that prints ``output`` (and records its arguments); with
    ``old_driver`` it refuses the compute_cap field like drivers before it existed."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "from pathlib import Path\n"
        "with (Path(__file__).parent / 'smi-calls.txt').open('a') as f:\n"
        "    f.write(' '.join(sys.argv[1:]) + '\\n')\n"
        f"if {old_driver!r} and 'compute_cap' in ' '.join(sys.argv):\n"
        "    print('Field \"compute_cap\" is not a valid field to query.')\n"
        "    sys.exit(2)\n"
        f"sys.stdout.write({output!r})\n"
        f"sys.exit({code})\n",
        encoding="utf-8",
    )
    script.chmod(0o755)
    return script


def run_detect(
    tmp_path: Path, output: str, code: int = 0, *, old_driver: bool = False
) -> torch_variant.TorchVariant:
    folder = tmp_path / "driver bin ü"
    smi_standin(folder, output, code, old_driver=old_driver)
    return detect(environ={"PATH": str(folder)}, windows=False)


@pytest.mark.parametrize(
    ("line", "windows", "backend", "outcome"),
    [
        (RTX_3060, True, "cu132", Outcome.CUDA),
        (RTX_3060, False, "cu132", Outcome.CUDA),
        (RTX_4090, True, "cu132", Outcome.CUDA),  # Ada 8.9 runs the 8.6 kernels
        (RTX_5090, True, "cu132", Outcome.CUDA),  # Blackwell 12.0
        (RTX_2060, True, "cu132", Outcome.CUDA),  # Turing 7.5, the oldest CUDA 13 supports
        (GTX_1080, True, "cpu", Outcome.UNSUPPORTED_GPU),  # Pascal: no CUDA 13 kernels
        (TITAN_V, False, "cpu", Outcome.UNSUPPORTED_GPU),  # Volta: dropped with CUDA 12.6
        ("NVIDIA GeForce RTX 3060, 566.14, 12288, 8.6", True, "cpu", Outcome.DRIVER_TOO_OLD),
        ("NVIDIA GeForce RTX 5090, 572.16, 32607, 12.0", True, "cpu", Outcome.DRIVER_TOO_OLD),
        ("NVIDIA GeForce RTX 3060, 550.54.15, 12288, 8.6", False, "cpu", Outcome.DRIVER_TOO_OLD),
        ("NVIDIA GeForce RTX 3060, 580.65.06, 12288, 8.6", False, "cu132", Outcome.CUDA),
        ("NVIDIA Future GPU, 640.10, 65536, 15.0", True, "cpu", Outcome.UNSUPPORTED_GPU),
        ("NVIDIA Future GPU, 640.10, 65536, 15.0", False, "cu132", Outcome.CUDA),  # PTX on Linux
    ],
)
def test_pinned_builds_choice(line: str, windows: bool, backend: str, outcome: Outcome) -> None:
    variant = choose(parse_smi(line), windows=windows)
    assert (variant.backend, variant.outcome) == (backend, outcome)


def test_a_published_older_build_serves_older_gpus_and_older_drivers() -> None:
    """With torch 2.14's cu126 published as well: Pascal and Volta get it, and so does a driver
    between 528.33 and 580; Blackwell never does (cu126 has no kernels for it)."""
    pascal = choose(parse_smi(GTX_1080), windows=True, builds=WITH_CU126)
    assert (pascal.backend, pascal.cuda) == ("cu126", "12.6")
    older_driver = choose(
        parse_smi("NVIDIA GeForce RTX 3060, 566.14, 12288, 8.6"), windows=True, builds=WITH_CU126
    )
    assert older_driver.backend == "cu126"
    assert older_driver.reason == "NVIDIA GeForce RTX 3060 (12 GB), driver 566.14 → CUDA 12.6 build"
    blackwell = choose(
        parse_smi("NVIDIA GeForce RTX 5070, 572.16, 12227, 12.0"), windows=True, builds=WITH_CU126
    )
    assert blackwell.outcome is Outcome.DRIVER_TOO_OLD
    assert blackwell.min_driver == "580"
    too_old_for_all = choose(
        parse_smi("NVIDIA GeForce GTX 1080, 512.95, 8192, 6.1"), windows=True, builds=WITH_CU126
    )
    assert (too_old_for_all.outcome, too_old_for_all.min_driver) == (
        Outcome.DRIVER_TOO_OLD,
        "528.33",
    )


def test_reason_texts_for_the_artist() -> None:
    ok = choose(parse_smi(RTX_3060), windows=True)
    assert ok.reason == "NVIDIA GeForce RTX 3060 (12 GB), driver 581.57 → CUDA 13.2 build"
    assert (ok.gpu_name, ok.driver, ok.memory_mib, ok.compute_capability, ok.cuda) == (
        "NVIDIA GeForce RTX 3060",
        "581.57",
        12288,
        (8, 6),
        "13.2",
    )
    old = choose(parse_smi("NVIDIA GeForce RTX 3060, 566.14, 12288, 8.6"), windows=True)
    assert old.driver == "566.14"
    assert old.min_driver == "580"
    assert "566.14" in old.reason and "580" in old.reason
    pascal = choose(parse_smi(GTX_1080), windows=True)
    assert "GTX 1080" in pascal.reason and "Pascal" in pascal.reason and "7.5" in pascal.reason
    assert pascal.reason.endswith("→ CPU build (slow)")


def test_the_gpu_with_a_cuda_build_and_the_most_memory_wins() -> None:
    gpus = parse_smi(f"{GTX_1080}\n{RTX_3060}\nNVIDIA GeForce RTX 3090, 581.57, 24576, 8.6\n")
    variant = choose(gpus, windows=True)
    assert (variant.gpu_name, variant.backend) == ("NVIDIA GeForce RTX 3090", "cu132")


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "\n\n",
        "No devices were found",
        "NVIDIA GeForce RTX 3060, 581.57, 12288",  # three fields where four were asked for
        "NVIDIA GeForce RTX 3060, latest, 12288, 8.6",
        "NVIDIA GeForce RTX 3060, 581.57, twelve, 8.6",
        "NVIDIA GeForce RTX 3060, 581.57, 12288, sm86",
        "\x00\xff binary noise",
    ],
)
def test_parse_smi_rejects_garbage(garbage: str) -> None:
    with pytest.raises(ValueError):
        parse_smi(garbage)


def test_parse_smi_reads_not_available_fields() -> None:
    [gpu] = parse_smi("NVIDIA Graphics Device, 581.57, [N/A], [N/A]\n")
    assert gpu == Gpu("NVIDIA Graphics Device", "581.57", None, None)
    assert choose([gpu], windows=True).backend == "cu132"  # unknown architecture: trust it


def test_detect_runs_nvidia_smi_with_the_query(tmp_path: Path) -> None:
    variant = run_detect(tmp_path, RTX_3060 + "\n")
    assert variant.backend == "cu132"
    calls = (tmp_path / "driver bin ü" / "smi-calls.txt").read_text().splitlines()
    assert calls == [
        "--query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader,nounits"
    ]


def test_detect_without_nvidia_smi_is_the_cpu_build(tmp_path: Path) -> None:
    variant = detect(environ={"PATH": str(tmp_path)}, windows=False)
    assert (variant.backend, variant.outcome) == ("cpu", Outcome.NO_GPU)
    assert variant.reason == "No NVIDIA graphics card found → CPU build (slow)"


@pytest.mark.parametrize(
    ("output", "code", "words"),
    [
        (
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n",
            9,
            "exit code 9",
        ),
        ("No devices were found\n", 6, "exit code 6"),
        ("Segmentation fault\n", 139, "exit code 139"),
        ("<html>not what was asked</html>\n", 0, "not understood"),
    ],
)
def test_detect_when_nvidia_smi_fails(tmp_path: Path, output: str, code: int, words: str) -> None:
    variant = run_detect(tmp_path, output, code)
    assert (variant.backend, variant.outcome) == ("cpu", Outcome.SMI_FAILED)
    assert words in variant.reason


def test_detect_with_a_driver_that_predates_compute_cap(tmp_path: Path) -> None:
    """Old drivers reject the compute_cap field: ask again without it. Such a driver is too old
    for every published build anyway."""
    variant = run_detect(tmp_path, "NVIDIA GeForce GTX 1070, 472.12, 8192\n", old_driver=True)
    assert (variant.outcome, variant.driver, variant.min_driver) == (
        Outcome.DRIVER_TOO_OLD,
        "472.12",
        "580",
    )
    calls = (tmp_path / "driver bin ü" / "smi-calls.txt").read_text().splitlines()
    assert [c.split()[0] for c in calls] == [
        "--query-gpu=name,driver_version,memory.total,compute_cap",
        "--query-gpu=name,driver_version,memory.total",
    ]


def test_detect_survives_a_hanging_or_unstartable_nvidia_smi(tmp_path: Path) -> None:
    smi_standin(tmp_path, RTX_3060)

    def hangs(argv: Sequence[str], timeout: float) -> tuple[int, str]:
        raise subprocess.TimeoutExpired(list(argv), timeout)

    def broken(argv: Sequence[str], timeout: float) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied")

    for runner, words in ((hangs, "did not answer"), (broken, "could not run")):
        variant = detect(environ={"PATH": str(tmp_path)}, windows=False, run=runner)
        assert (variant.backend, variant.outcome) == ("cpu", Outcome.SMI_FAILED)
        assert words in variant.reason


def test_detect_times_out_a_real_hanging_process(tmp_path: Path) -> None:
    script = tmp_path / "nvidia-smi"
    script.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(30)\n", encoding="utf-8")
    script.chmod(0o755)
    variant = detect(environ={"PATH": str(tmp_path)}, windows=False, timeout=0.5)
    assert variant.outcome is Outcome.SMI_FAILED


def test_without_gpu_keeps_what_was_found() -> None:
    old = choose(parse_smi("NVIDIA GeForce RTX 3060, 566.14, 12288, 8.6"), windows=True)
    cpu = old.without_gpu()
    assert (cpu.backend, cpu.outcome, cpu.gpu_name) == ("cpu", Outcome.CPU_CHOSEN, old.gpu_name)
    assert "CPU build" in cpu.reason


def test_driver_table_is_consistent() -> None:
    """Every published build has a driver minimum, CUDA 13 needs 580 on both systems, and the
    minimums never go down from one CUDA version to the next."""
    for build in TORCH_CUDA_BUILDS:
        assert build.backend in MIN_DRIVER
        assert build.backend == "cu" + build.cuda.replace(".", "")
    assert MIN_DRIVER["cu130"] == MIN_DRIVER["cu132"] == ("580", "580")
    assert MIN_DRIVER["cu128"] == ("528.33", "525.60.13")

    def key(backend: str) -> int:
        return int(backend[2:])

    for column in (0, 1):
        ordered = [MIN_DRIVER[b][column] for b in sorted(MIN_DRIVER, key=key)]
        as_tuples = [tuple(int(p) for p in v.split(".")) for v in ordered]
        assert as_tuples == sorted(as_tuples)


def test_the_build_table_matches_the_pinned_torch() -> None:
    """TORCH_CUDA_BUILDS describes PINNED_TORCH's builds: re-pinning torch must update both."""
    if not LOCK_FILE.is_file():
        pytest.skip("no requirements/lock.txt in this checkout")
    match = re.search(r"^torch==(\S+)", LOCK_FILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert match, "the lock pins no torch"
    assert match[1].split("+")[0].startswith(PINNED_TORCH + "."), (
        f"the lock pins torch {match[1]}, torch_variant.TORCH_CUDA_BUILDS describes "
        f"{PINNED_TORCH}: update the table"
    )
