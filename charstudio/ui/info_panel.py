"""The right panel: everything known about the focused image."""

from __future__ import annotations

import html

from PySide6.QtWidgets import QTextBrowser, QVBoxLayout, QWidget

from charstudio.catalog import Decision, ImageRecord


def _row(label: str, value: object) -> str:
    if value in (None, "", {}):
        return ""
    return f"<tr><td style='color:#999;padding-right:8px'>{label}</td><td>{html.escape(str(value))}</td></tr>"  # noqa: E501


class InfoPanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.text = QTextBrowser()
        self.text.setOpenLinks(False)
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
    ) -> None:
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
        if history:
            items = "".join(
                f"<li>{html.escape(h['at'][:19].replace('T', ' '))}: {html.escape(h['label'])}</li>"
                for h in reversed(history)
            )
            parts.append(f"<h4>History</h4><ul>{items}</ul>")
        self.text.setHtml("".join(parts))
