"""Train dock: pick stores, embedding and profile; train with a live loss / validation-F1 plot.

Cancel stops after the current step and keeps the best epoch so far (the model folder is still
written). The core is :func:`napari_sbl.behavior.train.train_behavior_model`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_sbl.widgets._jobs import JobPanel
from napari_sbl.widgets._layers import find_session_layers, sbl_info

if TYPE_CHECKING:
    import napari


class _EpochBridge(QObject):
    """Carries epoch records from the training thread to the GUI thread."""

    epoch = Signal(object)


class LossPlot(QWidget):
    """Training loss and validation macro-F1 per epoch, on a matplotlib canvas."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4, 2.4), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.loss_axes = self.figure.add_subplot(111)
        self.f1_axes = self.loss_axes.twinx()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.records: list = []
        self.clear()

    def clear(self) -> None:
        self.records = []
        self._draw()

    def add(self, record) -> None:
        self.records.append(record)
        self._draw()

    def _draw(self) -> None:
        epochs = [r.epoch for r in self.records]
        self.loss_axes.clear()
        self.f1_axes.clear()
        self.loss_axes.plot(epochs, [r.train_loss for r in self.records], color="#1f77b4", label="training loss")
        f1 = [(r.epoch, r.val_macro_f1) for r in self.records if r.val_macro_f1 is not None]
        self.f1_axes.plot([e for e, _ in f1], [v for _, v in f1], color="#d62728", label="validation macro-F1")
        self.loss_axes.set_xlabel("epoch")
        self.loss_axes.set_ylabel("loss", color="#1f77b4")
        self.f1_axes.set_ylabel("val macro-F1", color="#d62728")
        self.f1_axes.set_ylim(0, 1)
        self.canvas.draw_idle()


