"""The timeline's prediction chooser: the store's prediction models, kept current."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox


def prediction_models(store) -> list[str]:
    """Models with ``predictions/<model>/labels`` in the store."""
    return [m for m in store.children("predictions") if store.has(f"predictions/{m}/labels")]


class ModelChooser(QComboBox):
    """'(none)' and the store's prediction models, re-read whenever the list opens, so models
    written after the dock opened (the Infer dock, the CLI) show up without reopening anything."""

    NONE = "(none)"

    def __init__(self) -> None:
        super().__init__()
        self.store = None

    def attach(self, store) -> None:
        """List ``store``'s models and show the most recently predicted one, if any."""
        self.store = store
        models = self.refresh()
        if models:
            self.setCurrentText(max(models, key=lambda m: store.attrs(f"predictions/{m}/labels").get("created", "")))

    def refresh(self) -> list[str]:
        models = prediction_models(self.store) if self.store is not None else []
        current = self.currentText()
        self.blockSignals(True)
        self.clear()
        self.addItems([self.NONE, *models])
        self.setCurrentText(current if current in models else self.NONE)
        self.blockSignals(False)
        if self.currentText() != current:
            self.currentTextChanged.emit(self.currentText())
        return models

    def showPopup(self) -> None:
        self.refresh()
        super().showPopup()
