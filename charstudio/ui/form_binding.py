"""Declarative binding between a settings dataclass and the widgets that edit it.

A panel lists one binding per field (which widget, how its value converts) once; the form
fills the widgets from a settings object, reads them back into the keyword arguments of the
settings class, and reports every edit through one callback. No field is mapped twice by
hand, so a field added to the settings cannot be forgotten in one direction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt, SignalInstance
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QLineEdit,
    QPlainTextEdit,
    QSpinBox,
)

__all__ = ["Binding", "Form", "check", "combo_data", "combo_text", "line", "plain", "seed", "spin"]


@dataclass(frozen=True)
class Binding:
    name: str  # the settings field
    get: Callable[[], Any]
    set: Callable[[Any], None]
    changed: SignalInstance
    spin: QAbstractSpinBox | None = None  # its half-typed text is read before ``get``


def line(name: str, edit: QLineEdit, *, strip: bool = False) -> Binding:
    def get() -> str:
        return edit.text().strip() if strip else edit.text()

    return Binding(name, get, lambda value: edit.setText(str(value)), edit.textChanged)


def plain(name: str, edit: QPlainTextEdit) -> Binding:
    return Binding(name, edit.toPlainText, edit.setPlainText, edit.textChanged)


def spin(
    name: str, box: QSpinBox | QDoubleSpinBox, *, zero_is_none: bool = False, decimals: int = 0
) -> Binding:
    """``zero_is_none``: the box's minimum (shown as e.g. "Auto") stands for None."""

    def get() -> Any:
        value = box.value()
        if zero_is_none and not value:
            return None
        return round(value, decimals) if decimals else value

    def put(value: Any) -> None:
        box.setValue(0 if value is None else value)

    return Binding(name, get, put, box.valueChanged, box)


def check(name: str, box: QCheckBox) -> Binding:
    return Binding(name, box.isChecked, box.setChecked, box.toggled)


def _select(combo: QComboBox, index: int) -> None:
    combo.setCurrentIndex(max(0, index))


def combo_text(name: str, combo: QComboBox) -> Binding:
    def put(value: Any) -> None:
        _select(combo, combo.findText(str(value), Qt.MatchFlag.MatchFixedString))

    return Binding(name, combo.currentText, put, combo.currentIndexChanged)


def combo_data(name: str, combo: QComboBox) -> Binding:
    return Binding(
        name,
        lambda: combo.currentData(),
        lambda value: _select(combo, combo.findData(value)),
        combo.currentIndexChanged,
    )


def seed(name: str, edit: QLineEdit, error: Callable[[str], Exception]) -> Binding:
    """A seed typed as text: empty or "-" is -1 (random); ``error`` words anything else."""

    def get() -> int:
        text = edit.text().strip()
        if text in ("", "-"):
            return -1
        try:
            return int(text)
        except ValueError:
            raise error(text) from None

    return Binding(name, get, lambda value: edit.setText(str(value)), edit.textChanged)


class Form:
    def __init__(self, bindings: Iterable[Binding]) -> None:
        self.bindings = list(bindings)

    def fill(self, settings: Any) -> None:
        """Set every widget from ``settings``' field of the same name, in binding order."""
        for binding in self.bindings:
            binding.set(getattr(settings, binding.name))

    def values(self) -> dict[str, Any]:
        """The widgets' values by field name (a value still being typed counts)."""
        for binding in self.bindings:
            if binding.spin is not None:
                binding.spin.interpretText()
        return {binding.name: binding.get() for binding in self.bindings}

    def on_change(self, slot: Callable[[], None]) -> None:
        for binding in self.bindings:
            binding.changed.connect(lambda *_: slot())
