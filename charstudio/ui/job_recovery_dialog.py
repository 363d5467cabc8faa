"""The questions about unfinished jobs, shown as message boxes: the text and the choices come
from :mod:`charstudio.presenters.job_recovery`; these functions only show them and return the
artist's choice."""

from __future__ import annotations

from html import escape
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QAbstractButton, QMessageBox, QWidget

from charstudio.presenters.job_recovery import (
    Option,
    QuitChoice,
    QuitQuestion,
    RecoveryChoice,
    RecoveryQuestion,
)

__all__ = ["ask_quit", "ask_recovery"]

DESTRUCTIVE = (RecoveryChoice.DISCARD.value, QuitChoice.CANCEL.value)  # set apart by the platform


def _options_html(options: tuple[Option, ...]) -> str:
    return "".join(f"<p><b>{escape(o.label)}</b>: {escape(o.explanation)}</p>" for o in options)


def _ask(
    parent: QWidget | None,
    title: str,
    text: str,
    informative: str,
    options: tuple[Option, ...],
    default: Any,
    escape_choice: Any,
) -> Any:
    box = QMessageBox(QMessageBox.Icon.Question, title, f"<b>{escape(text)}</b>", parent=parent)
    box.setTextFormat(Qt.TextFormat.RichText)  # the informative text follows it
    box.setInformativeText(informative)
    # Wide enough that a job line reads on one line.
    box.setStyleSheet("QLabel#qt_msgbox_informativelabel { min-width: 480px; }")
    buttons: dict[QAbstractButton, Any] = {}
    for option in options:
        role = QMessageBox.ButtonRole.AcceptRole
        if option.choice == escape_choice:
            role = QMessageBox.ButtonRole.RejectRole
        elif option.choice.value in DESTRUCTIVE:
            role = QMessageBox.ButtonRole.DestructiveRole
        button = box.addButton(option.label, role)
        button.setToolTip(option.explanation)
        buttons[button] = option.choice
        if option.choice == default:
            box.setDefaultButton(button)
        if option.choice == escape_choice:
            box.setEscapeButton(button)
    box.exec()
    return buttons.get(box.clickedButton(), escape_choice)


def ask_recovery(parent: QWidget | None, question: RecoveryQuestion) -> RecoveryChoice:
    """Resume now, later or discard; closing the box answers ``question.escape``."""
    jobs = "".join(f"<li>{escape(line)}</li>" for line in question.jobs)
    informative = f"<ul>{jobs}</ul>{_options_html(question.options)}"
    choice = _ask(
        parent,
        question.title,
        question.text,
        informative,
        question.options,
        question.default,
        question.escape,
    )
    return RecoveryChoice(choice)


def ask_quit(parent: QWidget | None, question: QuitQuestion) -> QuitChoice:
    """Quit and resume later, keep working or cancel the job and quit."""
    informative = f"<p>{escape(question.consequence)}</p>{_options_html(question.options)}"
    choice = _ask(
        parent,
        question.title,
        question.text,
        informative,
        question.options,
        question.default,
        question.escape,
    )
    return QuitChoice(choice)
