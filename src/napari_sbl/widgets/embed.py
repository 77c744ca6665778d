"""Embed dock: choose an encoder and how clips are registered, preview a few clips, extract embeddings.

A view over :mod:`napari_sbl.embed.run`: the form builds an :class:`EmbedParams`, Preview shows a
montage of registered clips exactly as the encoder will see them, Extract runs the step in a worker
with progress and Cancel (a cancelled or killed run resumes on the next Extract).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_sbl.embed.clips import ENCODERS, EmbedParams, VideoPrismParams
from napari_sbl.embed.registration import ALIGNMENTS, ANCHORS, BACKGROUNDS, NORMALIZATIONS, RegistrationParams
from napari_sbl.errors import SblError
from napari_sbl.widgets._jobs import JobPanel
from napari_sbl.widgets._layers import fill_layer_box, find_session_layers, sbl_info

if TYPE_CHECKING:
    import napari

VIDEOPRISM_MODELS = ("base", "large")
PREVIEW_CLIPS = 4


def _combo(items, current: str | None = None) -> QComboBox:
    box = QComboBox()
    box.addItems(list(items))
    if current is not None:
        box.setCurrentText(current)
    return box


def _spin(low: int, high: int, value: int, special: str | None = None) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    if special:
        spin.setSpecialValueText(special)
    return spin


class EmbedWidget(QWidget):
    """Tracked animals → registered clips → ``embeddings/<encoder>/...`` in the session store."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._session = None  # (video path, VideoReader, SessionStore)
        self.preview_montage: np.ndarray | None = None
        self._build_controls()
        self.viewer.layers.events.inserted.connect(self.refresh_layers)
        self.viewer.layers.events.removed.connect(self.refresh_layers)
        self.refresh_layers()
        self._encoder_changed()

    # -- layout ---------------------------------------------------------------------------------
    def _build_controls(self) -> None:
        defaults, crop = EmbedParams(), RegistrationParams()
        self.video_box = QComboBox()
        self.encoder_box = _combo(ENCODERS, defaults.encoder)
        self.model_box = _combo(VIDEOPRISM_MODELS, VideoPrismParams().model)
        self.dtype_box = _combo(("bfloat16", "float32"), VideoPrismParams().dtype)
        self.checkpoint_edit = QLineEdit()
        self.checkpoint_edit.setPlaceholderText("default: cache or download")
        self.browse_button = QPushButton("…")
        self.browse_button.clicked.connect(self._choose_checkpoint)
        self.clip_spin = _spin(2, 512, defaults.clip_frames)
        self.fps_spin = QDoubleSpinBox()
        self.fps_spin.setRange(0.5, 1000.0)
        self.fps_spin.setValue(defaults.fps)
        self.stride_spin = _spin(1, 512, defaults.stride)
        self.box_spin = _spin(0, 4096, 0, "auto (2× body length)")
        self.size_spin = _spin(0, 1024, 0, "encoder's size")
        self.align_box = _combo(ALIGNMENTS, crop.align)
        self.anchor_box = _combo(ANCHORS, crop.anchor)
        self.background_box = _combo(BACKGROUNDS, crop.background)
        self.feather_spin = QDoubleSpinBox()
        self.feather_spin.setRange(0.0, 50.0)
        self.feather_spin.setValue(crop.feather_px)
        self.grey_check = QCheckBox("greyscale")
        self.normalize_box = _combo(NORMALIZATIONS, crop.normalize)
        self.flip_check = QCheckBox("average with the mirrored clip")
        self.augment_spin = _spin(0, 16, 0, "none")
        self.overwrite_check = QCheckBox("replace embeddings made with other settings")
        form = QFormLayout()
        checkpoint_row = QHBoxLayout()
        checkpoint_row.addWidget(self.checkpoint_edit, 1)
        checkpoint_row.addWidget(self.browse_button)
        for label, field in (("Video", self.video_box), ("Encoder", self.encoder_box),
                             ("VideoPrism model", self.model_box), ("Precision", self.dtype_box),
                             ("Checkpoint", checkpoint_row), ("Clip length (frames)", self.clip_spin),
                             ("Target fps", self.fps_spin), ("Stride (frames)", self.stride_spin),
                             ("Crop box (px)", self.box_spin), ("Crop size (px)", self.size_spin),
                             ("Alignment", self.align_box), ("Anchor", self.anchor_box),
                             ("Background", self.background_box), ("Feather (px)", self.feather_spin),
                             ("", self.grey_check), ("Normalisation", self.normalize_box),
                             ("Test-time flip", self.flip_check), ("Augmented copies", self.augment_spin),
                             ("", self.overwrite_check)):
            form.addRow(label, field)
        self.preview_button = QPushButton("Preview clips")
        self.extract_button = QPushButton("Extract")
        self.preview_label = QLabel("")
        self.preview_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.job = JobPanel()
        self.message = QLabel("")
        self.message.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.preview_button)
        buttons.addWidget(self.extract_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.preview_label)
        layout.addWidget(self.job)
        layout.addWidget(self.message)
        layout.addStretch(1)
        self.encoder_box.currentTextChanged.connect(self._encoder_changed)
        self.preview_button.clicked.connect(self.preview)
        self.extract_button.clicked.connect(self.extract)

    def _encoder_changed(self, *_) -> None:
        videoprism = self.encoder_box.currentText() == "videoprism"
        for control in (self.model_box, self.dtype_box, self.checkpoint_edit, self.browse_button):
            control.setEnabled(videoprism)

    def _choose_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "VideoPrism checkpoint", "", "NumPy archive (*.npz)")
        if path:
            self.checkpoint_edit.setText(path)

    # -- session ----------------------------------------------------------------------------------
    def refresh_layers(self, *_) -> None:
        names = [layer.name for layer in find_session_layers(self.viewer, "video")]
        fill_layer_box(self.video_box, names)

    def session(self):
        """(VideoReader, SessionStore) of the chosen video layer, opened once."""
        from napari_sbl.pipeline.session import open_session

        name = self.video_box.currentText()
        if name not in self.viewer.layers:
            raise LookupError("open a video first (File ▸ Open), then track its animals")
        layer = self.viewer.layers[name]
        info = sbl_info(layer)
        if self._session is None or self._session[0] != info["video"]:
            video, store = open_session(info["video"], info.get("store"))
            layer.metadata["napari_sbl"] = {**info, "store": str(store.path)}
            self._session = (info["video"], video, store)
        return self._session[1], self._session[2]

    def params(self) -> EmbedParams:
        """The form as :class:`EmbedParams`."""
        registration = RegistrationParams(
            box_px=self.box_spin.value() or None, size_px=self.size_spin.value() or None,
            align=self.align_box.currentText(), anchor=self.anchor_box.currentText(),
            background=self.background_box.currentText(), feather_px=self.feather_spin.value(),
            grey=self.grey_check.isChecked(), normalize=self.normalize_box.currentText())
        videoprism = VideoPrismParams(model=self.model_box.currentText(), dtype=self.dtype_box.currentText(),
                                      checkpoint=self.checkpoint_edit.text().strip() or None)
        return EmbedParams(encoder=self.encoder_box.currentText(), clip_frames=self.clip_spin.value(),
                           fps=self.fps_spin.value(), stride=self.stride_spin.value(), registration=registration,
                           flip_average=self.flip_check.isChecked(), augment_copies=self.augment_spin.value(),
                           videoprism=videoprism)

    # -- actions ----------------------------------------------------------------------------------
    def _start(self, job, on_done) -> None:
        try:
            video, store = self.session()
            params = self.params()
        except (LookupError, SblError) as err:  # no video, or parameters that make no sense
            self.message.setText(f"error: {err}")
            return
        self.message.setText("")
        self.job.start(lambda reporter: job(video, store, params, reporter), on_done=on_done)

    def preview(self) -> None:
        """Register a few clips spread over the video and show them as a montage (one row per clip)."""
        from napari_sbl.embed.run import preview_clips

        self._start(lambda video, store, params, reporter: preview_clips(video, store, params, PREVIEW_CLIPS,
                                                                         reporter), self._show_preview)

    def _show_preview(self, previews) -> None:
        from napari_sbl.embed.run import montage

        self.preview_montage = np.ascontiguousarray(montage(previews))
        height, width = self.preview_montage.shape[:2]
        image = QImage(self.preview_montage.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()
        pixmap = QPixmap.fromImage(image)
        if width > 480:
            pixmap = pixmap.scaledToWidth(480, Qt.TransformationMode.SmoothTransformation)
        self.preview_label.setPixmap(pixmap)
        clips = ", ".join(f"animal {p.animal_id} frames {p.start_frame}–{p.stop_frame - 1}" for p in previews)
        self.message.setText(f"preview (one clip per row): {clips}")

    def extract(self) -> None:
        """Embed every clip of every tracked animal into the session store (resumes a stopped run)."""
        from napari_sbl.embed.run import embed_video

        overwrite = self.overwrite_check.isChecked()
        self._start(lambda video, store, params, reporter: embed_video(video, store, params, reporter,
                                                                       overwrite=overwrite), self._extracted)

    def _extracted(self, summary) -> None:
        animals = ", ".join(f"animal {k}: {v} clips" for k, v in summary.clips_per_animal.items())
        skipped = f"; {summary.skipped} clips skipped (animal mostly absent)" if summary.skipped else ""
        self.message.setText(
            f"embedded {summary.clips_embedded} new of {summary.n_clips} clips into {summary.key} "
            f"({summary.dim} dims; {animals}{skipped}) in {summary.seconds:.1f} s")
