"""Import throughput: metadata + sha256 for N generated 512×512 PNGs with A1111 infotext.

    python benchmarks/import_bench.py [--count 600] [--workers 2]

Prints images/second for charstudio's importer (catalog rows included) and, measured in the
same run on the same files, a baseline that opens every file with Pillow, decodes it fully
and hashes it on one thread, which is what a straightforward importer does.
Target (issue 2): ≥ 300 images/s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, PngImagePlugin

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from charstudio.catalog import Project
from charstudio.catalog.importer import import_images
from charstudio.jobs import run_job

INFOTEXT = (
    "an extreme closeup front shot photo of a 25yo French woman, chin length straight black "
    "hair in a bob cut with bangs, (neutral gray background:1.3), neutral face expression\n"
    "Negative prompt: jewellery, clothes\n"
    "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: {seed}, "
    "Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1"
)


def make_images(folder: Path, count: int) -> int:
    """PNGs that compress like generated portraits: smooth shapes plus fine noise."""
    rng = random.Random(0)
    total = 0
    for n in range(count):
        small = Image.frombytes("RGB", (32, 32), rng.randbytes(32 * 32 * 3))
        image = small.resize((512, 512), Image.BICUBIC)
        noise = Image.frombytes("RGB", (512, 512), rng.randbytes(512 * 512 * 3))
        image = Image.blend(image, noise, 0.04)
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", INFOTEXT.format(seed=1000 + n))
        path = folder / f"{n:05}-{1000 + n}.png"
        image.save(path, pnginfo=info)
        total += path.stat().st_size
    return total


def baseline(files: list[Path]) -> float:
    start = time.perf_counter()
    for path in files:
        data = path.read_bytes()
        hashlib.sha256(data).hexdigest()
        with Image.open(path) as image:
            image.load()
            image.info.get("parameters")
    return len(files) / (time.perf_counter() - start)


def charstudio_import(folder: Path, project_dir: Path, workers: int) -> tuple[float, int]:
    with Project.create(project_dir, "Bench") as project:
        start = time.perf_counter()
        report = run_job(import_images(project, [folder], workers=workers))
        elapsed = time.perf_counter() - start
    return report.added / elapsed, report.added


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="charstudio-bench-"))
    try:
        folder = tmp / "images"
        folder.mkdir()
        size = make_images(folder, args.count)
        files = sorted(folder.glob("*.png"))
        print(f"{args.count} PNGs of 512×512, {size / args.count / 1024:.0f} KiB on average")
        # Read every file once so both contenders start from a warm page cache.
        for path in files:
            path.read_bytes()
        base = baseline(files)
        ours, added = charstudio_import(folder, tmp / "project", args.workers)
        print(f"baseline (Pillow full decode + sha256, 1 thread): {base:8.1f} images/s")
        print(f"charstudio import ({args.workers} workers, catalog rows): {ours:8.1f} images/s")
        print(f"speed-up: {ours / base:.2f}x; imported {added}")
        print(f"target ≥ 300 images/s: {'met' if ours >= 300 else 'NOT met'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
