"""Timeline dock: per animal, labels, predictions and candidates as colour bars under the video.

Click seeks the viewer, drag selects a range, dragging a segment's edge moves it, the wheel zooms
around the cursor (Shift+wheel pans). Painting goes through :mod:`napari_sbl.behavior.timeline_geometry`,
so a long video costs one rectangle per visible run. The labels dock and this timeline share one
:class:`SharedLabelSession` per store, kept as a child of the napari window.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import QObject, QRectF, Qt, QTimer, Signal
from qtpy.QtGui import QBrush, QColor, QPainter, QPen
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout, QWidget

from napari_sbl.behavior.annotation_store import AnnotationSession, store_animal_ids
from napari_sbl.behavior.annotations import true_runs, value_runs
from napari_sbl.behavior.timeline_geometry import FrameAxis, RowLayout, drag_range, hit_edge, tick_frames, visible_bars
from napari_sbl.errors import SblError
from napari_sbl.widgets._layers import find_session_layers, sbl_info
from napari_sbl.widgets.timeline_models import ModelChooser

if TYPE_CHECKING:
    import napari

log = logging.getLogger(__name__)
AUTOSAVE_MS = 400
NAME_PX = 70
RULER_PX = 18
DRAG_PX = 3
UNKNOWN_COLOR = "#808080"


class SharedLabelSession(QObject):
    """One store's labelling state for a window: annotations, active animal, selection and debounced autosave."""

    changed = Signal()
    message = Signal(str)

    def __init__(self, session: AnnotationSession, video_layer_name: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.video_layer_name = video_layer_name
        self.selection: tuple[int, int] | None = None
        self.active_animal = session.model.animal_ids[0]
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(AUTOSAVE_MS)
        self._timer.timeout.connect(self.save_now)
        session.model.subscribe(self._model_changed)

    @property
    def model(self):
        return self.session.model

    def _model_changed(self) -> None:
        self._timer.start()
        self.changed.emit()

    def save_now(self) -> bool:
        """Save unsaved edits now; failures are reported (edits stay in memory) instead of raised."""
        self._timer.stop()
        try:
            saved = self.session.autosave()
        except (SblError, OSError) as err:
            self.message.emit(f"not saved: {err}")
            return False
        if saved:
            self.message.emit(f"saved (version {self.session.version})")
        return saved

    def reload(self) -> None:
        """Read the store's annotations again, dropping unsaved edits (after another program saved)."""
        self._timer.stop()
        self.session.model.unsubscribe(self._model_changed)
        self.session = AnnotationSession.open(self.session.store, project=self.session.project)
        self.session.model.subscribe(self._model_changed)
        if self.active_animal not in self.model.animal_ids:
            self.active_animal = self.model.animal_ids[0]
        self.selection = None
        self.changed.emit()
        self.message.emit(f"reloaded version {self.session.version} from the store")

    def set_selection(self, start: int, stop: int) -> None:
        start, stop = max(0, int(start)), min(self.model.n_frames, int(stop))
        self.selection = (start, stop) if stop > start else None
        self.changed.emit()

    def clear_selection(self) -> None:
        self.selection = None
        self.changed.emit()

    def set_active_animal(self, animal_id: int) -> None:
        if int(animal_id) in self.model.animal_ids and int(animal_id) != self.active_animal:
            self.active_animal = int(animal_id)
            self.changed.emit()


def shared_label_session(viewer: napari.Viewer, layer_name: str | None = None) -> SharedLabelSession | None:
    """The window's labelling session for a video layer (the first one by default), opened on first use."""
    from napari_sbl.pipeline.session import open_session
    from napari_sbl.store.session import default_store_path

    layers = find_session_layers(viewer, "video")
    layer = next((x for x in layers if x.name == layer_name), layers[0] if layers else None)
    if layer is None:
        return None
    info = sbl_info(layer)
    store_path = Path(info.get("store") or default_store_path(info["video"]))
    window = viewer.window._qt_window
    name = f"napari_sbl_labels:{store_path.resolve()}"
    found = window.findChild(SharedLabelSession, name)
    if found is not None:
        return found
    _, store = open_session(info["video"], store_path)
    layer.metadata["napari_sbl"] = {**info, "store": str(store.path)}
    shared = SharedLabelSession(AnnotationSession.open(store), layer.name, parent=window)
    shared.setObjectName(name)
    return shared


class TimelineCanvas(QWidget):
    """The painted rows; emits seeks, and edits the shared session's model and selection directly."""

    seek_requested = Signal(int)

    def __init__(self, shared: SharedLabelSession, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.shared = shared
        self.current_frame = 0
        self.predictions: np.ndarray | None = None  # (T, A) int16, columns = store animals
        self.prediction_animals: list[int] = []
        self._axis_view: tuple[float, float] | None = None
        self._press = None  # ("select", frame, x) or ("edge", segment, side)
        self._edge_preview: int | None = None
        self.setMouseTracking(True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        shared.changed.connect(self._relayout)
        self._relayout()

    # -- geometry --------------------------------------------------------------------------------
    def axis(self) -> FrameAxis:
        axis = FrameAxis(self.shared.model.n_frames, NAME_PX, max(self.width() - NAME_PX - 4, 10))
        if self._axis_view is not None:
            axis = FrameAxis(axis.n_frames, axis.x0_px, axis.width_px, *self._axis_view)
        return axis

    def rows(self) -> RowLayout:
        return RowLayout(top_px=RULER_PX, n_rows=len(self.shared.model.animal_ids))

    def _relayout(self) -> None:
        self.setFixedHeight(int(self.rows().height_px) + 4)
        self.update()

    def set_view(self, axis: FrameAxis) -> None:
        self._axis_view = (axis.view_start, axis.stop)
        self.update()

    def set_current_frame(self, frame: int) -> None:
        self.current_frame = int(frame)
        axis = self.axis()
        if self._axis_view is not None and not axis.view_start <= frame < axis.stop:
            self.set_view(axis.showing(frame))
        self.update()

    def set_predictions(self, labels: np.ndarray | None, animal_ids: list[int]) -> None:
        self.predictions, self.prediction_animals = labels, list(animal_ids)
        self.update()

    # -- painting --------------------------------------------------------------------------------
    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        axis, rows, model = self.axis(), self.rows(), self.shared.model
        painter.fillRect(self.rect(), QColor("#262930"))
        self._paint_ruler(painter, axis)
        for row, animal_id in enumerate(model.animal_ids):
            self._paint_row(painter, axis, rows, row, animal_id)
        self._paint_overlays(painter, axis, rows)
        painter.end()

    def _paint_ruler(self, painter: QPainter, axis: FrameAxis) -> None:
        painter.setPen(QColor("#a0a0a0"))
        for frame in tick_frames(axis):
            x = float(axis.frame_to_x(frame))
            painter.drawLine(int(x), RULER_PX - 5, int(x), RULER_PX)
            painter.drawText(int(x) + 2, RULER_PX - 6, str(frame))

    def _paint_row(self, painter: QPainter, axis: FrameAxis, rows: RowLayout, row: int, animal_id: int) -> None:
        model = self.shared.model
        y, height = rows.lane_span(row, "labels")
        active = animal_id == self.shared.active_animal
        painter.setPen(QColor("#ffffff" if active else "#a0a0a0"))
        painter.drawText(4, int(y + height - 3), f"{'▶ ' if active else ''}animal {animal_id}")
        painter.fillRect(QRectF(axis.x0_px, y, axis.width_px, height), QColor("#3a3d45"))
        labels = model.labels(animal_id)
        if model.multi_label:
            band = height / max(len(model.classes), 1)
            for index, one in enumerate(model.classes):
                starts, stops = true_runs(labels[:, one.id]) if one.id < labels.shape[1] else ([], [])
                self._bars(painter, axis, starts, stops, np.full(len(starts), one.id), y + index * band, band)
        else:
            self._bars(painter, axis, *value_runs(labels), y, height)
        negatives = model.negatives(animal_id)
        for one in model.classes:
            if one.id < negatives.shape[1]:
                starts, stops = true_runs(negatives[:, one.id])
                self._bars(painter, axis, starts, stops, np.full(len(starts), one.id), y + height - 4, 4,
                           Qt.BrushStyle.Dense4Pattern)
        self._paint_predictions(painter, axis, rows, row, animal_id)
        y, height = rows.lane_span(row, "candidates")
        for candidate in model.pending_candidates():
            if candidate.animal_id == animal_id:
                x0, x1 = axis.frame_to_x(candidate.start_frame), axis.frame_to_x(candidate.stop_frame)
                painter.setPen(QPen(self._color(candidate.class_id), 1))
                painter.setBrush(Qt.BrushStyle.NoBrush)
                painter.drawRect(QRectF(float(x0), y, max(float(x1 - x0), 1.0), height - 1))

    def _paint_predictions(self, painter: QPainter, axis: FrameAxis, rows: RowLayout, row: int, animal_id: int) -> None:
        if self.predictions is None or animal_id not in self.prediction_animals:
            return
        y, height = rows.lane_span(row, "predictions")
        column = self.prediction_animals.index(animal_id)
        self._bars(painter, axis, *value_runs(self.predictions[:, column]), y + 1, height - 1)

    def _bars(self, painter: QPainter, axis: FrameAxis, starts, stops, values, y: float, height: float,
              style=Qt.BrushStyle.SolidPattern) -> None:
        painter.setPen(Qt.PenStyle.NoPen)
        for x0, x1, value in visible_bars(np.asarray(starts), np.asarray(stops), np.asarray(values), axis):
            painter.fillRect(QRectF(x0, y, x1 - x0, height), QBrush(self._color(value), style))

    def _paint_overlays(self, painter: QPainter, axis: FrameAxis, rows: RowLayout) -> None:
        if self.shared.selection is not None:
            x0, x1 = (float(axis.frame_to_x(f)) for f in self.shared.selection)
            painter.fillRect(QRectF(x0, RULER_PX, max(x1 - x0, 1.0), rows.height_px - RULER_PX),
                             QColor(80, 160, 255, 70))
        if self._edge_preview is not None:
            painter.setPen(QPen(QColor("#ffff00"), 1, Qt.PenStyle.DashLine))
            x = int(axis.frame_to_x(self._edge_preview))
            painter.drawLine(x, RULER_PX, x, int(rows.height_px))
        x = float(axis.frame_to_x(self.current_frame + 0.5))
        painter.setPen(QPen(QColor("#ff3030"), 2))
        painter.drawLine(int(x), 0, int(x), int(rows.height_px))

    def _color(self, class_id) -> QColor:
        classes = self.shared.model.classes
        return QColor(classes.get(class_id).color if class_id is not None and classes.has_id(class_id)
                      else UNKNOWN_COLOR)

    # -- mouse -----------------------------------------------------------------------------------
    def mousePressEvent(self, event) -> None:
        x, y = event.position().x(), event.position().y()
        axis, row = self.axis(), self.rows().row_at(y)
        if row is not None:
            animal_id = self.shared.model.animal_ids[row]
            self.shared.set_active_animal(animal_id)
            segments = self.shared.model.segments(animal_id)
            hit = hit_edge(np.array([s.start_frame for s in segments]), np.array([s.stop_frame for s in segments]),
                           x, axis)
            if hit is not None:
                self._press = ("edge", segments[hit[0]], hit[1])
                return
        frame = axis.x_to_frame(x)
        self._press = ("select", frame, x)
        self.seek_requested.emit(frame)

    def mouseMoveEvent(self, event) -> None:
        if self._press is None:
            return
        x, axis = event.position().x(), self.axis()
        if self._press[0] == "edge":
            self._edge_preview = axis.x_to_boundary(x)
            self.update()
        elif abs(x - self._press[2]) > DRAG_PX:
            self.shared.set_selection(*drag_range(self._press[1], axis.x_to_frame(x)))

    def mouseReleaseEvent(self, event) -> None:
        press, self._press, self._edge_preview = self._press, None, None
        if press is None:
            return
        x, axis = event.position().x(), self.axis()
        if press[0] == "edge":
            try:
                self.shared.model.move_edge(press[1], press[2], axis.x_to_boundary(x))
            except SblError as err:
                self.shared.message.emit(str(err))
            self.update()
        elif abs(x - press[2]) <= DRAG_PX:
            self.shared.clear_selection()

    def wheelEvent(self, event) -> None:
        axis = self.axis()
        steps = event.angleDelta().y() / 120.0
        if event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self.set_view(axis.panned(-steps * 0.1 * axis.span))
        else:
            anchor = axis.view_start + (event.position().x() - axis.x0_px) / axis.px_per_frame
            self.set_view(axis.zoomed(anchor, 1.25**steps))
        event.accept()


class TimelineWidget(QWidget):
    """Dock: prediction chooser, zoom controls and the timeline canvas, kept in step with the viewer's frame."""

    def __init__(self, napari_viewer: napari.Viewer, shared: SharedLabelSession | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.shared = shared
        self.canvas: TimelineCanvas | None = None
        self.prediction_box = ModelChooser()
        self.fit_button = QPushButton("Whole video")
        self.status = QLabel("")
        header = QHBoxLayout()
        header.addWidget(QLabel("Predictions"))
        header.addWidget(self.prediction_box)
        header.addWidget(self.fit_button)
        header.addWidget(self.status, 1)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(2, 2, 2, 2)
        self._layout.addLayout(header)
        self.fit_button.clicked.connect(self.show_whole_video)
        self.prediction_box.currentTextChanged.connect(self._load_predictions)
        self.viewer.dims.events.current_step.connect(self._frame_changed)
        if self.shared is None:
            self.viewer.layers.events.inserted.connect(self._attach)
        self._attach()

    def _attach(self, *_) -> None:
        if self.canvas is not None:
            return
        try:
            self.shared = self.shared or shared_label_session(self.viewer)
        except SblError as err:
            self.status.setText(str(err))
            return
        if self.shared is None:
            self.status.setText("open a video to see its timeline")
            return
        self.canvas = TimelineCanvas(self.shared)
        self._layout.addWidget(self.canvas)
        self.canvas.seek_requested.connect(self.seek)
        self.shared.message.connect(self.status.setText)
        store = self.shared.session.store
        self.prediction_box.attach(store)
        self._frame_changed()

    def seek(self, frame: int) -> None:
        self.viewer.dims.set_current_step(0, int(frame))

    def show_whole_video(self) -> None:
        if self.canvas is not None:
            self.canvas._axis_view = None
            self.canvas.update()

    def _frame_changed(self, *_) -> None:
        if self.canvas is not None and self.viewer.dims.ndim:
            self.canvas.set_current_frame(int(self.viewer.dims.current_step[0]))

    def _load_predictions(self, name: str) -> None:
        if self.canvas is None:
            return
        store = self.shared.session.store
        if not name or name == ModelChooser.NONE:
            self.canvas.set_predictions(None, [])
            return
        labels = store.read(f"predictions/{name}/labels").astype(np.int16)
        self.canvas.set_predictions(labels, store_animal_ids(store)[: labels.shape[1]])
