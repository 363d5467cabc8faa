"""Loads thumbnails off the GUI thread, through the project's on-disk thumbnail cache.

Workers produce QImage (safe outside the GUI thread); the model turns them into QPixmap on
the GUI thread when the ``loaded`` signal arrives.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal
from PySide6.QtGui import QImage, QImageReader

from charstudio.metadata.thumbcache import ensure_thumbnail


class _Signals(QObject):
    loaded = Signal(int, QImage)


class _LoadTask(QRunnable):
    def __init__(self, key: int, root: Path, source: Path, sha256: str, signals: _Signals) -> None:
        super().__init__()
        self.key, self.root, self.source, self.sha256 = key, root, source, sha256
        self.signals = signals

    def run(self) -> None:
        try:
            path = ensure_thumbnail(self.root, self.source, self.sha256)
            image = QImageReader(str(path)).read()
        except Exception:  # missing or unreadable source: the grid shows "missing file"
            image = QImage()
        # The loader may have gone away (window closed) while this task ran.
        with contextlib.suppress(RuntimeError):
            self.signals.loaded.emit(self.key, image)


class ThumbnailLoader(QObject):
    """Loads each requested thumbnail once, on a thread pool."""

    loaded = Signal(int, QImage)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        # Leave a core to the GUI thread: on a 2-core machine one worker keeps scrolling smooth.
        cores = QThreadPool.globalInstance().maxThreadCount()
        self._pool.setMaxThreadCount(max(1, min(4, cores - 1)))
        self._signals = _Signals()
        self._signals.loaded.connect(self._on_loaded)
        self._pending: set[int] = set()

    def request(self, key: int, root: Path, source: Path, sha256: str) -> None:
        if key in self._pending:
            return
        self._pending.add(key)
        self._pool.start(_LoadTask(key, root, source, sha256, self._signals))

    def _on_loaded(self, key: int, image: QImage) -> None:
        self._pending.discard(key)
        self.loaded.emit(key, image)

    def clear(self) -> None:
        self._pool.clear()
        self._pending.clear()

    def wait(self) -> None:
        self._pool.waitForDone()
