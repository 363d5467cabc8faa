"""Decodes thumbnails off the GUI thread.

Workers produce QImage (safe outside the GUI thread); the model turns them into QPixmap on
the GUI thread when the ``loaded`` signal arrives.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QRunnable, QSize, Qt, QThreadPool, Signal
from PySide6.QtGui import QImage, QImageReader


class _Signals(QObject):
    loaded = Signal(int, QImage)


class _LoadTask(QRunnable):
    def __init__(self, key: int, path: str, size: int, signals: _Signals) -> None:
        super().__init__()
        self.key, self.path, self.size, self.signals = key, path, size, signals

    def run(self) -> None:
        reader = QImageReader(self.path)
        reader.setAutoTransform(True)
        full = reader.size()
        if full.isValid() and max(full.width(), full.height()) > self.size:
            reader.setScaledSize(full.scaled(QSize(self.size, self.size), Qt.KeepAspectRatio))
        image = reader.read()  # a null image when the file is missing or unreadable
        self.signals.loaded.emit(self.key, image)


class ThumbnailLoader(QObject):
    """Loads each requested thumbnail once, on a thread pool."""

    loaded = Signal(int, QImage)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max(1, min(4, QThreadPool.globalInstance().maxThreadCount())))
        self._signals = _Signals()
        self._signals.loaded.connect(self._on_loaded)
        self._pending: set[int] = set()

    def request(self, key: int, path: str, size: int) -> None:
        if key in self._pending:
            return
        self._pending.add(key)
        self._pool.start(_LoadTask(key, path, size, self._signals))

    def _on_loaded(self, key: int, image: QImage) -> None:
        self._pending.discard(key)
        self.loaded.emit(key, image)

    def clear(self) -> None:
        self._pool.clear()
        self._pending.clear()

    def wait(self) -> None:
        self._pool.waitForDone()
