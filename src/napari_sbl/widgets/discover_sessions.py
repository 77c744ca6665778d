"""The Sessions and parameters tab of the Discover dock: which session stores to cluster, and how.

The tab owns the list of stores (each opened once), the session metadata table read from a CSV or JSON
file, the parameters form and the learn-features button. It announces changes through signals; the dock
(:mod:`napari_sbl.widgets.discover`) refreshes what the stores offer and runs the work.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QFileDialog, QLabel, QListWidget, QPushButton, QVBoxLayout, QWidget

from napari_sbl.widgets.discover_clusters import row_layout
from napari_sbl.widgets.discover_panels import ParamsForm


class SessionsTab(QWidget):
    """The session stores listed for clustering, their metadata, the parameters form and the learn button."""

    stores_changed = Signal()  # a store was added or removed
    metadata_loaded = Signal()  # a metadata file was read (after the stores it lists were added)

    def __init__(self) -> None:
        super().__init__()
        self.stores: list = []  # the sessions listed, in list order
        self.metadata = None  # the session metadata table, once a file is loaded
        self.store_list = QListWidget()
        self.store_list.setMaximumHeight(80)
        self.add_sessions_button, self.add_store_button = QPushButton("Add open sessions"), QPushButton("Add store…")
        self.remove_store_button, self.metadata_button = QPushButton("Remove"), QPushButton("Metadata…")
        self.metadata_label = QLabel("no metadata file")
        self.form = ParamsForm()
        self.learn_button = QPushButton("Learn behaviour features (removes appearance)")
        layout = QVBoxLayout(self)
        layout.addWidget(self.store_list)
        layout.addLayout(row_layout(self.add_sessions_button, self.add_store_button, self.remove_store_button,
                                    self.metadata_button))
        layout.addWidget(self.metadata_label)
        layout.addWidget(self.form)
        layout.addWidget(self.learn_button)
        self.add_store_button.clicked.connect(self._add_store_dialog)
        self.remove_store_button.clicked.connect(self._remove_store)
        self.metadata_button.clicked.connect(self._metadata_dialog)

    def add_store(self, path) -> None:
        """List the session store at ``path`` unless it is listed already."""
        path = Path(path).resolve()
        if any(store.path.resolve() == path for store in self.stores):
            return
        self.stores.append(self.store_at(path))
        self.store_list.addItem(path.name)
        self.stores_changed.emit()

    def store_at(self, path):
        """The listed store at ``path``, else the store opened from it."""
        from napari_sbl.store.session import SessionStore

        path = Path(path).resolve()
        return next((s for s in self.stores if s.path.resolve() == path), None) or SessionStore.open(path)

    def load_metadata(self, path) -> None:
        """Read a session metadata table; the stores it lists are added."""
        from napari_sbl.project import read_session_metadata

        self.metadata = read_session_metadata(path)
        self.metadata_label.setText(f"metadata: {Path(path).name} ({', '.join(self.metadata.columns)})")
        for store_path in self.metadata.store_paths():  # a metadata table can list a project's sessions
            self.add_store(store_path)
        self.metadata_loaded.emit()

    def _remove_store(self) -> None:
        row = self.store_list.currentRow()
        if 0 <= row < len(self.stores):
            del self.stores[row]
            self.store_list.takeItem(row)
            self.stores_changed.emit()

    def _add_store_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Add a session store (*.sbl.zarr)")
        if path:
            self.add_store(path)

    def _metadata_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Session metadata", "", "Metadata (*.csv *.json)")
        if path:
            self.load_metadata(path)
