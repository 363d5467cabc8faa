"""The right panel: everything known about the focused image."""

from __future__ import annotations

import html

from PySide6.QtCore import QUrl, Signal
from PySide6.QtWidgets import QTextBrowser, QVBoxLayout, QWidget

from charstudio.catalog import Decision, ImageRecord


def _row(label: str, value: object) -> str:
    if value in (None, "", {}):
        return ""
    return f"<tr><td style='color:#999;padding-right:8px'>{label}</td><td>{html.escape(str(value))}</td></tr>"  # noqa: E501


WEIGHTS_LINK = "charstudio:face-weights"


class InfoPanel(QWidget):
    weightsRequested = Signal()  # the "get the weights" link of the Face section

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.text = QTextBrowser()
        self.text.setOpenLinks(False)
        self.text.anchorClicked.connect(self._link)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.text)
        self.show_image(None)

    def show_image(
        self,
        record: ImageRecord | None,
        decision: Decision | None = None,
        history: list[dict] | None = None,
        file_path: str = "",
        missing: bool = False,
        face: list[tuple[str, str]] | None = None,
        weights_link: bool = False,
    ) -> None:
        """``face``: (label, value) lines from the face analysis; ``weights_link`` adds a
        link to get the recognizer's weights (the look-alike score needs them)."""
        if record is None:
            self.text.setHtml("<p style='color:#999'>No image selected.</p>")
            return
        sampler = record.sampler or ""
        if record.schedule_type and record.schedule_type != "Automatic":
            sampler = f"{sampler} ({record.schedule_type})"
        parts = ["<h4>Prompt</h4>", f"<p>{html.escape(record.prompt or '—')}</p>"]
        if record.negative_prompt:
            parts += ["<h4>Negative prompt</h4>", f"<p>{html.escape(record.negative_prompt)}</p>"]
        rows = [
            _row("Seed", record.seed),
            _row("Sampler", sampler),
            _row("Steps", record.steps),
            _row("CFG scale", record.cfg_scale),
            _row("Size", record.size or f"{record.width}x{record.height}"),
            _row("Model", record.model),
            _row("Model hash", record.model_hash),
            _row("Clip skip", record.clip_skip),
        ]
        rows += [_row(f"Sweep {axis}", value) for axis, value in record.sweep.items()]
        rows += [_row(key, value) for key, value in record.extras.items()]
        rows.append(_row("File", file_path + ("  (missing)" if missing else "")))
        rows.append(_row("Pixels", f"{record.width}×{record.height} {record.format}"))
        parts.append("<h4>Parameters</h4><table>" + "".join(rows) + "</table>")
        if decision is not None:
            state = decision.flag if decision.flag != "none" else "unflagged"
            if decision.reject_reason:
                state += f" ({decision.reject_reason})"
            stars = "★" * decision.stars or "no stars"
            parts.append(
                f"<h4>Decision</h4><p>{state} · {stars} · {decision.color or 'no label'}</p>"
            )
        if face:
            rows = "".join(_row(label, value) for label, value in face)
            link = (
                f"<p><a href='{WEIGHTS_LINK}'>Get the face recognition weights…</a></p>"
                if weights_link
                else ""
            )
            parts.append(f"<h4>Face</h4><table>{rows}</table>{link}")
        if history:
            items = "".join(
                f"<li>{html.escape(h['at'][:19].replace('T', ' '))}: {html.escape(h['label'])}</li>"
                for h in reversed(history)
            )
            parts.append(f"<h4>History</h4><ul>{items}</ul>")
        self.text.setHtml("".join(parts))

    def _link(self, url: QUrl) -> None:
        if url.toString() == WEIGHTS_LINK:
            self.weightsRequested.emit()
