"""The Clusters tab of the Discover dock and how the map is coloured.

The tab holds the colour-by choice and its legend, the per-cluster table (size, share, runs) whose selection
chooses clusters, and the buttons acting on them; :func:`clip_colours` turns a colouring name into one RGBA per
clip. The dock (:mod:`napari_sbl.widgets.discover`) wires these to the clustering result and the map.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from qtpy.QtCore import QItemSelectionModel, Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_sbl.widgets.scatter import category_colors, continuous_colors

BUILT_IN_COLOURINGS = ("cluster", "animal", "video", "time", "label")
TABLE_COLUMNS = ("cluster", "clips", "share", "runs", "mean run (frames)", "mean run (s)")


def row_layout(*widgets) -> QHBoxLayout:
    """The widgets side by side."""
    row = QHBoxLayout()
    for widget in widgets:
        row.addWidget(widget)
    return row


def clip_colours(result, mode: str, row_meta: dict[str, np.ndarray],
                 annotation_labels: Callable[[], tuple[np.ndarray, list[str]]]) -> tuple[np.ndarray, dict]:
    """(N, 4) RGBA per clip and its legend for the colouring ``mode``; ``annotation_labels`` is only called for
    "label" (it reads every store's annotations)."""
    from napari_sbl.plugin.layers import animal_color

    table = result.table
    if mode == "time":
        span = f"time {table.start_s.min():.0f}–{table.start_s.max():.0f} s (dark → light)"
        return continuous_colors(table.start_s), {span: "#21918c"}
    if mode == "animal":
        return category_colors(table.animal_id, color_of=animal_color)
    if mode == "video":
        return category_colors(np.array(table.store_names(), dtype=object)[table.store_index])
    if mode == "label":
        labels, names = annotation_labels()
        return category_colors(np.array([names[i] if i >= 0 else "" for i in labels], dtype=object))
    if mode in row_meta:
        return category_colors(row_meta[mode])
    return category_colors(result.labels)


def describe_clip(result, row_meta: dict[str, np.ndarray], row: int) -> str:
    """One line saying whose clip ``row`` is, when, in which cluster, and its metadata."""
    table, labels = result.table, result.labels
    position = int(table.store_index[row])
    extra = "".join(f", {k} {v[row]}" for k, v in row_meta.items())
    return (f"{table.store_names()[position]} · animal {table.animal_id[row]} · frames {table.start_frame[row]}–"
            f"{table.stop_frame[row]} ({table.start_s[row]:.1f} s) · cluster {labels[row]}{extra}")


class ClustersTab(QWidget):
    """Colour-by box and legend, the cluster table, and the buttons that act on the chosen clusters."""

    def __init__(self) -> None:
        super().__init__()
        self.stats: dict = {}  # cluster id → its ClusterStats, of the result shown
        self.colour_box = QComboBox()
        self.colour_box.addItems(BUILT_IN_COLOURINGS)
        self.legend = QLabel("")
        self.legend.setWordWrap(True)
        self.cluster_table = QTableWidget(0, len(TABLE_COLUMNS))
        self.cluster_table.setHorizontalHeaderLabels(TABLE_COLUMNS)
        self.cluster_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.cluster_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.cluster_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.cluster_table.verticalHeader().setVisible(False)
        self.representatives_button = QPushButton("Representative clips")
        self.split_button, self.rest_button = QPushButton("Split chosen clusters"), QPushButton("Re-cluster the rest")
        self.class_edit = QLineEdit()
        self.class_edit.setPlaceholderText("behaviour class name")
        self.send_button, self.export_button = QPushButton("Send to labels"), QPushButton("Export CSV…")
        layout = QVBoxLayout(self)
        layout.addLayout(row_layout(QLabel("Colour by"), self.colour_box))
        layout.addWidget(self.legend)
        layout.addWidget(self.cluster_table, 1)
        layout.addLayout(row_layout(self.representatives_button, self.split_button, self.rest_button))
        layout.addLayout(row_layout(self.class_edit, self.send_button, self.export_button))

    def set_colourings(self, extra: list[str]) -> None:
        """Offer the built-in colourings plus ``extra`` (metadata columns), keeping the current choice quietly."""
        builtin = list(BUILT_IN_COLOURINGS)
        current = self.colour_box.currentText()
        self.colour_box.blockSignals(True)
        self.colour_box.clear()
        self.colour_box.addItems(builtin + [c for c in extra if c not in builtin])
        self.colour_box.setCurrentText(current if current else "cluster")
        self.colour_box.blockSignals(False)

    def show_legend(self, legend: dict) -> None:
        items = list(legend.items())[:24]
        self.legend.setText("  ".join(f"<span style='color:{c}'>■</span> {k}" for k, c in items))

    def fill(self, stats) -> None:
        """One table row per cluster; each row remembers its cluster id."""
        self.cluster_table.setRowCount(len(stats))
        for i, s in enumerate(stats):
            values = ("noise" if s.cluster_id < 0 else str(s.cluster_id), f"{s.size:,}", f"{s.share:.1%}",
                      str(s.n_runs), f"{s.mean_run_frames:.1f}", f"{s.mean_run_s:.2f}")
            for j, value in enumerate(values):
                item = QTableWidgetItem(value)
                item.setData(Qt.ItemDataRole.UserRole, s.cluster_id)
                self.cluster_table.setItem(i, j, item)
        self.stats = {s.cluster_id: s for s in stats}

    def chosen_clusters(self) -> list[int]:
        rows = sorted({index.row() for index in self.cluster_table.selectedIndexes()})
        return [int(self.cluster_table.item(r, 0).data(Qt.ItemDataRole.UserRole)) for r in rows]

    def select_clusters(self, clusters) -> None:
        """Select these clusters' rows without emitting the table's selection signal."""
        flags = QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows
        model = self.cluster_table.selectionModel()
        self.cluster_table.blockSignals(True)
        self.cluster_table.clearSelection()
        for r in range(self.cluster_table.rowCount()):
            if int(self.cluster_table.item(r, 0).data(Qt.ItemDataRole.UserRole)) in {int(c) for c in clusters}:
                model.select(self.cluster_table.model().index(r, 0), flags)
        self.cluster_table.blockSignals(False)

    def representatives(self) -> list[int]:
        """Rows of the representative clips of the chosen clusters."""
        return [r for c in self.chosen_clusters() for r in self.stats[c].representatives]
