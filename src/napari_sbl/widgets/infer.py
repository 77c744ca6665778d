"""Infer dock: run a behaviour model on the open video, then tune decoding live from the stored probabilities.

Moving a slider re-decodes ``predictions/<model>/probs`` (kept in memory) without the model and
rewrites ``predictions/<model>/labels``; the animals' masks are coloured by their predicted class
on the current frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from napari_sbl.behavior.decode import PRESETS, DecodeParams
from napari_sbl.errors import SblError
from napari_sbl.widgets._jobs import JobPanel
from napari_sbl.widgets._layers import find_session_layers, layer_for, sbl_info

if TYPE_CHECKING:
    import napari

NONE_COLOR = "#808080"
# slider name: (minimum, maximum, DecodeParams field, slider units per field unit)
SLIDERS = {
    "threshold": (0, 100, "ignore_threshold", 100),
    "smoothing": (1, 51, "smooth_frames", 1),
    "gap fill": (0, 60, "gap_fill_frames", 1),
    "min length": (1, 120, "min_segment_frames", 1),
    "switch penalty": (0, 100, "switch_penalty", 10),
}


class InferWidget(QWidget):
    """Model folder → predictions for the chosen video; decoding presets and sliders re-decode live."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.probs = None
        self.attrs: dict = {}
        self.labels = None
        self.name: str | None = None
        self._build()
        self.viewer.layers.events.inserted.connect(self.refresh_layers)
        self.viewer.layers.events.removed.connect(self.refresh_layers)
        self.viewer.dims.events.current_step.connect(self.color_masks)
        self.refresh_layers()

    def _build(self) -> None:
        self.video_box = QComboBox()
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("model folder written by Train")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_edit, 1)
        model_row.addWidget(browse)
        self.run_button = QPushButton("Predict behaviour")
        self.preset_box = QComboBox()
        self.preset_box.addItems([*PRESETS, "custom"])
        self.preset_box.setCurrentText("standard")
        self.calibrated_check = QCheckBox("use the model's calibrated thresholds")
        self.calibrated_check.setChecked(True)
        self.sliders: dict[str, QSlider] = {}
        form = QFormLayout()
        form.addRow("Video", self.video_box)
        form.addRow("Model", model_row)
        form.addRow("Decoding", self.preset_box)
        form.addRow("", self.calibrated_check)
        for name, (low, high, _, _) in SLIDERS.items():
            slider = QSlider(Qt.Orientation.Horizontal)
            slider.setRange(low, high)
            slider.valueChanged.connect(self._slider_changed)
            self.sliders[name] = slider
            form.addRow(name, slider)
        self.job = JobPanel()
        self.message = QLabel("")
        self.message.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.run_button)
        layout.addWidget(self.job)
        layout.addWidget(self.message)
        layout.addStretch(1)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(150)
        self._timer.timeout.connect(self.redecode_now)
        self.run_button.clicked.connect(self.run)
        self.preset_box.currentTextChanged.connect(self._preset_changed)
        self.calibrated_check.toggled.connect(self._slider_changed)
        self._show_params(PRESETS["standard"])

    # -- session ------------------------------------------------------------------------------------
    def refresh_layers(self, *_) -> None:
        current = self.video_box.currentText()
        names = [layer.name for layer in find_session_layers(self.viewer, "video")]
        self.video_box.clear()
        self.video_box.addItems(names)
        if current in names:
            self.video_box.setCurrentText(current)

    def video_layer(self):
        name = self.video_box.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def store(self):
        from napari_sbl.store.session import SessionStore

        layer = self.video_layer()
        if layer is None or not sbl_info(layer).get("store"):
            raise LookupError("open a video with a session store (embedded with `napari-sbl embed`) first")
        return SessionStore.open(sbl_info(layer)["store"])

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Behaviour model folder")
        if path:
            self.model_edit.setText(path)

    # -- decoding parameters ------------------------------------------------------------------------
    def decode_params(self) -> DecodeParams:
        values = {}
        for name, (_, _, field, scale) in SLIDERS.items():
            values[field] = self.sliders[name].value() / scale if scale != 1 else self.sliders[name].value()
        if self.calibrated_check.isChecked():
            values["ignore_threshold"] = None
        preset = self.preset_box.currentText()
        return DecodeParams(**values, preset=preset)

    def _show_params(self, params: DecodeParams) -> None:
        for name, (_, _, field, scale) in SLIDERS.items():
            value = getattr(params, field)
            slider = self.sliders[name]
            slider.blockSignals(True)
            slider.setValue(round((value or 0) * scale))
            slider.blockSignals(False)
        self.calibrated_check.blockSignals(True)
        self.calibrated_check.setChecked(params.ignore_threshold is None)
        self.calibrated_check.blockSignals(False)
        self.sliders["threshold"].setEnabled(params.ignore_threshold is not None)

    def _preset_changed(self, name: str) -> None:
        if name in PRESETS:
            self._show_params(PRESETS[name])
            self._timer.start()

    def _slider_changed(self, *_) -> None:
        self.sliders["threshold"].setEnabled(not self.calibrated_check.isChecked())
        self.preset_box.blockSignals(True)
        self.preset_box.setCurrentText("custom")
        self.preset_box.blockSignals(False)
        self._timer.start()

    # -- running and re-decoding ----------------------------------------------------------------------
    def run(self) -> None:
        from napari_sbl.behavior.infer import infer_store, require_model

        try:
            store = self.store()
            model_dir = require_model(self.model_edit.text().strip())
        except (LookupError, SblError) as err:
            self.message.setText(str(err))
            return
        params = self.decode_params()

        def job(reporter):
            return infer_store(model_dir, store, params, reporter)

        self.job.start(job, on_done=lambda summary: self.load_predictions(summary.name, "\n".join(summary.lines())))

    def load_predictions(self, name: str, text: str = "") -> None:
        from napari_sbl.behavior.infer import read_predictions
        from napari_sbl.store import layout

        store = self.store()
        self.probs, self.attrs = read_predictions(store, name)
        self.labels = store.read(layout.prediction_key(name, "labels"))
        self.name = name
        self.message.setText(text or f"predictions/{name}")
        self.color_masks()

    def redecode_now(self) -> None:
        """Decode the in-memory probabilities with the sliders' parameters and rewrite the stored labels."""
        from napari_sbl.behavior.infer import redecode_store

        if self.probs is None or self.name is None:
            return
        self.labels = redecode_store(self.store(), self.name, self.decode_params(), probs=self.probs)
        changes = int((np.diff(self.labels, axis=0) != 0).sum())
        self.message.setText(f"re-decoded predictions/{self.name}: {changes} behaviour changes")
        self.color_masks()

    def color_masks(self, *_) -> None:
        """Colour each animal's mask by its predicted class on the current frame (grey = none)."""
        from napari.utils.colormaps import DirectLabelColormap

        layer = self.video_layer()
        if layer is None or self.labels is None:
            return
        masks = layer_for(self.viewer, "masks", sbl_info(layer).get("video"))
        if masks is None:
            return
        frame = min(int(self.viewer.dims.current_step[0]), len(self.labels) - 1)
        colors = [c.get("color", NONE_COLOR) for c in self.attrs.get("classes", [])]
        mapping = {None: "transparent", 0: "transparent"}
        for column, animal_id in enumerate(self.attrs.get("animal_ids", [])):
            label = int(self.labels[frame, column])
            mapping[int(animal_id)] = colors[label] if 0 <= label < len(colors) else NONE_COLOR
        masks.colormap = DirectLabelColormap(color_dict=mapping)
