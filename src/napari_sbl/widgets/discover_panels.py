"""Parts of the Discover dock: the parameters form, the plots (matplotlib) and the link to the viewer.

The form is :class:`~napari_sbl.cluster.run.ClusterParams` field for field; the plots show cluster proportions
per group (stacked bars) and where the chosen clusters happen in the arena; the link finds (or opens) a
session's layers and highlights one animal's mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_sbl.cluster.methods import METHODS
from napari_sbl.cluster.preprocess import CENTRINGS, SCALINGS
from napari_sbl.cluster.reduce import UMAP_METRICS
from napari_sbl.cluster.run import CLUSTER_SPACES, ClusterParams
from napari_sbl.widgets._layers import find_session_layers, layer_for, sbl_info
from napari_sbl.widgets.scatter import category_colors


def _spin(low, high, value, step=None, decimals=None):
    box = QDoubleSpinBox() if decimals is not None else QSpinBox()
    box.setRange(low, high)
    if decimals is not None:
        box.setDecimals(decimals)
    if step is not None:
        box.setSingleStep(step)
    box.setValue(value)
    return box


def _combo(items, current=None) -> QComboBox:
    box = QComboBox()
    box.addItems(list(items))
    if current is not None:
        box.setCurrentText(str(current))
    return box


class ParamsForm(QWidget):
    """One input per :class:`ClusterParams` field (min samples 0 = auto), plus the result's name."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        defaults = ClusterParams()
        self.embedding_box = QComboBox()
        self.scaling_box = _combo(SCALINGS, defaults.scaling)
        self.centre_box = _combo(CENTRINGS, defaults.centre_by)
        self.pca_spin = _spin(0, 4096, defaults.pca_components)
        self.neighbors_spin = _spin(2, 500, defaults.n_neighbors)
        self.min_dist_spin = _spin(0.0, 1.0, defaults.min_dist, 0.05, 3)
        self.metric_box = _combo(UMAP_METRICS, defaults.metric)
        self.seed_spin = _spin(0, 2**31 - 1, defaults.seed)
        self.display_box = _combo(("2", "3"), defaults.display_dims)
        self.space_box = _combo(CLUSTER_SPACES, defaults.cluster_on)
        self.dims_spin = _spin(2, 100, defaults.cluster_dims)
        self.method_box = _combo(METHODS, defaults.method)
        self.resolution_spin = _spin(0.01, 20.0, defaults.resolution, 0.1, 2)
        self.min_size_spin = _spin(2, 100_000, defaults.min_cluster_size)
        self.min_samples_spin = _spin(0, 100_000, 0)
        self.min_samples_spin.setSpecialValueText("auto")
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("auto (from the parameters)")
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        for label, widget in (
                ("Embedding", self.embedding_box), ("Scaling", self.scaling_box), ("Subtract mean of", self.centre_box),
                ("PCA dims (0 = off)", self.pca_spin), ("UMAP neighbours", self.neighbors_spin),
                ("UMAP min dist", self.min_dist_spin), ("Metric", self.metric_box), ("Seed", self.seed_spin),
                ("Map dims", self.display_box), ("Cluster on", self.space_box),
                ("UMAP dims to cluster", self.dims_spin),
                ("Method", self.method_box), ("Leiden resolution", self.resolution_spin),
                ("HDBSCAN min cluster size", self.min_size_spin), ("HDBSCAN min samples", self.min_samples_spin),
                ("Name", self.name_edit)):
            form.addRow(label, widget)

    def params(self) -> ClusterParams:
        return ClusterParams(
            embedding=self.embedding_box.currentText(), scaling=self.scaling_box.currentText(),
            centre_by=self.centre_box.currentText(), pca_components=self.pca_spin.value(),
            n_neighbors=self.neighbors_spin.value(), min_dist=self.min_dist_spin.value(),
            metric=self.metric_box.currentText(), seed=self.seed_spin.value(),
            display_dims=int(self.display_box.currentText()), cluster_on=self.space_box.currentText(),
            cluster_dims=self.dims_spin.value(), method=self.method_box.currentText(),
            resolution=self.resolution_spin.value(), min_cluster_size=self.min_size_spin.value(),
            min_samples=self.min_samples_spin.value() or None,
        )

    def set_params(self, params: ClusterParams) -> None:
        """Show the parameters a result was made with (so Cluster again reproduces it)."""
        for box, value in ((self.embedding_box, params.embedding), (self.scaling_box, params.scaling),
                           (self.centre_box, params.centre_by), (self.metric_box, params.metric),
                           (self.display_box, params.display_dims), (self.space_box, params.cluster_on),
                           (self.method_box, params.method)):
            box.setCurrentText(str(value))
        for spin, value in ((self.pca_spin, params.pca_components), (self.neighbors_spin, params.n_neighbors),
                            (self.min_dist_spin, params.min_dist), (self.seed_spin, params.seed),
                            (self.dims_spin, params.cluster_dims), (self.resolution_spin, params.resolution),
                            (self.min_size_spin, params.min_cluster_size),
                            (self.min_samples_spin, params.min_samples or 0)):
            spin.setValue(value)


