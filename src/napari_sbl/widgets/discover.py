"""Discover dock: embeddings of one or many sessions → UMAP → clusters, on a map linked both ways to the video.

The parameters form is :class:`~napari_sbl.cluster.run.ClusterParams`; the work is
:func:`~napari_sbl.cluster.run.cluster_stores` in a thread. Results come from the stores' cache whenever the
parameters match, so re-opening a clustering or re-colouring the map never recomputes. The tabs are
:class:`~.discover_sessions.SessionsTab`, :class:`~.discover_clusters.ClustersTab` and the plots; the map (a vispy
scatter) and the selected-clips list live in a second dock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QFileDialog, QLabel, QPushButton, QSplitter, QTabWidget, QVBoxLayout, QWidget

from napari_sbl.cluster.run import ClusterParams
from napari_sbl.cluster.selection import clips_at_frame
from napari_sbl.widgets._jobs import JobPanel
from napari_sbl.widgets._layers import find_session_layers, sbl_info
from napari_sbl.widgets.discover_clusters import ClustersTab, clip_colours, describe_clip
from napari_sbl.widgets.discover_clusters import row_layout as _row
from napari_sbl.widgets.discover_panels import DiscoverPlots, ViewerLink
from napari_sbl.widgets.discover_sessions import SessionsTab
from napari_sbl.widgets.scatter import ClipListPanel, ScatterView

if TYPE_CHECKING:
    import napari


class DiscoverWidget(QWidget):
    """Cluster clip embeddings and explore the clusters on a map linked to the video."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.result_stores: list = []  # the sessions of the result shown, in its row order
        self.result = None
        self.row_meta: dict[str, np.ndarray] = {}
        self._derived: dict[str, object] = {}
        self._focus: tuple[int, int] | None = None  # (store position, animal id) shown in the viewer
        self.scatter = ScatterView()
        self.link = ViewerLink(napari_viewer)
        self.clips = ClipListPanel()
        self.plots = DiscoverPlots()
        self._build_controls()
        self._connect()
        self.map_dock = self._dock_map()
        self.viewer.dims.events.current_step.connect(self._on_frame)
        self.add_open_sessions()

    # -- layout -------------------------------------------------------------------------------------------
    def _build_controls(self) -> None:
        sessions = self.sessions_tab = SessionsTab()  # its list and form stay reachable under their old names
        self.stores, self.form = sessions.stores, sessions.form  # self.stores: the sessions listed in the dock
        self.open_box = QComboBox()
        self.cluster_button, self.open_button = QPushButton("Cluster"), QPushButton("Open")
        self.job = JobPanel()
        self.message = QLabel("Open sessions that have embeddings, then Cluster.")
        self.message.setWordWrap(True)
        tab = self.clusters_tab = ClustersTab()  # its widgets stay reachable under their old names
        self.colour_box, self.legend, self.cluster_table = tab.colour_box, tab.legend, tab.cluster_table
        self.representatives_button, self.split_button, self.rest_button = (
            tab.representatives_button, tab.split_button, tab.rest_button)
        self.class_edit, self.send_button, self.export_button = tab.class_edit, tab.send_button, tab.export_button
        self._lay_out()

    def _lay_out(self) -> None:
        self.tabs = QTabWidget()
        for page, title in ((self.sessions_tab, "Sessions and parameters"), (self.clusters_tab, "Clusters"),
                            (self.plots, "Plots")):
            self.tabs.addTab(page, title)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs, 1)
        layout.addLayout(_row(self.cluster_button, self.open_box, self.open_button))
        layout.addWidget(self.job)
        layout.addWidget(self.message)

    def _connect(self) -> None:
        self.sessions_tab.add_sessions_button.clicked.connect(self.add_open_sessions)
        self.sessions_tab.stores_changed.connect(self._stores_changed)
        self.sessions_tab.metadata_loaded.connect(self._metadata_loaded)
        self.cluster_button.clicked.connect(self.run_clustering)
        self.open_button.clicked.connect(self.open_clustering)
        self.sessions_tab.learn_button.clicked.connect(self.learn_features)
        self.colour_box.currentTextChanged.connect(self.recolour)
        self.cluster_table.itemSelectionChanged.connect(self._clusters_chosen)
        self.representatives_button.clicked.connect(self.show_representatives)
        self.split_button.clicked.connect(lambda: self.run_subclustering(exclude=False))
        self.rest_button.clicked.connect(lambda: self.run_subclustering(exclude=True))
        self.send_button.clicked.connect(self.send_to_labels)
        self.export_button.clicked.connect(self._export_dialog)
        self.plots.group_box.currentTextChanged.connect(lambda *_: self._draw_plots())
        self.scatter.hovered.connect(self._hovered)
        self.scatter.clicked.connect(self.show_clip)
        self.scatter.selected.connect(self._selected)
        self.clips.row_chosen.connect(self.show_clip)
        self.clips.show_frame.connect(self._montage_frame)

    def _dock_map(self):
        container = QSplitter(Qt.Orientation.Vertical)
        container.addWidget(self.scatter)
        container.addWidget(self.clips)
        container.setStretchFactor(0, 3)
        container.setStretchFactor(1, 1)
        container.setSizes([420, 160])
        self.map_container = container
        window = getattr(self.viewer, "window", None)
        if window is None or not hasattr(window, "add_dock_widget"):
            return None
        return window.add_dock_widget(container, name="Discover map", area="right")

    # -- sessions -----------------------------------------------------------------------------------------
    def add_open_sessions(self) -> None:
        for layer in find_session_layers(self.viewer, "video"):
            if sbl_info(layer).get("store"):
                self.add_store(sbl_info(layer)["store"])

    def add_store(self, path) -> None:
        self.sessions_tab.add_store(path)

    def _stores_changed(self) -> None:
        from napari_sbl.cluster.preprocess import available_embeddings
        from napari_sbl.cluster.run import list_clusterings

        current = self.form.embedding_box.currentText()
        names = available_embeddings(self.stores)
        self.form.embedding_box.clear()
        self.form.embedding_box.addItems(names)
        if current in names:
            self.form.embedding_box.setCurrentText(current)
        self.open_box.clear()
        self.open_box.addItems(list_clusterings(self.stores))
        if self.stores and not names:
            self.message.setText("These sessions have no embeddings in common yet; run the Embed step first.")

    def load_metadata(self, path) -> None:
        self.sessions_tab.load_metadata(path)

    def _metadata_loaded(self) -> None:
        if self.result is not None:
            self._result_metadata()

    def params(self) -> ClusterParams:
        return self.form.params()

    # -- running ------------------------------------------------------------------------------------------
    def run_clustering(self):
        from napari_sbl.cluster.run import cluster_stores

        if not self.stores or not self.form.embedding_box.currentText():
            self.message.setText("Add sessions that have embeddings first.")
            return None
        stores, params, name = list(self.stores), self.params(), self.form.name_edit.text().strip() or None
        return self.job.start(lambda reporter: cluster_stores(stores, params, name, reporter), on_done=self.show_result)

    def open_clustering(self):
        from napari_sbl.cluster.run import load_clustering

        name = self.open_box.currentText()
        if not name:
            return None
        stores = list(self.stores)
        return self.job.start(lambda reporter: load_clustering(stores, name), on_done=self.show_result)

    def run_subclustering(self, exclude: bool):
        from napari_sbl.cluster.run import subcluster

        clusters = self.chosen_clusters()
        if self.result is None or not clusters:
            self.message.setText("Choose clusters in the table first.")
            return None
        stores, parent, params = list(self.result_stores), self.result.name, self.params()
        return self.job.start(lambda reporter: subcluster(stores, parent, clusters, exclude, params, None, reporter),
                              on_done=self.show_result)

    def learn_features(self):
        """Train the temporal-contrastive projection of the chosen embedding (becomes ``<embedding>-learned``)."""
        from napari_sbl.cluster.learned import LearnParams, learn_features

        source = self.form.embedding_box.currentText()
        if not self.stores or not source:
            self.message.setText("Add sessions that have embeddings first.")
            return None
        stores, params = list(self.stores), LearnParams(source=source, seed=self.form.seed_spin.value())

        def done(result) -> None:
            self._stores_changed()
            self.form.embedding_box.setCurrentText(result.name)
            self.message.setText(f"learned {result.name} from {result.n_clips:,} clips (held-out loss "
                                 f"{result.loss_first:.2f} → {result.loss_best:.2f}); cluster it next")

        return self.job.start(lambda reporter: learn_features(stores, params, reporter), on_done=done)

    def show_result(self, result) -> None:
        """Show a clustering on the map and in the table (nothing is recomputed here)."""
        self.result = result
        self.result_stores = [self.sessions_tab.store_at(path) for path in result.table.store_paths]
        self._derived = {}
        self._focus = None
        self.form.set_params(result.params)
        self._result_metadata()
        coords = result.embedding_3d if result.embedding_3d is not None else result.embedding_2d
        rgba, legend = self.colours_for(self.colour_box.currentText())
        self.scatter.set_points(coords, rgba)
        self.clusters_tab.show_legend(legend)
        self.clusters_tab.fill(result.stats())
        self.clips.describe = self.describe
        self.clips.set_rows(np.zeros(0, np.int64), result.table.start_frame, result.table.stop_frame)
        what = ", ".join(sorted(result.computed)) or "nothing (loaded from the stores)"
        self.message.setText(f"{result.summary_lines()[1]}\ncomputed: {what}; saved as clusters/{result.name}")
        self._stores_changed()
        self._draw_plots()

    def _result_metadata(self) -> None:
        from napari_sbl.cluster.summary import row_metadata

        metadata = self.sessions_tab.metadata
        records = [metadata.for_session(store.path, store.video_path()) if metadata else {}
                   for store in self.result_stores]
        self.row_meta = row_metadata(self.result.table, records)
        self.clusters_tab.set_colourings(list(self.row_meta))
        self.plots.set_groupings(["video", "animal", *self.row_meta])

    # -- colours and descriptions -------------------------------------------------------------------------
    def colours_for(self, mode: str):
        return clip_colours(self.result, mode, self.row_meta, self._annotation_labels)

    def _annotation_labels(self):
        from napari_sbl.cluster.summary import clip_annotation_labels

        if "labels" not in self._derived:
            self._derived["labels"] = clip_annotation_labels(self.result_stores, self.result.table)
        return self._derived["labels"]

    def recolour(self, *_) -> None:
        if self.result is None:
            return
        rgba, legend = self.colours_for(self.colour_box.currentText())
        self.scatter.set_colors(rgba)
        self.clusters_tab.show_legend(legend)

    def describe(self, row: int) -> str:
        return describe_clip(self.result, self.row_meta, row)

    def _hovered(self, row: int) -> None:
        self.scatter.info.setText(self.describe(row) if row >= 0 and self.result is not None else "")

    # -- table, selection, labels, export -----------------------------------------------------------------
    def chosen_clusters(self) -> list[int]:
        return self.clusters_tab.chosen_clusters()

    def choose_clusters(self, clusters) -> None:
        """Select these clusters in the table (their clips become the selection)."""
        self.clusters_tab.select_clusters(clusters)
        self._clusters_chosen()

    def _clusters_chosen(self) -> None:
        if self.result is not None:
            self.scatter.select_rows(np.flatnonzero(np.isin(self.result.labels, self.chosen_clusters())))
            self._draw_plots()

    def show_representatives(self) -> None:
        rows = self.clusters_tab.representatives() if self.result else []
        if rows:
            self.scatter.select_rows(np.asarray(rows))

    def _selected(self, rows) -> None:
        if self.result is None:
            return
        table = self.result.table
        order = table.store_index.astype(np.int64) * (1 << 40) + table.animal_id.astype(np.int64) * (1 << 32) \
            + table.start_frame
        self.clips.set_rows(rows, table.start_frame, table.stop_frame, order_key=order)

    def send_to_labels(self) -> int:
        from napari_sbl.cluster.candidates import send_to_labels

        if self.result is None:
            return 0
        selection = self.clips.rows
        clusters = None if len(selection) else self.chosen_clusters()
        added = send_to_labels(self.result_stores, self.result, self.class_edit.text(), clusters=clusters,
                               rows=selection if len(selection) else None)
        self.message.setText(f"{added} clips added as '{self.class_edit.text().strip()}' candidates "
                             "(annotations/candidates); review them in the labelling dock")
        return added

    def export_csv(self, path) -> None:
        from napari_sbl.cluster.run import export_csv

        rows = self.clips.rows if len(self.clips.rows) else None
        export_csv(self.result, path, rows=rows, metadata=self.row_meta)

    def _draw_plots(self) -> None:
        if self.result is None:
            return
        from napari_sbl.cluster.summary import clip_positions

        if "positions" not in self._derived:
            self._derived["positions"] = clip_positions(self.result_stores, self.result.table)
        table = self.result.table
        groupings = {"video": np.array(table.store_names(), dtype=object)[table.store_index],
                     "animal": table.animal_id.astype(str), **self.row_meta}
        self.plots.draw(self.result.labels, groupings, self._derived["positions"], self.chosen_clusters(),
                        [store.video for store in self.result_stores], table.store_index)

    # -- the viewer link ----------------------------------------------------------------------------------
    def show_clip(self, row: int) -> None:
        """Move the viewer to the clip's video, first frame and animal (its mask highlighted)."""
        if self.result is None:
            return
        table = self.result.table
        position, animal_id = int(table.store_index[row]), int(table.animal_id[row])
        self._show_session(position, animal_id)
        self.viewer.dims.set_current_step(0, int(table.start_frame[row]))

    def _montage_frame(self, row: int, frame_index: int, new_clip: bool) -> None:
        if new_clip:
            table = self.result.table
            self._show_session(int(table.store_index[row]), int(table.animal_id[row]))
        self.viewer.dims.set_current_step(0, frame_index)

    def _show_session(self, position: int, animal_id: int) -> None:
        self._focus = (position, animal_id)
        self.clips.fps = float(self.result_stores[position].video.get("fps") or 30.0)
        self.link.show_session(self.result_stores[position].path, animal_id)

    def _on_frame(self, event=None) -> None:
        """Ring the clips containing the viewer's frame: of the animal in focus, else of every animal shown."""
        if self.result is None:
            return
        position, animal_id = self._focus or (self.link.shown_store(self.result.table.store_paths), None)
        if position is None:
            return
        table = self.result.table
        rows = np.arange(len(table))[table.rows_of(position)]
        if animal_id is not None:
            rows = rows[table.animal_id[rows] == animal_id]
        frame_index = int(self.viewer.dims.current_step[0])
        self.scatter.mark(clips_at_frame(table.start_frame, table.stop_frame, frame_index, rows))

    # -- dialogs ------------------------------------------------------------------------------------------
    def _export_dialog(self) -> None:
        if self.result is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export clips", f"{self.result.name}.csv", "CSV (*.csv)")
        if path:
            self.export_csv(path)
