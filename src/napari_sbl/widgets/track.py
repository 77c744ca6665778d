"""Track animals dock: click animals, preview a frame, track the video, correct and re-track.

Prompts live in a Points layer whose ``animal_id`` and ``positive`` features are the truth; the
Labels layer shows the store's masks directly, so what you see is what is saved.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
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

from napari_sbl.plugin.layers import animal_color, sbl_metadata
from napari_sbl.segment.backends import BACKENDS, SAM2_MODELS, TrackParams
from napari_sbl.widgets._jobs import JobPanel
from napari_sbl.widgets._layers import fill_layer_box, find_session_layers, layer_for, sbl_info

if TYPE_CHECKING:
    import napari

PREVIEW_LAYER = "mask preview"


class TrackWidget(QWidget):
    """Point prompts → masks through the whole video, with progress, cancel and corrections."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._session = None  # (video path, VideoReader, SessionStore)
        self._tracker = None
        self._tracker_key = None
        self._build_controls()
        self.viewer.layers.events.inserted.connect(self.refresh_layers)
        self.viewer.layers.events.removed.connect(self.refresh_layers)
        self.refresh_layers()

    # -- layout ---------------------------------------------------------------------------------
    def _build_controls(self) -> None:
        self.video_box = QComboBox()
        self.backend_box = QComboBox()
        self.backend_box.addItems(BACKENDS)
        self.model_box = QComboBox()
        self.model_box.addItems(SAM2_MODELS)
        self.checkpoint_edit = QLineEdit()
        self.checkpoint_edit.setPlaceholderText("SAM2 checkpoint .pt (empty: weights cache / download)")
        self.drift_check = QCheckBox("SAM2: re-prompt animals whose mask jumps or vanishes")
        self.drift_check.setChecked(True)
        self.compile_check = QCheckBox("SAM2 on a GPU: compile the image encoder (tiny ~4 % faster; a minute once)")
        self.animal_spin = QSpinBox()
        self.animal_spin.setRange(1, 999)
        self.animal_spin.valueChanged.connect(self._update_point_defaults)
        self.negative_check = QCheckBox("negative point (not the animal)")
        self.negative_check.toggled.connect(self._update_point_defaults)
        self.count_spin = QSpinBox()
        self.count_spin.setRange(0, 99)
        self.count_spin.setSpecialValueText("from prompts")
        self.start_spin, self.stop_spin = QSpinBox(), QSpinBox()
        form = QFormLayout()
        form.addRow("Video", self.video_box)
        form.addRow("Backend", self.backend_box)
        form.addRow("SAM2 model", self.model_box)
        form.addRow("Checkpoint", self.checkpoint_edit)
        form.addRow("", self.drift_check)
        form.addRow("", self.compile_check)
        form.addRow("Animal id", self.animal_spin)
        form.addRow("", self.negative_check)
        form.addRow("Animals (no prompts)", self.count_spin)
        form.addRow("First frame", self.start_spin)
        form.addRow("Stop before", self.stop_spin)
        self.prompt_button = QPushButton("Add prompts layer")
        self.new_animal_button = QPushButton("New animal")
        self.preview_button = QPushButton("Preview frame")
        self.track_button = QPushButton("Track")
        self.retrack_button = QPushButton("Re-track from this frame")
        self.doubtful_button = QPushButton("Next doubtful frame")
        self.export_button = QPushButton("Export prompts…")
        self.import_button = QPushButton("Import prompts…")
        self.job = JobPanel()
        self.message = QLabel("")
        self.message.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        for pair in ((self.prompt_button, self.new_animal_button), (self.preview_button, self.track_button),
                     (self.retrack_button, self.doubtful_button), (self.import_button, self.export_button)):
            row = QHBoxLayout()
            for button in pair:
                row.addWidget(button)
            layout.addLayout(row)
        layout.addWidget(self.job)
        layout.addWidget(self.message)
        layout.addStretch(1)
        self.video_box.currentTextChanged.connect(self._video_changed)
        self.prompt_button.clicked.connect(self.ensure_prompts_layer)
        self.new_animal_button.clicked.connect(self.new_animal)
        self.preview_button.clicked.connect(self.preview)
        self.track_button.clicked.connect(self.track)
        self.retrack_button.clicked.connect(self.retrack)
        self.doubtful_button.clicked.connect(self.next_doubtful)
        self.export_button.clicked.connect(self._export_dialog)
        self.import_button.clicked.connect(self._import_dialog)

    # -- session and layers ----------------------------------------------------------------------
    def refresh_layers(self, *_) -> None:
        names = [layer.name for layer in find_session_layers(self.viewer, "video")]
        fill_layer_box(self.video_box, names)
        self._video_changed()

    def video_layer(self):
        name = self.video_box.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _video_changed(self, *_) -> None:
        layer = self.video_layer()
        n_frames = layer.data.shape[0] if layer is not None else 0
        for spin in (self.start_spin, self.stop_spin):
            spin.setRange(0, max(n_frames, 0))
        self.stop_spin.setValue(n_frames)

    def session(self):
        """(VideoReader, SessionStore) of the chosen video layer, opened (and the store created) once."""
        from napari_sbl.pipeline.session import open_session

        layer = self.video_layer()
        if layer is None:
            raise LookupError("open a video first (File ▸ Open)")
        info = sbl_info(layer)
        if self._session is None or self._session[0] != info["video"]:
            video, store = open_session(info["video"], info.get("store"))
            layer.metadata["napari_sbl"] = {**info, "store": str(store.path)}
            self._session = (info["video"], video, store)
        return self._session[1], self._session[2]

    def ensure_prompts_layer(self):
        """The Points layer holding this video's prompts (created with animal/positive features)."""
        layer = self.video_layer()
        if layer is None:
            self.message.setText("Open a video first (File ▸ Open).")
            return None
        video_path = sbl_info(layer)["video"]
        points = layer_for(self.viewer, "prompts", video_path)
        if points is None:
            metadata = {"napari_sbl": {**sbl_info(layer), "role": "prompts"}}
            points = self.viewer.add_points(
                np.zeros((0, 3)), name="prompts", ndim=3, size=10, border_color="white", metadata=metadata,
                features={"animal_id": np.zeros(0, dtype=int), "positive": np.zeros(0, dtype=bool)},
            )
            points.events.data.connect(lambda event: self._style_points(points))
        self._prompts_layer = points
        self._update_point_defaults()
        points.mode = "add"
        self.viewer.layers.selection.active = points
        return points

    def _update_point_defaults(self, *_) -> None:
        points = getattr(self, "_prompts_layer", None)
        if points is None:
            return
        positive = not self.negative_check.isChecked()
        points.feature_defaults = {"animal_id": self.animal_spin.value(), "positive": positive}
        points.current_face_color = animal_color(self.animal_spin.value())
        points.current_symbol = "x" if self.negative_check.isChecked() else "disc"

    def _style_points(self, points) -> None:
        ids = points.features["animal_id"].to_numpy()
        if len(ids):
            points.face_color = [animal_color(i) for i in ids]
            points.symbol = ["disc" if p else "x" for p in points.features["positive"].to_numpy()]

    def new_animal(self) -> None:
        points = self.ensure_prompts_layer()
        used = points.features["animal_id"].to_numpy() if points is not None else []
        self.animal_spin.setValue(int(max(used, default=0)) + 1)
        self.negative_check.setChecked(False)

    def prompts(self):
        from napari_sbl.segment.prompts import prompts_from_points

        points = getattr(self, "_prompts_layer", None)
        if points is None or len(points.data) == 0:
            return []
        return prompts_from_points(points.data, points.features["animal_id"].to_numpy(),
                                   points.features["positive"].to_numpy())

    def params(self) -> TrackParams:
        stop = self.stop_spin.value() or None
        extra = {} if self.drift_check.isChecked() else {"drift": {"recover": False}}
        if self.compile_check.isChecked():
            extra["compile_image_encoder"] = True
        return TrackParams(backend=self.backend_box.currentText(), model=self.model_box.currentText(),
                           checkpoint=self.checkpoint_edit.text().strip() or None,
                           n_animals=self.count_spin.value() or None, start=self.start_spin.value(), stop=stop,
                           extra=extra)

    def _get_tracker(self, params: TrackParams):
        from napari_sbl.segment.backends import make_tracker

        key = (params.backend, params.model, params.checkpoint, params.n_animals, repr(params.extra))
        if self._tracker is None or self._tracker_key != key:
            self._tracker, self._tracker_key = make_tracker(params), key
        return self._tracker

    # -- actions ----------------------------------------------------------------------------------
    def current_frame(self) -> int:
        return int(self.viewer.dims.current_step[0])

    def preview(self) -> None:
        """Segment only the current frame from its prompts and show it as a preview layer."""
        frame_index = self.current_frame()
        prompts = [p for p in self.prompts() if p.frame_index == frame_index]
        params = self.params()
        video, _ = self.session()
        tracker = self._get_tracker(params)

        def job(reporter):
            if not prompts and not params.n_animals:
                raise _no_prompts_error()
            return next(iter(tracker.track(video, prompts, frame_index, frame_index + 1, reporter)))

        self.job.start(job, on_done=lambda tracked: self._show_preview(tracked))

    def _show_preview(self, tracked) -> None:
        image = tracked.labels
        if PREVIEW_LAYER in self.viewer.layers:
            self.viewer.layers[PREVIEW_LAYER].data = image
        else:
            self.viewer.add_labels(image, name=PREVIEW_LAYER, opacity=0.6)
        self.message.setText(f"preview of frame {tracked.frame_index}: animals {sorted(set(np.unique(image)) - {0})}")

    def track(self) -> None:
        from napari_sbl.segment.run import track_video

        self._run_tracking(lambda video, store, params, tracker, reporter:
                           track_video(video, store, self.prompts(), params, reporter, tracker))

    def retrack(self) -> None:
        from napari_sbl.segment.run import retrack_from

        frame_index = self.current_frame()
        self._run_tracking(lambda video, store, params, tracker, reporter:
                           retrack_from(video, store, self.prompts(), frame_index, params, reporter, tracker))

    def _run_tracking(self, run) -> None:
        try:
            video, store = self.session()
        except LookupError as err:
            self.message.setText(str(err))
            return
        params = self.params()
        tracker = self._get_tracker(params)
        self._show_masks(video, store, create=False)

        def job(reporter):
            return run(video, store, params, tracker, reporter)

        self.job.start(job, on_done=self._tracking_done, on_progress=self._tracking_progress)

    def _tracking_progress(self, done: int, total: int, message: str) -> None:
        video, store = self.session()
        layer = self._show_masks(video, store, create=True)
        if layer is not None and done % 10 == 0:
            layer.refresh()

    def _tracking_done(self, summary) -> None:
        video, store = self.session()
        layer = self._show_masks(video, store, create=True)
        layer.refresh()
        present = ", ".join(f"animal {k}: {v} frames" for k, v in summary.frames_present.items())
        self.message.setText(f"tracked {summary.frames_tracked} frames ({present}); "
                             f"{summary.doubtful_frames} doubtful frames")

    def _show_masks(self, video, store, create: bool):
        from napari_sbl.store import layout

        layer = layer_for(self.viewer, "masks", str(video.path))
        if layer is None and create and store.has(layout.TRACKS_MASKS):
            layer = self.viewer.add_labels(store.array(layout.TRACKS_MASKS), name="masks", opacity=0.5,
                                           metadata=sbl_metadata("masks", video, store))
        return layer

    def next_doubtful(self) -> None:
        from napari_sbl.segment.quality import next_doubtful_frame
        from napari_sbl.store import layout

        _, store = self.session()
        if not store.has(layout.TRACKS_QUALITY):
            self.message.setText("track the video first")
            return
        frame_index = next_doubtful_frame(store.read(layout.TRACKS_QUALITY), self.current_frame())
        if frame_index is None:
            self.message.setText("no doubtful frame after this one")
            return
        self.viewer.dims.set_current_step(0, frame_index)
        self.message.setText(f"frame {frame_index}: tracking looks doubtful here; add points and re-track")

    def export_prompts(self, path: str | Path) -> None:
        from napari_sbl.segment.prompts import write_prompts

        write_prompts(Path(path), self.prompts())

    def import_prompts(self, path: str | Path) -> None:
        from napari_sbl.segment.prompts import points_from_prompts, read_prompts

        coords, ids, positive = points_from_prompts(read_prompts(path))
        points = self.ensure_prompts_layer()
        points.data = np.zeros((0, 3))
        points.data = coords
        points.features = {"animal_id": ids, "positive": positive}
        self._style_points(points)

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export prompts", "prompts.json", "JSON (*.json)")
        if path:
            self.export_prompts(path)

    def _import_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import prompts", "", "JSON (*.json)")
        if path:
            self.import_prompts(path)


def _no_prompts_error():
    from napari_sbl.errors import PromptError

    return PromptError("click at least one animal on this frame, or set the number of animals")
