"""Guards against the PySide6 release whose painter calls leak references to None.

PySide6 6.12.0 drops a reference to None on every QPainter.setBrush(QColor) and
setPen(Qt.NoPen), and one to True on every Signal.emit(); on Python 3.11 the interpreter
aborts after a few thousand painted cells or emitted signals.
"""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QImage, QPainter
app = QGuiApplication([])
image = QImage(64, 64, QImage.Format_RGB32)
painter = QPainter(image)
before = sys.getrefcount(None)
for _ in range(20000):
    painter.setBrush(QColor(200, 40, 40))
    painter.setPen(Qt.NoPen)
painter.end()
class Emitter(QObject):
    ping = Signal()
emitter = Emitter()
true_before = sys.getrefcount(True)
for _ in range(20000):
    emitter.ping.emit()
print(before - sys.getrefcount(None), true_before - sys.getrefcount(True))
"""


def test_painting_and_signals_do_not_leak_references() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CODE],
        capture_output=True,
        text=True,
        env={"QT_QPA_PLATFORM": "offscreen", "PATH": ""},
    )
    assert result.returncode == 0, result.stderr[-500:]
    # A handful of references may come and go; a leak loses one per call.
    none_lost, true_lost = (int(v) for v in result.stdout.split())
    assert abs(none_lost) < 100
    assert abs(true_lost) < 100
