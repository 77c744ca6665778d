"""Label shapes for the labels dock: boxes and polygons drawn on the video, given a class by key,
labelling the animal under them (or recorded as a region) and mirrored from the model's stored shapes.
"""

from __future__ import annotations

import numpy as np

from napari_sbl.behavior.annotation_candidates import ShapeAnnotation
from napari_sbl.behavior.annotation_store import animal_under_shape
from napari_sbl.widgets._layers import sbl_info

SHAPES_LAYER = "label shapes"


class LabelShapes:
    """The label shapes layer, mixed into :class:`~napari_sbl.widgets.labels.LabelsWidget`.

    The host provides ``viewer``, ``shared``, ``model``, ``status``, ``clip_spin``, ``_shown_shapes``
    and ``_bind_layer``.
    """

    def shapes_layer(self):
        for layer in self.viewer.layers:
            info = sbl_info(layer)
            if info.get("role") == "label_shapes" and info.get("store") == str(self.shared.session.store.path):
                return layer
        return None

    def ensure_shapes_layer(self):
        """The label shapes layer (stored shapes reloaded); draw a box or polygon, then press a class key."""
        layer = self.shapes_layer()
        if layer is None:
            video = self.viewer.layers[self.shared.video_layer_name]
            metadata = {"napari_sbl": {**sbl_info(video), "role": "label_shapes"}}
            columns = ("class_id", "animal_id", "start_frame", "stop_frame")
            layer = self.viewer.add_shapes(ndim=3, name=SHAPES_LAYER, metadata=metadata, edge_width=2,
                                           face_color=[1, 1, 1, 0.15], edge_color="white",
                                           features={c: np.zeros(0, dtype=int) for c in columns})
            layer.feature_defaults = dict.fromkeys(columns, -1)
            self._bind_layer(layer)
            self._shown_shapes = None
            self._sync_shapes_layer()
        layer.mode = "add_rectangle"
        self.viewer.layers.selection.active = layer
        return layer

    def _pending_shapes(self, layer) -> list[int]:
        if "class_id" not in layer.features or not len(layer.data):
            return []
        pending = _unassigned(layer).tolist()
        chosen = sorted(layer.selected_data)
        return [i for i in chosen if i in pending] or pending

    def assign_shapes(self, class_id: int) -> None:
        """Give the new shapes ``class_id``: the animal under each (majority mask id) gets it on its frames."""
        layer, store = self.shapes_layer(), self.shared.session.store
        chosen = self._pending_shapes(layer)
        drawn = [(np.asarray(layer.data[i], dtype=float), layer.shape_type[i]) for i in chosen]
        layer.selected_data = set(chosen)
        layer.remove_selected()  # the layer shows records; these come back as records below
        for vertices, shape_type in drawn:
            frame = round(float(vertices[0, 0]))
            animal_id = animal_under_shape(store, frame, vertices[:, 1:])
            selection = self.shared.selection
            start, stop = (selection if selection and selection[0] <= frame < selection[1]
                           else (frame, min(frame + self.clip_spin.value(), self.model.n_frames)))
            kind = "rectangle" if shape_type == "rectangle" else "polygon"
            self.model.add_shape(ShapeAnnotation(start, stop, class_id, animal_id, kind,
                                                 tuple(map(tuple, vertices[:, 1:].tolist()))))
            if animal_id >= 0:
                self.shared.set_active_animal(animal_id)
            self.status.setText(f"shape on frame {frame}: " + (f"animal {animal_id}" if animal_id >= 0 else
                                "no animal under it; the shape is the region") +
                                f" → {self.model.classes.get(class_id).name}, frames {start}–{stop - 1}")

    def _sync_shapes_layer(self) -> None:
        layer = self.shapes_layer() if self.shared is not None else None
        if layer is None or self.model.shapes == self._shown_shapes:
            return
        pending = _unassigned(layer) if "class_id" in layer.features else []
        kept = [(np.asarray(layer.data[i]), layer.shape_type[i]) for i in pending]
        shapes = self.model.shapes
        data = [(np.column_stack([np.full(len(s.vertices_yx), s.start_frame), np.array(s.vertices_yx)]),
                 s.shape_type) for s in shapes] + kept
        layer.selected_data = set()
        layer.data = data
        layer.features = {"class_id": [s.class_id for s in shapes] + [-1] * len(kept),
                          "animal_id": [s.animal_id for s in shapes] + [-1] * len(kept),
                          "start_frame": [s.start_frame for s in shapes] + [-1] * len(kept),
                          "stop_frame": [s.stop_frame for s in shapes] + [-1] * len(kept)}
        if data:
            classes = self.model.classes
            layer.edge_color = [classes.get(s.class_id).color if classes.has_id(s.class_id) else "white"
                                for s in shapes] + ["white"] * len(kept)
        self._shown_shapes = shapes


def _unassigned(layer) -> np.ndarray:
    """Indices of shapes drawn but not given a class yet (class_id -1, or missing for freshly drawn ones)."""
    class_ids = layer.features["class_id"].astype(float).fillna(-1).to_numpy()
    return np.flatnonzero(class_ids < 0)