class DiscoverPlots(QWidget):
    """Stacked bars of each group's share of clips per cluster, beside the chosen clusters' arena positions."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(5, 3), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.group_box = QComboBox()
        self.group_box.addItems(["video", "animal"])
        row = QHBoxLayout()
        row.addWidget(QLabel("Proportions per"))
        row.addWidget(self.group_box, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.canvas, 1)

    def set_groupings(self, names: Sequence[str]) -> None:
        current = self.group_box.currentText()
        self.group_box.blockSignals(True)
        self.group_box.clear()
        self.group_box.addItems(list(names))
        if current in names:
            self.group_box.setCurrentText(current)
        self.group_box.blockSignals(False)

    def draw(self, labels: np.ndarray, groupings: dict[str, np.ndarray], positions: np.ndarray,
             chosen: Sequence[int], videos: Sequence[dict], store_index: np.ndarray) -> None:
        """Redraw both panels; ``positions`` (N, 2) px per clip, NaN where there are no tracks."""
        self.figure.clear()
        bars, arena = self.figure.subplots(1, 2)
        _, legend = category_colors(labels)
        self._proportions(bars, labels, groupings.get(self.group_box.currentText()), legend)
        self._arena(arena, labels, positions, chosen, legend, videos)
        self.canvas.draw_idle()

    def _proportions(self, axes, labels, groups, legend: dict) -> None:
        from napari_sbl.cluster.summary import group_proportions

        if groups is None:
            axes.set_axis_off()
            return
        shares = group_proportions(labels, groups)
        bottom = np.zeros(len(shares))
        for cluster in shares.columns:
            values = shares[cluster].to_numpy()
            colour = legend.get(cluster, "#8c8c8c")
            axes.bar(range(len(shares)), values, bottom=bottom, color=colour,
                     label="noise" if cluster < 0 else str(cluster))
            bottom += values
        axes.set_xticks(range(len(shares)), [str(g) for g in shares.index], rotation=45, ha="right", fontsize=7)
        axes.set_ylabel("share of clips")
        axes.set_title(f"clusters per {self.group_box.currentText()}", fontsize=8)

    def _arena(self, axes, labels, positions, chosen, legend: dict, videos: Sequence[dict]) -> None:
        finite = np.isfinite(positions).all(axis=1)
        axes.set_title("arena: chosen clusters" if chosen else "arena: choose clusters in the table", fontsize=8)
        axes.scatter(positions[finite, 0], positions[finite, 1], s=2, color="#cccccc", rasterized=True)
        for cluster in chosen:
            rows = finite & (labels == cluster)
            axes.scatter(positions[rows, 0], positions[rows, 1], s=4, color=legend.get(cluster, "#444444"),
                         label=str(cluster), rasterized=True)
        width = max((float(v.get("width") or 0) for v in videos), default=0)
        height = max((float(v.get("height") or 0) for v in videos), default=0)
        if width and height:
            axes.set_xlim(0, width)
            axes.set_ylim(height, 0)
        axes.set_aspect("equal")
        axes.tick_params(labelsize=6)


class ViewerLink:
    """Shows a session in the viewer: its layers visible (opened from the store when missing), others hidden."""

    def __init__(self, viewer) -> None:
        self.viewer = viewer

    def video_layer(self, store_path, open_missing: bool = True):
        path = Path(store_path).resolve()

        def find():
            for layer in find_session_layers(self.viewer, "video"):
                store = sbl_info(layer).get("store")
                if store and Path(store).resolve() == path:
                    return layer
            return None

        if find() is None and open_missing:
            self.viewer.open(str(path), plugin="napari-sbl")
        return find()

    def show_session(self, store_path, animal_id: int) -> None:
        """Make this session the one shown and highlight ``animal_id`` in its masks."""
        video_layer = self.video_layer(store_path)
        if video_layer is None:
            return
        video = sbl_info(video_layer)["video"]
        if len(find_session_layers(self.viewer, "video")) > 1:
            for layer in self.viewer.layers:
                if sbl_info(layer).get("video"):
                    layer.visible = sbl_info(layer)["video"] == video
        masks = layer_for(self.viewer, "masks", video)
        if masks is not None:
            masks.selected_label = animal_id
            masks.show_selected_label = True

    def shown_store(self, store_paths: Sequence[Path]) -> int | None:
        """Position in ``store_paths`` of the first visible session's store, or None."""
        paths = [Path(p).resolve() for p in store_paths]
        for layer in find_session_layers(self.viewer, "video"):
            store = sbl_info(layer).get("store")
            if layer.visible and store and Path(store).resolve() in paths:
                return paths.index(Path(store).resolve())
        return None
