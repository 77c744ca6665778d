"""The discovery map: a vispy scatter (one Markers visual, smooth at 100,000+ clips) linked to the video.

Hover names a clip, a click asks to show it, a lasso or box selects clips, and the clip playing in the viewer
is ringed. Picking and selection happen in canvas pixels through the pure functions of
:mod:`napari_sbl.cluster.selection`, so 2-D and rotated 3-D maps behave alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QButtonGroup, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_sbl.cluster.selection import nearest_point, points_in_box, points_in_polygon

PICK_RADIUS_PX = 8.0
CLICK_SLOP_PX = 4.0
NOISE_RGBA = (0.55, 0.55, 0.55, 0.5)
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
           "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5",
           "#393b79", "#637939")
MODES = ("pick", "lasso", "box")


def hex_rgba(color: str, alpha: float = 1.0) -> tuple[float, float, float, float]:
    color = color.lstrip("#")
    return (int(color[0:2], 16) / 255, int(color[2:4], 16) / 255, int(color[4:6], 16) / 255, alpha)


def category_colors(values: np.ndarray, color_of: Callable[[object], str] | None = None,
                    noise: Sequence[object] = (-1, "", None)) -> tuple[np.ndarray, dict[object, str]]:
    """(N, 4) float32 RGBA per category (noise grey) and the legend {category: hex colour}."""
    values = np.asarray(values, dtype=object)
    categories = [c for c in dict.fromkeys(sorted(set(values.tolist()), key=str)) if c not in noise]
    legend = {c: (color_of(c) if color_of else PALETTE[i % len(PALETTE)]) for i, c in enumerate(categories)}
    rgba = np.tile(np.asarray(NOISE_RGBA, dtype=np.float32), (len(values), 1))
    codes = {c: i for i, c in enumerate(categories)}
    index = np.array([codes.get(v, -1) for v in values.tolist()], dtype=np.int64)
    table = np.array([hex_rgba(legend[c], 0.85) for c in categories], dtype=np.float32).reshape(-1, 4)
    known = index >= 0
    rgba[known] = table[index[known]]
    return rgba, legend


def continuous_colors(values: np.ndarray, colormap: str = "viridis") -> np.ndarray:
    """(N, 4) float32 RGBA along a vispy colormap from min to max (NaN grey)."""
    from vispy.color import get_colormap

    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    rgba = np.tile(np.asarray(NOISE_RGBA, dtype=np.float32), (len(values), 1))
    if finite.any():
        low, high = values[finite].min(), values[finite].max()
        scaled = (values[finite] - low) / (high - low if high > low else 1.0)
        rgba[finite] = get_colormap(colormap).map(scaled).astype(np.float32)
    return rgba


class ScatterView(QWidget):
    """One Markers visual in a SceneCanvas; emits rows (indices into the points given to :meth:`set_points`)."""

    hovered = Signal(int)  # -1 when over nothing
    clicked = Signal(int)
    selected = Signal(object)  # np.ndarray of rows

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from qtpy import API_NAME
        from vispy import app, scene

        app.use_app(API_NAME)
        self.canvas = scene.SceneCanvas(keys=None, bgcolor="#262930", size=(420, 360))
        self.view = self.canvas.central_widget.add_view()
        self.markers = scene.visuals.Markers(parent=self.view.scene)
        self.selection_markers = scene.visuals.Markers(parent=self.view.scene)
        self.current_markers = scene.visuals.Markers(parent=self.view.scene)
        self.path_line = scene.visuals.Line(parent=self.canvas.scene, color="white", width=1)
        for order, visual in enumerate((self.markers, self.selection_markers, self.current_markers, self.path_line)):
            visual.order = order
        self.coords = np.zeros((0, 2), dtype=np.float32)
        self.colors = np.zeros((0, 4), dtype=np.float32)
        self.point_size = 4.0
        self.mode = "pick"
        self.selected_rows = np.zeros(0, dtype=np.int64)
        self.marked_rows = np.zeros(0, dtype=np.int64)
        self._projected = None  # (transform signature, (N, 2) canvas pixels)
        self._press = None
        self._path: list[tuple[float, float]] = []
        self._build()
        self.path_line.visible = False
        self._draw_points()
        self._draw_overlays()
        self.canvas.events.mouse_move.connect(self._on_move)
        self.canvas.events.mouse_press.connect(self._on_press)
        self.canvas.events.mouse_release.connect(self._on_release)

    def _build(self) -> None:
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.mode_buttons = QButtonGroup(self)
        row = QHBoxLayout()
        for mode, text in zip(MODES, ("Pick / pan", "Lasso", "Box"), strict=True):
            button = QPushButton(text)
            button.setCheckable(True)
            button.setChecked(mode == self.mode)
            button.clicked.connect(lambda _=False, m=mode: self.set_mode(m))
            self.mode_buttons.addButton(button)
            row.addWidget(button)
        self.reset_button = QPushButton("Reset view")
        self.reset_button.clicked.connect(self.reset_view)
        row.addWidget(self.reset_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        self.canvas.native.setMinimumSize(240, 260)
        layout.addWidget(self.canvas.native, 1)
        layout.addWidget(self.info)

    # -- data ---------------------------------------------------------------------------------------
    def set_points(self, coords: np.ndarray, colors: np.ndarray | None = None) -> None:
        """(N, 2) or (N, 3) map coordinates; a 3-D map gets a turntable camera."""
        from vispy import scene

        coords = np.asarray(coords, dtype=np.float32)
        three_d = coords.shape[1] == 3
        wanted = scene.TurntableCamera if three_d else scene.PanZoomCamera
        if not isinstance(self.view.camera, wanted):
            self.view.camera = wanted(fov=0) if three_d else wanted(aspect=1)
        self.coords = coords
        self.colors = np.asarray(colors, dtype=np.float32) if colors is not None else \
            np.tile(np.asarray(hex_rgba(PALETTE[0], 0.85), dtype=np.float32), (len(coords), 1))
        self.selected_rows = np.zeros(0, dtype=np.int64)
        self.marked_rows = np.zeros(0, dtype=np.int64)
        self._draw_points()
        self._draw_overlays()
        self.reset_view()

    def set_colors(self, colors: np.ndarray) -> None:
        self.colors = np.asarray(colors, dtype=np.float32)
        self._draw_points()

    def _draw_points(self) -> None:
        if len(self.coords):
            self.markers.set_data(self.coords, face_color=self.colors, edge_width=0, size=self.point_size)
        else:
            self.markers.set_data(np.zeros((1, 2), np.float32), face_color=(0, 0, 0, 0), size=0)
        self._projected = None

    def _draw_overlays(self, selection: bool = True, marked: bool = True) -> None:
        """Ring the selection (white) and the clip playing (yellow); only the parts asked for are re-sent."""
        empty = np.zeros((1, self.coords.shape[1] if self.coords.ndim == 2 else 2), np.float32)
        parts = ((self.selection_markers, self.selected_rows, self.point_size + 3, "white", selection),
                 (self.current_markers, self.marked_rows, 18.0, "#ffff00", marked))
        for visual, rows, size, edge, wanted in parts:
            if not wanted:
                continue
            rows = rows[rows < len(self.coords)]
            if len(rows):
                visual.set_data(self.coords[rows], face_color=(0, 0, 0, 0), edge_color=edge, edge_width=2,
                                size=size)
            else:
                visual.set_data(empty, face_color=(0, 0, 0, 0), edge_color=(0, 0, 0, 0), size=0)
        self.canvas.update()

    def reset_view(self) -> None:
        if not len(self.coords):
            return
        low, high = self.coords.min(axis=0), self.coords.max(axis=0)
        pad = np.maximum((high - low) * 0.05, 1e-3)
        if self.coords.shape[1] == 2:
            self.view.camera.set_range(x=(low[0] - pad[0], high[0] + pad[0]), y=(low[1] - pad[1], high[1] + pad[1]))
        else:
            self.view.camera.center = tuple((low + high) / 2)
            self.view.camera.scale_factor = float(np.max(high - low)) * 1.2
        self._projected = None

    def select_rows(self, rows: np.ndarray) -> None:
        """Ring ``rows`` as the selection (also used when a cluster is chosen in a table)."""
        self.selected_rows = np.unique(np.asarray(rows, dtype=np.int64))
        self._draw_overlays(marked=False)
        self.selected.emit(self.selected_rows)

    def mark(self, rows: np.ndarray) -> None:
        """Ring the clips playing in the viewer now."""
        rows = np.asarray(rows, dtype=np.int64)
        if np.array_equal(rows, self.marked_rows):
            return
        self.marked_rows = rows
        self._draw_overlays(selection=False)

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        self.view.camera.interactive = mode == "pick"
        for button, name in zip(self.mode_buttons.buttons(), MODES, strict=True):
            button.setChecked(name == mode)

    # -- geometry -----------------------------------------------------------------------------------
    def canvas_positions(self) -> np.ndarray:
        """(N, 2) pixel position of every point on the canvas now (cached until the view changes)."""
        transform = self.markers.get_transform("visual", "canvas")
        probe = np.eye(4, 3, dtype=np.float32)
        signature = (tuple(np.round(transform.map(probe).ravel(), 5)), tuple(self.canvas.size))
        if self._projected is None or self._projected[0] != signature:
            mapped = transform.map(self.coords) if len(self.coords) else np.zeros((0, 4))
            pixels = mapped[:, :2] / np.where(mapped[:, 3:4] == 0, 1, mapped[:, 3:4])
            self._projected = (signature, pixels.astype(np.float64))
        return self._projected[1]

    def row_at(self, pixel_xy) -> int | None:
        if not len(self.coords):
            return None
        return nearest_point(self.canvas_positions(), np.asarray(pixel_xy, dtype=np.float64), PICK_RADIUS_PX)

    # -- mouse --------------------------------------------------------------------------------------
    def _on_press(self, event) -> None:
        self._press = np.asarray(event.pos[:2], dtype=np.float64)
        self._path = [tuple(self._press)]

    def _on_move(self, event) -> None:
        position = np.asarray(event.pos[:2], dtype=np.float64)
        if self._press is not None and self.mode in ("lasso", "box"):
            self._path.append(tuple(position))
            self._draw_path(position)
            return
        if self._press is None:
            row = self.row_at(position)
            self.hovered.emit(-1 if row is None else row)

    def _on_release(self, event) -> None:
        if self._press is None:
            return
        position = np.asarray(event.pos[:2], dtype=np.float64)
        press, self._press = self._press, None
        self._path.append(tuple(position))
        self.path_line.visible = False
        if self.mode == "lasso" and len(self._path) >= 3:
            self.select_rows(np.flatnonzero(points_in_polygon(self.canvas_positions(), np.asarray(self._path))))
        elif self.mode == "box" and np.hypot(*(position - press)) > CLICK_SLOP_PX:
            self.select_rows(np.flatnonzero(points_in_box(self.canvas_positions(), press, position)))
        elif np.hypot(*(position - press)) <= CLICK_SLOP_PX:
            row = self.row_at(position)
            if row is not None:
                self.clicked.emit(row)

    def _draw_path(self, position: np.ndarray) -> None:
        if self.mode == "box":
            (x0, y0), (x1, y1) = self._path[0], position
            outline = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
        else:
            outline = [*self._path, self._path[0]]
        self.path_line.set_data(np.asarray(outline, dtype=np.float32))
        self.path_line.visible = True


class ClipListPanel(QWidget):
    """The selected clips, listed, and played one after another (a montage) through the viewer.

    ``show_frame(row, frame_index, new_clip)`` is emitted for every frame the montage shows; the owner moves the
    viewer there (switching video and animal when ``new_clip``).
    """

    row_chosen = Signal(int)
    show_frame = Signal(int, int, bool)
    MAX_LISTED = 2000

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from qtpy.QtCore import QTimer
        from qtpy.QtWidgets import QDoubleSpinBox, QListWidget

        self.rows = np.zeros(0, dtype=np.int64)
        self.describe: Callable[[int], str] = str
        self.montage = None
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.step)
        self.title = QLabel("no clips selected (lasso or box on the map, or choose clusters)")
        self.list = QListWidget()
        self.list.currentRowChanged.connect(self._list_row_changed)
        self.play_button, self.stop_button = QPushButton("Play"), QPushButton("Stop")
        self.previous_button, self.next_button = QPushButton("◀ clip"), QPushButton("clip ▶")
        self.speed = QDoubleSpinBox()
        self.speed.setRange(0.1, 10.0)
        self.speed.setValue(1.0)
        self.speed.setSuffix("× speed")
        self.fps = 30.0
        self.play_button.clicked.connect(self.play)
        self.stop_button.clicked.connect(self.stop)
        self.previous_button.clicked.connect(lambda: self.jump(-1))
        self.next_button.clicked.connect(lambda: self.jump(1))
        controls = QHBoxLayout()
        for widget in (self.play_button, self.stop_button, self.previous_button, self.next_button, self.speed):
            controls.addWidget(widget)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.list, 1)
        layout.addLayout(controls)

    def set_rows(self, rows: np.ndarray, start_frame: np.ndarray, stop_frame: np.ndarray,
                 order_key: np.ndarray | None = None) -> None:
        """List ``rows`` (sorted by ``order_key``, e.g. store then time) and prepare the montage."""
        from napari_sbl.cluster.selection import Montage

        self.stop()
        rows = np.asarray(rows, dtype=np.int64)
        if order_key is not None and len(rows):
            rows = rows[np.argsort(order_key[rows], kind="stable")]
        self.rows = rows
        self.montage = Montage(rows, start_frame, stop_frame)
        self.list.blockSignals(True)
        self.list.clear()
        self.list.addItems([self.describe(int(r)) for r in rows[: self.MAX_LISTED]])
        self.list.blockSignals(False)
        more = f" (first {self.MAX_LISTED} listed)" if len(rows) > self.MAX_LISTED else ""
        self.title.setText(f"{len(rows):,} clips selected{more}" if len(rows) else "no clips selected")

    def _list_row_changed(self, index: int) -> None:
        if 0 <= index < len(self.rows):
            if self.montage is not None:
                self.montage.go_to(index)
            self.row_chosen.emit(int(self.rows[index]))

    def play(self) -> None:
        if self.montage is None or not len(self.montage):
            return
        if self.montage.position is None:
            self.montage.go_to(0)
        position = self.montage.position
        self.show_frame.emit(position.row, position.frame_index, True)
        self.timer.start(max(1, int(1000 / (self.fps * self.speed.value()))))

    def stop(self) -> None:
        self.timer.stop()

    @property
    def playing(self) -> bool:
        return self.timer.isActive()

    def step(self) -> None:
        """Advance the montage one frame (the timer calls this; tests may too)."""
        if self.montage is None:
            return
        before = self.montage.clip
        position = self.montage.step()
        if position is None:
            self.stop()
            return
        self.show_frame.emit(position.row, position.frame_index, position.clip != before)

    def jump(self, clips: int) -> None:
        if self.montage is None or not len(self.montage):
            return
        position = self.montage.go_to(min(max(self.montage.clip + clips, 0), len(self.montage) - 1))
        self.show_frame.emit(position.row, position.frame_index, True)
