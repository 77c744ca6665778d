"""Analyze dock: ethograms, time budgets, bouts, transitions and group comparisons of one or many stores.

The dock is a view over :mod:`napari_sbl.analysis`: it gathers the stores (the open session layers plus any
added by hand), runs :func:`~napari_sbl.analysis.run.analyse` in a worker, and draws the same matplotlib
figures the CLI saves into a canvas. Regions are drawn in a Shapes layer whose ``name`` feature names them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_sbl.analysis.run import Analysis, AnalyzeParams
from napari_sbl.analysis.tables import SUBJECT_METRICS
from napari_sbl.widgets._jobs import JobPanel
from napari_sbl.widgets._layers import find_session_layers, sbl_info

if TYPE_CHECKING:
    import napari

REGIONS_LAYER = "regions"


class AnalyzeWidget(QWidget):
    """Choose stores, source and groups; compute; browse and save figures; export tables and overlays."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.analysis: Analysis | None = None
        self._extra_stores: list[str] = []
        self._build_controls()
        self.viewer.layers.events.inserted.connect(self.refresh_stores)
        self.viewer.layers.events.removed.connect(self.refresh_stores)
        self.refresh_stores()

    # -- layout ---------------------------------------------------------------------------------
    def _build_controls(self) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.store_list = QListWidget()
        self.store_list.setMaximumHeight(90)
        self.add_store_button, self.remove_store_button = QPushButton("Add store…"), QPushButton("Remove")
        self.source_box = QComboBox()
        self.source_box.addItems(["auto", "annotations", "predictions"])
        self.model_box = QComboBox()
        self.groups_edit = QLineEdit()
        self.groups_edit.setPlaceholderText("CSV/JSON: store or video, group, genotype, …")
        self.groups_button = QPushButton("…")
        self.group_column_box = QComboBox()
        self.bin_spin = QDoubleSpinBox()
        self.bin_spin.setRange(0, 600)
        self.bin_spin.setSpecialValueText("off")
        self.region_mode_box = QComboBox()
        self.region_mode_box.addItems(["start", "majority"])
        self.region_name_edit = QLineEdit("region 1")
        self.compute_button = QPushButton("Compute")
        self.figure_box = QComboBox()
        self.metric_box = QComboBox()
        self.metric_box.addItems(list(SUBJECT_METRICS))
        self.metric_box.setToolTip("what group comparison plots show, per animal")
        self.figure = Figure(figsize=(5, 4), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(320)
        self.save_figure_button = QPushButton("Save figure…")
        self.export_button = QPushButton("Export tables…")
        self.regions_button, self.save_regions_button = QPushButton("Regions layer"), QPushButton("Save regions")
        self.start_spin, self.stop_spin = QSpinBox(), QSpinBox()
        for spin in (self.start_spin, self.stop_spin):
            spin.setRange(0, 10_000_000)
        self.stop_spin.setSpecialValueText("end")
        self.overlay_button = QPushButton("Export overlay video…")
        self.job = JobPanel()
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self._lay_out()
        self._connect()

    def _lay_out(self) -> None:
        form = QFormLayout()
        form.addRow("Stores", self.store_list)
        form.addRow("", _row(self.add_store_button, self.remove_store_button))
        form.addRow("Source", self.source_box)
        form.addRow("Model", self.model_box)
        form.addRow("Groups table", _row(self.groups_edit, self.groups_button))
        form.addRow("Group column", self.group_column_box)
        form.addRow("Time bins (min)", self.bin_spin)
        form.addRow("Bout region", self.region_mode_box)
        form.addRow("First frame", self.start_spin)
        form.addRow("Stop before", self.stop_spin)
        form.addRow("Region name", self.region_name_edit)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(_row(self.regions_button, self.save_regions_button))
        layout.addWidget(self.compute_button)
        layout.addWidget(_row(self.figure_box, self.metric_box))
        layout.addWidget(self.canvas, 1)
        layout.addWidget(_row(self.save_figure_button, self.export_button))
        layout.addWidget(self.overlay_button)
        layout.addWidget(self.job)
        layout.addWidget(self.message)

    def _connect(self) -> None:
        self.add_store_button.clicked.connect(self._add_store_dialog)
        self.remove_store_button.clicked.connect(self._remove_store)
        self.groups_button.clicked.connect(self._groups_dialog)
        self.groups_edit.editingFinished.connect(self._groups_changed)
        self.compute_button.clicked.connect(self.compute)
        self.figure_box.currentTextChanged.connect(self.show_figure)
        self.metric_box.currentTextChanged.connect(self.show_figure)
        self.save_figure_button.clicked.connect(self._save_figure_dialog)
        self.export_button.clicked.connect(self._export_dialog)
        self.regions_button.clicked.connect(self.regions_layer)
        self.save_regions_button.clicked.connect(self.save_regions)
        self.region_name_edit.textChanged.connect(self._update_region_default)
        self.overlay_button.clicked.connect(self._overlay_dialog)

    # -- stores and parameters ----------------------------------------------------------------------
    def refresh_stores(self, *_) -> None:
        stores = [sbl_info(layer).get("store") for layer in find_session_layers(self.viewer, "video")]
        paths = list(dict.fromkeys([s for s in stores if s] + self._extra_stores))
        self.store_list.clear()
        self.store_list.addItems(paths)
        self._refresh_models(paths)

    def store_paths(self) -> list[str]:
        return [self.store_list.item(i).text() for i in range(self.store_list.count())]

    def add_store(self, path: str | Path) -> None:
        self._extra_stores.append(str(path))
        self.refresh_stores()

    def _refresh_models(self, paths: list[str]) -> None:
        from napari_sbl.analysis.sequences import available_sources
        from napari_sbl.errors import StoreError
        from napari_sbl.store.session import SessionStore

        models = set()
        for path in paths:
            try:
                models.update(available_sources(SessionStore.open(path, mode="r"))["predictions"])
            except StoreError:
                continue
        current = self.model_box.currentText()
        self.model_box.clear()
        self.model_box.addItems(["", *sorted(models)])
        self.model_box.setCurrentText(current)

    def set_groups_file(self, path: str | Path) -> None:
        self.groups_edit.setText(str(path))
        self._groups_changed()

    def _groups_changed(self) -> None:
        from napari_sbl.errors import SblError
        from napari_sbl.project import read_session_metadata

        self.group_column_box.clear()
        text = self.groups_edit.text().strip()
        if not text:
            return
        try:
            self.group_column_box.addItems(["all columns", *read_session_metadata(text).columns])
        except SblError as err:
            self.message.setText(str(err))

    def params(self) -> AnalyzeParams:
        groups = self.groups_edit.text().strip()
        column = self.group_column_box.currentText()
        return AnalyzeParams(
            source=self.source_box.currentText(), model=self.model_box.currentText() or None,
            start=self.start_spin.value(), stop=self.stop_spin.value() or None,
            bin_minutes=self.bin_spin.value() or None, region_mode=self.region_mode_box.currentText(),
            groups_file=Path(groups) if groups else None,
            group_columns=[column] if column and column != "all columns" else None,
        )

    # -- computing and figures ----------------------------------------------------------------------
    def compute(self) -> None:
        from napari_sbl.analysis.run import analyse

        paths, params = self.store_paths(), self.params()
        if not paths:
            self.message.setText("Open a session store (File ▸ Open) or add one with 'Add store…'.")
            return
        self.job.start(lambda reporter: analyse(paths, params, reporter), on_done=self._computed)

    def _computed(self, analysis: Analysis) -> None:
        from napari_sbl.analysis.run import analysis_figures, summary_lines

        self.analysis = analysis
        current = self.figure_box.currentText()
        self.figure_box.blockSignals(True)
        self.figure_box.clear()
        self.figure_box.addItems(list(analysis_figures(analysis)))
        if current:
            self.figure_box.setCurrentText(current)
        self.figure_box.blockSignals(False)
        self.show_figure()
        self.message.setText("\n".join(summary_lines(analysis)))

    def show_figure(self, *_) -> None:
        from napari_sbl.analysis.run import analysis_figures

        if self.analysis is None:
            return
        makers = analysis_figures(self.analysis, self.metric_box.currentText())
        name = self.figure_box.currentText()
        if name not in makers:
            return
        self.figure.clear()
        makers[name](self.figure)
        self.canvas.draw_idle()

    def save_figure(self, path: str | Path) -> Path:
        """Save the figure shown (PNG or SVG, by the file's suffix)."""
        from napari_sbl.analysis.figures import save_figure

        path = Path(path)
        fmt = path.suffix.lstrip(".").lower() or "png"
        return save_figure(self.figure, path.with_suffix(""), (fmt,))[0]

    def export_tables(self, folder: str | Path) -> None:
        """Write every table and figure of the last computation into ``folder`` (in the worker)."""
        from napari_sbl.analysis.run import write_analysis

        if self.analysis is None:
            self.message.setText("Compute first, then export.")
            return
        analysis, params = self.analysis, self.params()
        self.job.start(lambda reporter: write_analysis(analysis, folder, params, reporter),
                       on_done=lambda files: self.message.setText(f"wrote {len(files)} files to {folder}"))

    # -- regions --------------------------------------------------------------------------------------
    def _current_store(self):
        from napari_sbl.store.session import SessionStore

        item = self.store_list.currentItem() or (self.store_list.item(0) if self.store_list.count() else None)
        return SessionStore.open(item.text()) if item is not None else None

    def regions_layer(self):
        """The Shapes layer of regions (created with the store's saved regions and a ``name`` feature)."""
        from napari_sbl.analysis.regions import load_regions, shapes_from_regions

        if REGIONS_LAYER in self.viewer.layers:
            return self.viewer.layers[REGIONS_LAYER]
        store = self._current_store()
        data, kinds, names = shapes_from_regions(load_regions(store) if store is not None else [])
        metadata = {"napari_sbl": {"role": "regions", "store": str(store.path) if store else None}}
        layer = self.viewer.add_shapes(data or None, shape_type=kinds or "rectangle", name=REGIONS_LAYER,
                                       features={"name": np.array(names, dtype=object)}, metadata=metadata,
                                       edge_color="yellow", face_color=[1, 1, 0, 0.15], ndim=2)
        layer.feature_defaults = {"name": self.region_name_edit.text()}
        layer.mode = "add_rectangle"
        return layer

    def _update_region_default(self, text: str) -> None:
        if REGIONS_LAYER in self.viewer.layers:
            self.viewer.layers[REGIONS_LAYER].feature_defaults = {"name": text}

    def save_regions(self) -> list:
        """Save the regions layer's shapes (named by its ``name`` feature) into the chosen store."""
        from napari_sbl.analysis.regions import regions_from_shapes, save_regions
        from napari_sbl.errors import SblError

        store = self._current_store()
        if store is None or REGIONS_LAYER not in self.viewer.layers:
            self.message.setText("Open a store and draw regions in the 'regions' layer first.")
            return []
        layer = self.viewer.layers[REGIONS_LAYER]
        names = layer.features["name"].tolist() if "name" in layer.features else [None] * len(layer.data)
        try:
            regions = regions_from_shapes(layer.data, layer.shape_type, names)
            save_regions(store, regions)
        except SblError as err:
            self.message.setText(str(err))
            return []
        self.message.setText(f"saved {len(regions)} regions ({', '.join(r.name for r in regions)}) to {store.path}")
        return regions

    # -- overlay --------------------------------------------------------------------------------------
    def export_overlay(self, path: str | Path) -> None:
        """Write the chosen store's video with outlines, ids and behaviour over the chosen frames."""
        from napari_sbl.analysis.overlay import OverlayParams, export_overlay
        from napari_sbl.analysis.sequences import load_sequences
        from napari_sbl.pipeline.session import open_store_session

        store = self._current_store()
        if store is None:
            self.message.setText("Open a session store first.")
            return
        params = self.params()
        overlay = OverlayParams(start=params.start, stop=params.stop)

        def job(reporter):
            video, session = open_store_session(store.path)
            seq = load_sequences(session, params.source, params.model)
            return export_overlay(video, session, seq, path, overlay, reporter)

        self.job.start(job, on_done=lambda written: self.message.setText(f"wrote {written}"))

    # -- dialogs ----------------------------------------------------------------------------------------
    def _add_store_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Add a session store (*.sbl.zarr)")
        if path:
            self.add_store(path)

    def _remove_store(self) -> None:
        item = self.store_list.currentItem()
        if item is not None and item.text() in self._extra_stores:
            self._extra_stores.remove(item.text())
            self.refresh_stores()

    def _groups_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Groups table", "", "Metadata (*.csv *.json)")
        if path:
            self.set_groups_file(path)

    def _save_figure_dialog(self) -> None:
        name = self.figure_box.currentText() or "figure"
        path, _ = QFileDialog.getSaveFileName(self, "Save figure", f"{name}.png", "PNG (*.png);;SVG (*.svg)")
        if path:
            self.message.setText(f"saved {self.save_figure(path)}")

    def _export_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export tables and figures into")
        if folder:
            self.export_tables(folder)

    def _overlay_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export overlay video", "overlay.mp4", "MP4 (*.mp4)")
        if path:
            self.export_overlay(path)


def _row(*widgets: QWidget) -> QWidget:
    holder = QWidget()
    layout = QHBoxLayout(holder)
    layout.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        layout.addWidget(widget)
    return holder
