"""Label behaviour dock: the class list, keyboard labelling, label shapes, candidates, import/export.

Keys are bound on the viewer while the dock is open and unbound when it closes; labels go into the
store's :class:`~napari_sbl.behavior.annotations.AnnotationModel`, shared with the timeline dock
(opened at the bottom) and autosaved a moment after each edit. The class list, key bindings and label
shapes live in :mod:`.labels_classes`, :mod:`.labels_keys` and :mod:`.labels_shapes`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import QEvent, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from napari_sbl.behavior.annotation_io import UnknownClassesError, export_csv, import_file, timing_of_store
from napari_sbl.errors import SblError
from napari_sbl.widgets._layers import find_session_layers
from napari_sbl.widgets.labels_classes import ClassListEditing
from napari_sbl.widgets.labels_keys import KEY_HELP as KEY_HELP  # re-exported: this module was its home
from napari_sbl.widgets.labels_keys import LabelKeys
from napari_sbl.widgets.labels_shapes import SHAPES_LAYER as SHAPES_LAYER
from napari_sbl.widgets.labels_shapes import LabelShapes
from napari_sbl.widgets.timeline import TimelineWidget, shared_label_session

if TYPE_CHECKING:
    import napari


class LabelsWidget(ClassListEditing, LabelShapes, LabelKeys, QWidget):
    """Class list + keyboard labelling + label shapes over one video's annotations."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.shared = None
        self.timeline: TimelineWidget | None = None
        self.help_dialog: QDialog | None = None
        self._previous_bindings: list[tuple[object, str, object]] = []
        self._mark_in: int | None = None
        self._shown_shapes = None
        self._play_timer = QTimer(self)
        self._play_timer.timeout.connect(lambda: self.step(1, wrap=False))
        self._build()
        self.viewer.layers.events.inserted.connect(self.refresh)
        self.viewer.layers.events.inserted.connect(self._layer_added)
        self.viewer.layers.events.removed.connect(self.refresh)
        self.refresh()
        self.bind_keys()

    # -- layout ---------------------------------------------------------------------------------
    def _build(self) -> None:
        self.video_box, self.animal_box = QComboBox(), QComboBox()
        self.clip_spin = QSpinBox()
        self.clip_spin.setRange(1, 100_000)
        self.multi_check = QCheckBox("several classes per frame")
        self.class_table = QTableWidget(0, 3)
        self.class_table.setHorizontalHeaderLabels(["key", "class", "frames"])
        self.class_table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.class_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.selection_label, self.status = QLabel("no selection"), QLabel("")
        self.status.setWordWrap(True)
        self.candidate_list = QListWidget()
        form = QFormLayout()
        form.addRow("Video", self.video_box)
        form.addRow("Animal", self.animal_box)
        form.addRow("Clip frames (no selection)", self.clip_spin)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.class_table)
        layout.addWidget(self.multi_check)
        buttons = {}
        rows = (("Add…", "Rename…", "Colour…", "Key…"), ("Merge into…", "Delete"),
                ("Label selection", "Not this class", "Unlabel"), ("Undo", "Redo", "Next unlabelled", "Keys (H)"),
                ("Label shapes layer", "Import…", "Export CSV…", "Reload"))
        for row in rows:
            line = QHBoxLayout()
            for text in row:
                buttons[text] = QPushButton(text)
                line.addWidget(buttons[text])
            layout.addLayout(line)
        layout.addWidget(self.selection_label)
        layout.addWidget(QLabel("Candidates (from clustering or review)"))
        layout.addWidget(self.candidate_list)
        line = QHBoxLayout()
        for text in ("Accept", "Reject", "Reject as 'not'", "Go to"):
            buttons[text] = QPushButton(text)
            line.addWidget(buttons[text])
        layout.addLayout(line)
        layout.addWidget(self.status)
        actions = {"Add…": self.add_class, "Rename…": self.rename_class, "Colour…": self.recolor_class,
                   "Key…": self.set_class_key, "Merge into…": self.merge_class, "Delete": self.delete_class,
                   "Label selection": lambda: self.label_with(self.chosen_class()), "Not this class": self.mark_not,
                   "Unlabel": self.unlabel, "Undo": self.undo, "Redo": self.redo,
                   "Next unlabelled": self.next_unlabelled,
                   "Keys (H)": self.show_help, "Label shapes layer": self.ensure_shapes_layer,
                   "Import…": self._import_dialog, "Export CSV…": self._export_dialog, "Reload": self.reload,
                   "Accept": self.accept_candidate,
                   "Reject": self.reject_candidate, "Reject as 'not'": lambda: self.reject_candidate(True),
                   "Go to": self.go_to_candidate}
        for text, action in actions.items():
            buttons[text].clicked.connect(lambda _=False, act=action: self._guarded(act))
        self.buttons = buttons
        self.video_box.currentTextChanged.connect(self._video_chosen)
        self.animal_box.currentTextChanged.connect(self._animal_chosen)
        self.multi_check.toggled.connect(lambda on: self._guarded(lambda: self.model.set_multi_label(on)))

    def _guarded(self, action) -> None:
        """Run a user action; input errors become a status line, never a crash or lost labels."""
        try:
            action()
        except SblError as err:
            self.status.setText(str(err))

    # -- session ----------------------------------------------------------------------------------
    def refresh(self, *_) -> None:
        names = [layer.name for layer in find_session_layers(self.viewer, "video")]
        current = self.video_box.currentText()
        self.video_box.blockSignals(True)
        self.video_box.clear()
        self.video_box.addItems(names)
        if current in names:
            self.video_box.setCurrentText(current)
        self.video_box.blockSignals(False)
        if self.shared is None and names:
            self._video_chosen()

    def _video_chosen(self, *_) -> None:
        name = self.video_box.currentText()
        if not name or (self.shared is not None and self.shared.video_layer_name == name):
            return
        try:
            shared = shared_label_session(self.viewer, name)
        except SblError as err:
            self.status.setText(str(err))
            return
        if self.shared is not None:
            self.shared.changed.disconnect(self._update_views)
            self.shared.message.disconnect(self.status.setText)
        self.shared = shared
        shared.changed.connect(self._update_views)
        shared.message.connect(self.status.setText)
        fps = float(shared.session.store.video.get("fps") or 25.0)
        self._play_timer.setInterval(max(int(1000 / fps), 5))
        self._ensure_timeline()
        self._update_views()

    def _ensure_timeline(self) -> None:
        window = self.viewer.window._qt_window
        existing = [w for w in window.findChildren(TimelineWidget) if w.shared is self.shared]
        if existing:
            self.timeline = existing[0]
            return
        self.timeline = TimelineWidget(self.viewer, self.shared)
        self.viewer.window.add_dock_widget(self.timeline, area="bottom", name="Timeline")

    @property
    def model(self):
        if self.shared is None:
            raise _no_video()
        return self.shared.model

    def _update_views(self) -> None:
        model = self.model
        self.multi_check.blockSignals(True)
        self.multi_check.setChecked(model.multi_label)
        self.multi_check.blockSignals(False)
        animals = [f"animal {a}" for a in model.animal_ids]
        if [self.animal_box.itemText(i) for i in range(self.animal_box.count())] != animals:
            self.animal_box.blockSignals(True)
            self.animal_box.clear()
            self.animal_box.addItems(animals)
            self.animal_box.blockSignals(False)
        self.animal_box.setCurrentText(f"animal {self.shared.active_animal}")
        self._fill_class_table()
        self._fill_candidates()
        selection = self.shared.selection
        self.selection_label.setText("no selection" if selection is None else
                                     f"selection: frames {selection[0]}–{selection[1] - 1} "
                                     f"({selection[1] - selection[0]} frames)")
        self._sync_shapes_layer()

    def _fill_candidates(self) -> None:
        row = self.candidate_list.currentRow()
        texts = [f"animal {c.animal_id} · frames {c.start_frame}–{c.stop_frame - 1} · {c.class_name} ({c.source})"
                 for c in self.model.pending_candidates()]
        if texts == [self.candidate_list.item(i).text() for i in range(self.candidate_list.count())]:
            return
        self.candidate_list.clear()
        self.candidate_list.addItems(texts)
        if texts and row >= 0:
            self.candidate_list.setCurrentRow(min(row, len(texts) - 1))

    def _animal_chosen(self, text: str) -> None:
        if self.shared is not None and text:
            self.shared.set_active_animal(int(text.split()[-1]))

    # -- labelling ---------------------------------------------------------------------------------
    def current_frame(self) -> int:
        return int(self.viewer.dims.current_step[0])

    def seek(self, frame: int) -> None:
        self.viewer.dims.set_current_step(0, int(np.clip(frame, 0, self.model.n_frames - 1)))

    def target_range(self) -> tuple[int, int]:
        """The selection; else a pending candidate clip under the playhead; else ``clip frames`` from the playhead."""
        if self.shared.selection is not None:
            return self.shared.selection
        frame, animal = self.current_frame(), self.shared.active_animal
        for candidate in self.model.pending_candidates():
            if candidate.animal_id == animal and candidate.start_frame <= frame < candidate.stop_frame:
                return candidate.start_frame, candidate.stop_frame
        return frame, min(frame + self.clip_spin.value(), self.model.n_frames)

    def label_key(self, key: int) -> None:
        """Keys 1–9: the class with that key labels new label shapes, or else the target range."""
        one = self.model.classes.by_key(key)
        if one is None:
            self.status.setText(f"no class has key {key}; give one a key with 'Key…'")
            return
        shapes = self.shapes_layer()
        if shapes is not None and self.viewer.layers.selection.active is shapes and self._pending_shapes(shapes):
            self.assign_shapes(one.id)
            return
        self.label_with(one.id)

    def label_with(self, class_id: int) -> None:
        start, stop = self.target_range()
        self.model.label_range(self.shared.active_animal, start, stop, class_id)
        self.status.setText(f"animal {self.shared.active_animal}: frames {start}–{stop - 1} → "
                            f"{self.model.classes.get(class_id).name}")

    def mark_not(self) -> None:
        start, stop = self.target_range()
        self.model.mark_not(self.shared.active_animal, start, stop, self.chosen_class())

    def unlabel(self) -> None:
        self.model.unlabel_range(self.shared.active_animal, *self.target_range())

    def mark(self, side: str) -> None:
        """I/O: the current frame starts (in) or ends (out, inclusive) the selection."""
        frame = self.current_frame()
        if side == "in":
            self._mark_in = frame
            selection = self.shared.selection
            stop = selection[1] if selection and selection[1] > frame else frame + 1
            self.shared.set_selection(frame, stop)
        else:
            start = self._mark_in if self._mark_in is not None and self._mark_in <= frame else frame
            self.shared.set_selection(start, frame + 1)

    def next_unlabelled(self) -> None:
        stretch = self.model.next_unlabelled(self.shared.active_animal, self.current_frame())
        if stretch is None:
            self.status.setText(f"animal {self.shared.active_animal} is labelled on every frame")
            return
        self.seek(stretch[0])
        self.shared.set_selection(*stretch)

    def step(self, delta: int, wrap: bool = True) -> None:
        frame = self.current_frame() + delta
        if not wrap and frame >= self.model.n_frames:
            self._play_timer.stop()
            return
        self.seek(frame)

    def toggle_play(self) -> None:
        if self._play_timer.isActive():
            self._play_timer.stop()
        else:
            self._play_timer.start()

    def undo(self) -> None:
        done = self.model.undo()
        self.status.setText(f"undid: {done}" if done else "nothing to undo")

    def redo(self) -> None:
        done = self.model.redo()
        self.status.setText(f"redid: {done}" if done else "nothing to redo")
    # -- candidates -------------------------------------------------------------------------------
    def chosen_candidate(self):
        row = self.candidate_list.currentRow()
        pending = self.model.pending_candidates()
        if not 0 <= row < len(pending):
            raise SblError("choose a candidate in the list first")
        return pending[row]

    def accept_candidate(self) -> None:
        candidate = self.chosen_candidate()
        class_id = candidate.class_id if candidate.class_id is not None else self.chosen_class()
        self.model.accept_candidate(candidate, class_id)

    def reject_candidate(self, as_not: bool = False) -> None:
        self.model.reject_candidate(self.chosen_candidate(), hard_negative=as_not)

    def go_to_candidate(self) -> None:
        candidate = self.chosen_candidate()
        self.shared.set_active_animal(candidate.animal_id)
        self.seek(candidate.start_frame)
        self.shared.set_selection(candidate.start_frame, candidate.stop_frame)

    # -- files ------------------------------------------------------------------------------------
    def import_annotations(self, path: str | Path, fmt: str = "auto", add_unknown: bool | None = None) -> None:
        """Import a CSV/BORIS/seed file; unknown classes are added only if allowed (asked when ``None``)."""
        store = self.shared.session.store
        try:
            result = import_file(self.model, Path(path), timing_of_store(store), fmt, add_unknown=bool(add_unknown),
                                 default_animal=self.shared.active_animal)
        except UnknownClassesError as err:
            if add_unknown is None and QMessageBox.question(
                    self, "Unknown classes", f"{Path(path).name} names classes not in the list: "
                    f"{', '.join(err.names)}. Add them?") == QMessageBox.StandardButton.Yes:
                self.import_annotations(path, fmt, add_unknown=True)
                return
            raise
        self.status.setText(f"imported {result.segments} segments from {Path(path).name} ({result.format})"
                            + (f"; added {', '.join(result.classes_added)}" if result.classes_added else ""))

    def reload(self, confirmed: bool = False) -> None:
        """Drop unsaved edits and read the store again (when another program saved meanwhile)."""
        if not confirmed and self.shared.session.dirty and QMessageBox.question(
                self, "Reload annotations", "Unsaved edits will be dropped (export them first to keep them). "
                "Reload from the store?") != QMessageBox.StandardButton.Yes:
            return
        self.shared.reload()

    def export_annotations(self, path: str | Path) -> None:
        rows = export_csv(self.model, Path(path))
        self.status.setText(f"exported {rows} segments to {path}")

    def _import_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import annotations", "",
                                              "Annotations (*.csv *.tsv *.txt *.json);;All files (*)")
        if path:
            self.import_annotations(path)

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export annotations", "annotations.csv", "CSV (*.csv)")
        if path:
            self.export_annotations(path)

    # -- lifecycle --------------------------------------------------------------------------------
    def release(self) -> None:
        """Closing the dock: unbind keys, stop playback, save what is unsaved."""
        self.unbind_keys()
        self._play_timer.stop()
        if self.shared is not None:
            self.shared.save_now()

    def event(self, event) -> bool:
        if event.type() == QEvent.Type.ParentChange and self.parent() is None and self._previous_bindings:
            self.release()
        return super().event(event)

    def closeEvent(self, event) -> None:
        self.release()
        super().closeEvent(event)


def _no_video() -> SblError:
    return SblError("open a video first (File ▸ Open), then choose it in the Video box")
