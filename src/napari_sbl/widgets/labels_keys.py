"""Keyboard labelling for the labels dock: which key does what, binding them while the dock is open
(on the viewer and the session's layers) and giving every key back its old action when it closes.
"""

from __future__ import annotations

from qtpy.QtWidgets import QDialog, QLabel, QVBoxLayout

from napari_sbl.widgets._layers import sbl_info

KEY_HELP = (("1 – 9", "label the selection (or the current clip) with that class; with the label shapes layer "
             "active, give new shapes that class"), ("Space", "play / pause"), ("[  or  Q", "previous frame"),
            ("]  or  E", "next frame"), ("I  /  O", "mark in / out (start / end of the selection)"),
            ("Ctrl+Z  /  Ctrl+Shift+Z", "undo / redo"), ("N", "next unlabelled stretch (selects it)"),
            ("Escape", "clear the selection"), ("H", "show these keys"))


class LabelKeys:
    """Key bindings and the keys help, mixed into :class:`~napari_sbl.widgets.labels.LabelsWidget`.

    The host provides ``viewer``, ``shared``, ``status``, ``help_dialog``, ``_previous_bindings``,
    ``_guarded`` and the actions the keys call (``label_key``, ``step``, ``mark``, ``undo``, ...).
    """

    def key_actions(self) -> dict[str, object]:
        actions = {str(k): (lambda k=k: self.label_key(k)) for k in range(1, 10)}
        actions.update({"Space": self.toggle_play, "[": lambda: self.step(-1), "Q": lambda: self.step(-1),
                        "]": lambda: self.step(1), "E": lambda: self.step(1), "I": lambda: self.mark("in"),
                        "O": lambda: self.mark("out"), "Ctrl+Z": self.undo, "Ctrl+Shift+Z": self.redo,
                        "N": self.next_unlabelled, "H": self.show_help,
                        "Escape": lambda: self.shared and self.shared.clear_selection()})
        return actions

    def bind_keys(self) -> None:
        """Bind the keys on the viewer and on the session's layers (an active layer's own keys come first)."""
        self._bind(self.viewer, self.key_actions())
        for layer in self.viewer.layers:
            self._bind_layer(layer)

    def _bind_layer(self, layer) -> None:
        role = sbl_info(layer).get("role")
        if role in ("video", "masks"):
            self._bind(layer, self.key_actions())
        elif role == "label_shapes":
            self._bind(layer, {str(k): (lambda k=k: self.label_key(k)) for k in range(1, 10)})

    def _bind(self, provider, actions: dict) -> None:
        if any(bound is provider for bound, _, _ in self._previous_bindings):
            return
        for key, action in actions.items():
            previous = provider.bind_key(key, lambda _owner, act=action: self._keyed(act), overwrite=True)
            self._previous_bindings.append((provider, key, previous))

    def unbind_keys(self) -> None:
        """Give every key back what it did before the dock opened."""
        for provider, key, previous in reversed(self._previous_bindings):
            provider.bind_key(key, previous, overwrite=True)
        self._previous_bindings.clear()

    def _keyed(self, action) -> None:
        if self.shared is None:
            self.status.setText("open a video first")
            return
        self._guarded(action)

    def show_help(self) -> None:
        if self.help_dialog is None:
            self.help_dialog = QDialog(self)
            self.help_dialog.setWindowTitle("Labelling keys")
            rows = "".join(f"<tr><td><b>{k}</b></td><td>{v}</td></tr>" for k, v in KEY_HELP)
            text = QLabel(f"<table cellspacing='6'>{rows}</table><p>Timeline: click seeks, drag selects, "
                          "drag a segment edge to move it, wheel zooms, Shift+wheel pans.</p>")
            text.setWordWrap(True)
            QVBoxLayout(self.help_dialog).addWidget(text)
        self.help_dialog.show()

    def _layer_added(self, event) -> None:
        if self._previous_bindings:
            self._bind_layer(event.value)
