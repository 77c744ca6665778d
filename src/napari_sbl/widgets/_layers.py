"""Finding the session behind napari layers (reads the ``napari_sbl`` layer metadata)."""

from __future__ import annotations


def sbl_info(layer) -> dict:
    return dict(layer.metadata.get("napari_sbl") or {})


def find_session_layers(viewer, role: str) -> list:
    return [layer for layer in viewer.layers if sbl_info(layer).get("role") == role]


def layer_for(viewer, role: str, video: str):
    """The layer of ``role`` belonging to ``video``, or None."""
    for layer in find_session_layers(viewer, role):
        if sbl_info(layer).get("video") == video:
            return layer
    return None


def fill_layer_box(box, names: list[str]) -> None:
    """Refill a layer combo box with ``names``, keeping the current choice and emitting no change signal."""
    current = box.currentText()
    box.blockSignals(True)
    box.clear()
    box.addItems(names)
    if current in names:
        box.setCurrentText(current)
    box.blockSignals(False)
