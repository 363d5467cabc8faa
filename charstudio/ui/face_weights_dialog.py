"""Getting the face recognizer's weights: download them once, or use a copy the artist has.

The download or copy runs on a thread of its own (the artist may keep culling meanwhile) and
only a file with the published checksum ends up in place (see
:mod:`charstudio.analysis.weights`). Tests pass a fake ``download`` function: nothing here
goes online unless the artist clicks Download.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QThread, Signal
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from charstudio.analysis import weights
from charstudio.analysis.view import describe_weights_error, install_weights_file
from charstudio.jobs.protocol import CancelToken
from charstudio.ui.dialog_folders import start_folder

# The long work: (progress(done_bytes, total_bytes | None), cancel token) -> installed file.
Work = Callable[[Callable[[int, int | None], None], CancelToken], Path]
DownloadFn = Callable[..., Path]  # download_weights(dest, *, progress=, cancel=)
MIB = 2**20


class _WeightsTask(QThread):
    progressed = Signal(object, object)  # bytes done, total (None: unknown); may pass 2**31
    succeeded = Signal(str)  # the installed file
    failed = Signal(str)  # a sentence for the artist

    def __init__(self, work: Work) -> None:
        # No parent: a dialog deleted while a download runs must not take the running thread
        # with it (that aborts the process). _RUNNING keeps the task until its thread ends.
        super().__init__()
        self.work = work
        self.token = CancelToken()
        _RUNNING.add(self)
        self.finished.connect(lambda: _RUNNING.discard(self))

    def run(self) -> None:
        try:
            path = self.work(lambda done, total: self.progressed.emit(done, total), self.token)
        except Exception as exc:  # every failure becomes a message, never a crash
            self.failed.emit(describe_weights_error(exc))
        else:
            self.succeeded.emit(str(path))


_RUNNING: set[_WeightsTask] = set()


class FaceWeightsDialog(QDialog):
    """Explains the weights, downloads them with progress and Cancel, or installs a local
    copy after checking it; ``weightsInstalled`` says where they went."""

    weightsInstalled = Signal(str)

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        download: DownloadFn | None = None,
        dest: Path | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Face Recognition Weights")
        self._download = download
        self.dest = Path(dest) if dest is not None else weights.weights_path()
        self._task: _WeightsTask | None = None
        size = weights.EXPECTED_SIZE / MIB

        intro = QLabel(
            "<p>The look-alike tools (sorting by likeness to the picks, the look-alike score, "
            "identity groups) compare faces with a face recognition network, FaceNet "
            "(InceptionResnetV1) trained on VGGFace2. Its weights are not shipped with "
            f"charstudio: they are one {size:.0f} MiB file, downloaded once from the "
            "facenet-pytorch releases on GitHub and checked against its published sha256.</p>"
            "<p>Face detection, the culling flags and duplicate stacks work without it.</p>"
        )
        intro.setWordWrap(True)
        self.location = QLabel()
        self.location.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.download_button = QPushButton(f"Download ({size:.0f} MiB)")
        self.choose_button = QPushButton("Choose a file…")
        self.cancel_button = QPushButton("Cancel")
        self.close_button = QPushButton("Close")
        self.download_button.clicked.connect(self.start_download)
        self.choose_button.clicked.connect(lambda: self.choose_file())
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button.clicked.connect(self.close)

        buttons = QHBoxLayout()
        for button in (self.download_button, self.choose_button, self.cancel_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.location)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self.setMinimumWidth(520)
        self._set_busy(False)
        self._show_location()

    # -- state -----------------------------------------------------------------------------

    def busy(self) -> bool:
        return self._task is not None and self._task.isRunning()

    def _set_busy(self, busy: bool) -> None:
        self.download_button.setEnabled(not busy)
        self.choose_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    def _show_location(self) -> None:
        found = weights.locate_weights()
        if found.is_file():
            self.location.setText(f"Installed: {found}")
        else:
            self.location.setText(f"Not installed yet. They will be saved to {self.dest}")

    # -- work ------------------------------------------------------------------------------

    def start_download(self) -> None:
        download = self._download or weights.download_weights

        def work(progress: Callable[[int, int | None], None], cancel: CancelToken) -> Path:
            return download(self.dest, progress=progress, cancel=cancel)

        self._start(work, "Downloading…")

    def choose_file(self, path: Path | None = None) -> None:
        """Install a copy the artist has (``path``, else asked for), if it checks out."""
        if path is None:
            chosen = QFileDialog.getOpenFileName(
                self,
                "Face recognition weights",
                start_folder(Path.home() / "Downloads"),
                f"VGGFace2 weights ({weights.WEIGHTS_FILE_NAME} *.pt *.pth);;All files (*)",
            )[0]
            if not chosen:
                return
            path = Path(chosen)
        source = path

        def work(progress: Callable[[int, int | None], None], cancel: CancelToken) -> Path:
            return install_weights_file(source, self.dest, progress=progress, cancel=cancel)

        self._start(work, f"Checking {source.name}…")

    def cancel(self) -> None:
        if self._task is not None:
            self._task.token.cancel()

    def shutdown(self) -> None:
        """Stop any work and wait for its thread (before the window goes away)."""
        if self._task is not None:
            self._task.token.cancel()
            self._task.wait()

    def _start(self, work: Work, text: str) -> None:
        if self.busy():
            return
        task = _WeightsTask(work)
        task.progressed.connect(self._progressed)
        task.succeeded.connect(self._succeeded)
        task.failed.connect(self._failed)
        self._task = task
        self.progress.setRange(0, 0)  # busy until the size is known
        self.progress.setVisible(True)
        self.status.setStyleSheet("")
        self.status.setText(text)
        self._set_busy(True)
        task.start()

    def _progressed(self, done: int, total: int | None) -> None:
        if total:
            self.progress.setRange(0, max(1, total // 1024))
            self.progress.setValue(min(done, total) // 1024)
            self.status.setText(f"{done / MIB:.1f} of {total / MIB:.1f} MiB")
        else:
            self.status.setText(f"{done / MIB:.1f} MiB")

    def _succeeded(self, path: str) -> None:
        self._set_busy(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.status.setStyleSheet("color: #4caf50")
        self.status.setText(
            f"Checksum verified: these are the published VGGFace2 weights, installed at {path}. "
            "Faces are analyzed again to add their embeddings."
        )
        self._show_location()
        self.weightsInstalled.emit(path)

    def _failed(self, message: str) -> None:
        self._set_busy(False)
        self.progress.setVisible(False)
        self.status.setStyleSheet("color: #e57373")
        self.status.setText(message)
        self._show_location()

    def done(self, result: int) -> None:
        # Closing (Close, Esc, the title bar) stops a download: its thread ends at the next
        # chunk, and the dialog object (owned by the window) outlives it.
        self.cancel()
        super().done(result)
