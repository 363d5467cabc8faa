"""Grid responsiveness on a generated 10,000-image project (offscreen Qt).

    python benchmarks/grid_bench.py [--count 10000]

Measures, for charstudio's grid and, in the same run, for a baseline grid that decodes
thumbnails on the GUI thread (what a plain QListWidget with icons does):
  - time to first painted grid after opening the project;
  - GUI-thread stalls while scrolling from top to bottom as thumbnails load (a 2 ms timer
    records how late it fires: the longest gap is the worst stall);
  - key-press-to-committed-and-repainted latency of a decision (P/X on the focused image):
    from the key press until the catalog row is committed and the changed cell is painted.
Targets (issue 3): first paint < 1 s; no stall > 50 ms; decision latency median < 16 ms.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image, PngImagePlugin
from PySide6.QtCore import QElapsedTimer, QEvent, QObject, QSettings, Qt, QTimer
from PySide6.QtGui import QImageReader, QPixmap
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from charstudio.catalog import Project
from charstudio.catalog.importer import import_images
from charstudio.jobs import run_job
from charstudio.ui.image_grid import ImageGridModel
from charstudio.ui.main_window import MainWindow


def make_project(root: Path, count: int) -> Path:
    folder = root / "project"
    rng = random.Random(1)
    with Project.create(folder, "Bench") as project:
        for n in range(count):
            small = Image.new("RGB", (2, 2))
            small.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(4)])
            image = small.resize((384, 384), Image.BILINEAR)
            info = PngImagePlugin.PngInfo()
            info.add_text("parameters", f"portrait\nSteps: 30, Sampler: Euler a, Seed: {n}")
            image.save(project.images_dir / f"{n:05}.png", pnginfo=info, compress_level=1)
        report = run_job(import_images(project, [project.images_dir]))
        assert report.added == count, report.to_json()
    return folder


class PaintWatch(QObject):
    def __init__(self) -> None:
        super().__init__()
        self.painted = False

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Paint:
            self.painted = True
        return False


class SyncModel(ImageGridModel):
    """Baseline: thumbnails decoded on the GUI thread, straight from the image files."""

    def data(self, index, role=Qt.DisplayRole):  # type: ignore[override]
        if role == Qt.DecorationRole and index.isValid() and self.project is not None:
            image_id = self.id_at(index.row())
            pixmap = self._pixmaps.get(image_id)
            if pixmap is None:
                reader = QImageReader(str(self.project.file_path(self.record(image_id).path)))
                reader.setScaledSize(reader.size().scaled(320, 320, Qt.KeepAspectRatio))
                pixmap = QPixmap.fromImage(reader.read())
                self._pixmaps[image_id] = pixmap
            return pixmap
        return super().data(index, role)


def wait(app: QApplication, ms: int) -> None:
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        app.processEvents()


def measure(app: QApplication, root: Path, settings_path: Path, sync: bool) -> dict[str, float]:
    settings = QSettings(str(settings_path), QSettings.IniFormat)
    start = time.perf_counter()
    window = MainWindow(settings)
    if sync:
        window.model = SyncModel(window)
        window.grid.setModel(window.model)
        window.grid.selectionModel().currentChanged.connect(lambda *_: window._show_info())
    window.resize(1600, 1000)
    watch = PaintWatch()
    window.grid.viewport().installEventFilter(watch)
    window.open_project(root)
    window.show()
    while not watch.painted:
        app.processEvents()
    first_paint = time.perf_counter() - start

    # Stalls: a 2 ms timer stamps the GUI thread while the view scrolls to the end.
    gaps: list[float] = []
    clock = QElapsedTimer()
    clock.start()
    last = [clock.nsecsElapsed()]

    def tick() -> None:
        now = clock.nsecsElapsed()
        gaps.append((now - last[0]) / 1e6)
        last[0] = now

    timer = QTimer()
    timer.setInterval(2)
    timer.timeout.connect(tick)
    timer.start()
    bar = window.grid.verticalScrollBar()
    step = max(1, window.grid.viewport().height() // 2)
    scroll_start = time.perf_counter()
    while bar.value() < bar.maximum():
        bar.setValue(bar.value() + step)
        wait(app, 16)  # one frame per scroll step, like a held PageDown
    scroll_s = time.perf_counter() - scroll_start
    timer.stop()

    # Decision latency: key press → catalog commit → repaint of the cell.
    window.activateWindow()
    window.grid.setFocus()
    window._focus_row(window.model.rowCount() - 200)
    latencies = []
    for n in range(100):
        key = Qt.Key_P if n % 2 == 0 else Qt.Key_X
        t0 = time.perf_counter()
        QTest.keyClick(window.grid, key)  # the decision is committed when this returns
        app.sendPostedEvents()
        app.processEvents()  # paints the cell that dataChanged marked dirty
        latencies.append((time.perf_counter() - t0) * 1000)
        QTest.keyClick(window.grid, Qt.Key_Right)
        app.processEvents()
    window.close()
    gaps.sort()
    return {
        "first_paint_s": first_paint,
        "max_stall_ms": gaps[-1] if gaps else 0.0,
        "p99_gap_ms": gaps[int(len(gaps) * 0.99)] if gaps else 0.0,
        "scroll_s": scroll_s,
        "decision_median_ms": statistics.median(latencies),
        "decision_p95_ms": sorted(latencies)[94],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=10_000)
    args = parser.parse_args()
    app = QApplication.instance() or QApplication(sys.argv)
    tmp = Path(tempfile.mkdtemp(prefix="charstudio-grid-"))
    try:
        t0 = time.perf_counter()
        root = make_project(tmp, args.count)
        print(f"generated and imported {args.count} images in {time.perf_counter() - t0:.1f} s")
        results = {}
        for name, sync in (("baseline (GUI-thread decode)", True), ("charstudio", False)):
            shutil.rmtree(root / "cache", ignore_errors=True)  # both start with no thumbnails
            results[name] = measure(app, root, tmp / f"{sync}.ini", sync)
        print(
            f"{'':32}{'first paint':>12}{'max stall':>11}{'p99 gap':>9}{'scroll':>8}"
            f"{'decision med':>14}{'p95':>7}"
        )
        for name, r in results.items():
            print(
                f"{name:32}{r['first_paint_s']:>10.3f} s{r['max_stall_ms']:>8.1f} ms"
                f"{r['p99_gap_ms']:>6.1f} ms{r['scroll_s']:>6.1f} s"
                f"{r['decision_median_ms']:>11.2f} ms{r['decision_p95_ms']:>5.1f} ms"
            )
        ours = results["charstudio"]
        print(
            f"targets: first paint < 1 s: {'met' if ours['first_paint_s'] < 1 else 'NOT met'}; "
            f"no stall > 50 ms: {'met' if ours['max_stall_ms'] <= 50 else 'NOT met'}; "
            f"decision median < 16 ms: {'met' if ours['decision_median_ms'] < 16 else 'NOT met'}"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