class TrainWidget(QWidget):
    """Stores + embedding + profile → a behaviour model folder, with live progress."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.result = None
        self._build()
        self.viewer.layers.events.inserted.connect(self.add_open_stores)
        self.add_open_stores()
        self.refresh_profiles()

    def _build(self) -> None:
        self.store_list = QListWidget()
        self.add_button = QPushButton("Add store…")
        self.remove_button = QPushButton("Remove")
        self.embedding_box = QComboBox()
        self.profile_box = QComboBox()
        self.duplicate_button = QPushButton("Duplicate…")
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(0, 10000)
        self.epochs_spin.setSpecialValueText("profile's")
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("model folder (default: <first store>-model)")
        self.train_button = QPushButton("Train")
        self.job = JobPanel()
        self.plot = LossPlot()
        self.message = QLabel("")
        self.message.setWordWrap(True)
        rows = QHBoxLayout()
        rows.addWidget(self.add_button)
        rows.addWidget(self.remove_button)
        profile_row = QHBoxLayout()
        profile_row.addWidget(self.profile_box, 1)
        profile_row.addWidget(self.duplicate_button)
        form = QFormLayout()
        form.addRow("Embedding", self.embedding_box)
        form.addRow("Profile", profile_row)
        form.addRow("Epochs", self.epochs_spin)
        form.addRow("Model folder", self.out_edit)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Stores with labels"))
        layout.addWidget(self.store_list)
        layout.addLayout(rows)
        layout.addLayout(form)
        layout.addWidget(self.train_button)
        layout.addWidget(self.job)
        layout.addWidget(self.plot)
        layout.addWidget(self.message)
        self.add_button.clicked.connect(self._add_dialog)
        self.remove_button.clicked.connect(self._remove_selected)
        self.duplicate_button.clicked.connect(self._duplicate_dialog)
        self.train_button.clicked.connect(self.train)
        self._bridge = _EpochBridge()
        self._bridge.epoch.connect(self.plot.add)

    # -- stores, embeddings, profiles -------------------------------------------------------------------
    def store_paths(self) -> list[str]:
        return [self.store_list.item(i).text() for i in range(self.store_list.count())]

    def set_stores(self, paths) -> None:
        self.store_list.clear()
        for path in paths:
            self.store_list.addItem(str(path))
        self.refresh_embeddings()

    def add_open_stores(self, *_) -> None:
        """Every store behind an open video layer joins the list."""
        known = set(self.store_paths())
        for layer in find_session_layers(self.viewer, "video"):
            store = sbl_info(layer).get("store")
            if store and store not in known:
                self.store_list.addItem(store)
                known.add(store)
        self.refresh_embeddings()

    def stores(self) -> list:
        from napari_sbl.store.session import SessionStore

        return [SessionStore.open(p) for p in self.store_paths()]

    def refresh_embeddings(self) -> None:
        from napari_sbl.behavior.dataset import list_embeddings
        from napari_sbl.errors import SblError

        current = self.embedding_box.currentText()
        try:
            sets = [set(list_embeddings(s)) for s in self.stores()]
        except SblError as err:
            self.message.setText(str(err))
            sets = []
        names = sorted(set.intersection(*sets)) if sets else []
        self.embedding_box.clear()
        self.embedding_box.addItems(names)
        if current in names:
            self.embedding_box.setCurrentText(current)

    def refresh_profiles(self, select: str | None = None) -> None:
        from napari_sbl.behavior.profiles import list_profiles

        current = select or self.profile_box.currentText() or "balanced"
        self.profile_box.clear()
        self.profile_box.addItems(list_profiles())
        self.profile_box.setCurrentText(current)

    def _add_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Add a session store (*.sbl.zarr)")
        if path:
            self.set_stores([*self.store_paths(), path])

    def _remove_selected(self) -> None:
        for item in self.store_list.selectedItems():
            self.store_list.takeItem(self.store_list.row(item))
        self.refresh_embeddings()

    def _duplicate_dialog(self) -> None:
        from napari_sbl.behavior.profiles import duplicate_profile

        name, ok = QInputDialog.getText(self, "Duplicate profile", "Name of the copy (then edit its JSON file):")
        if ok and name:
            path = duplicate_profile(self.profile_box.currentText(), name)
            self.refresh_profiles(select=name)
            self.message.setText(f"profile saved to {path}; edit it and pick it here")

    # -- training -----------------------------------------------------------------------------------------
    def out_dir(self) -> Path:
        if self.out_edit.text().strip():
            return Path(self.out_edit.text().strip())
        first = Path(self.store_paths()[0])
        return first.parent / (first.name.removesuffix(".sbl.zarr") + "-model")

    def params(self):
        from napari_sbl.behavior.profiles import load_profile

        params = load_profile(self.profile_box.currentText() or "balanced")
        return replace(params, epochs=self.epochs_spin.value()) if self.epochs_spin.value() else params

    def train(self) -> None:
        from napari_sbl.behavior.train import train_behavior_model

        if not self.store_paths():
            self.message.setText("Add at least one store with embeddings and labels.")
            return
        stores, params, out_dir = self.stores(), self.params(), self.out_dir()
        embedding = self.embedding_box.currentText() or None
        self.plot.clear()
        self.message.setText(f"training '{params.name}' on {len(stores)} store(s) into {out_dir}")

        def job(reporter):
            return train_behavior_model(stores, out_dir, params, embedding, reporter, on_epoch=self._bridge.epoch.emit)

        self.job.start(job, on_done=self._trained)

    def _trained(self, result) -> None:
        self.result = result
        report = result.report
        state = "cancelled: kept the best epoch so far" if result.cancelled else "done"
        if report.get("macro_f1") is None:
            quality = report.get("note", "no validation")
        else:
            quality = (f"validation macro-F1 {report['macro_f1']:.3f}, segmental F1@50 "
                       f"{report['segmental_f1_50']:.3f}")
        self.message.setText(f"{state}; best epoch {result.best_epoch}; {quality}; model in {result.model_dir}")
