"""Session dock: which video and store a layer belongs to, and what the store holds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtWidgets import QComboBox, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_sbl.widgets._layers import fill_layer_box, find_session_layers, sbl_info

if TYPE_CHECKING:
    import napari


class SessionWidget(QWidget):
    """Pick a video layer; see its session; create the store for a video opened without one."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.layer_box = QComboBox()
        self.summary = QLabel("Open a video (File ▸ Open) or a session store (*.sbl.zarr).")
        self.summary.setWordWrap(True)
        self.create_button = QPushButton("Create session store")
        self.create_button.clicked.connect(self.create_store)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Video layer"))
        layout.addWidget(self.layer_box)
        layout.addWidget(self.summary)
        layout.addWidget(self.create_button)
        layout.addStretch(1)
        self.viewer.layers.events.inserted.connect(self.refresh)
        self.viewer.layers.events.removed.connect(self.refresh)
        self.layer_box.currentTextChanged.connect(self.show_summary)
        self.refresh()

    def refresh(self, *_) -> None:
        names = [layer.name for layer in find_session_layers(self.viewer, "video")]
        fill_layer_box(self.layer_box, names)
        self.show_summary()

    def _layer(self):
        name = self.layer_box.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def show_summary(self, *_) -> None:
        from napari_sbl.pipeline.summary import session_summary
        from napari_sbl.store.session import SessionStore

        layer = self._layer()
        if layer is None:
            self.summary.setText("No video layer. Open a video (File ▸ Open) or a session store (*.sbl.zarr).")
            self.create_button.setEnabled(False)
            return
        info = sbl_info(layer)
        if info.get("store"):
            lines = session_summary(SessionStore.open(info["store"]))
            self.summary.setText("\n".join([f"store: {info['store']}", *lines]))
            self.create_button.setEnabled(False)
        else:
            self.summary.setText(f"video: {info.get('video')}\nno session store yet")
            self.create_button.setEnabled(True)

    def create_store(self) -> None:
        from napari_sbl.pipeline.session import open_session

        layer = self._layer()
        if layer is None:
            return
        _, store = open_session(sbl_info(layer)["video"])
        layer.metadata["napari_sbl"] = {**sbl_info(layer), "store": str(store.path)}
        self.show_summary()
