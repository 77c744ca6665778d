"""The labels dock's class list: the table of classes and the buttons that add, rename, recolour, rekey,
merge and delete them (each an undoable edit of the shared annotation model).
"""

from __future__ import annotations

from qtpy.QtGui import QColor
from qtpy.QtWidgets import QColorDialog, QInputDialog, QMessageBox, QTableWidgetItem

from napari_sbl.errors import SblError


class ClassListEditing:
    """Class-list table and editing, mixed into :class:`~napari_sbl.widgets.labels.LabelsWidget`.

    The host provides ``model`` and ``class_table``.
    """

    def _fill_class_table(self) -> None:
        model, chosen = self.model, self.class_table.currentRow()
        frames = {}
        for segment in model.segments():
            frames[segment.class_id] = frames.get(segment.class_id, 0) + segment.n_frames
        self.class_table.setRowCount(len(model.classes))
        for row, one in enumerate(model.classes):
            cells = (str(one.key or ""), one.name, str(frames.get(one.id, 0)))
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if column == 1:
                    item.setBackground(QColor(one.color))
                self.class_table.setItem(row, column, item)
        if len(model.classes):
            self.class_table.selectRow(min(max(chosen, 0), len(model.classes) - 1))

    def chosen_class(self) -> int:
        row = self.class_table.currentRow()
        if row < 0 or row >= len(self.model.classes):
            raise SblError("choose a class in the list first (or add one)")
        return self.model.classes.classes[row].id

    # -- classes ----------------------------------------------------------------------------------
    def add_class(self, name: str | None = None) -> None:
        if name is None:
            name, ok = QInputDialog.getText(self, "New behaviour class", "Name")
            if not ok:
                return
        class_id = self.model.add_class(name)
        self.class_table.selectRow(self.model.classes.ids.index(class_id))

    def rename_class(self, name: str | None = None) -> None:
        class_id = self.chosen_class()
        if name is None:
            name, ok = QInputDialog.getText(self, "Rename class", "Name", text=self.model.classes.get(class_id).name)
            if not ok:
                return
        self.model.edit_class(class_id, name=name)

    def recolor_class(self, color: str | None = None) -> None:
        class_id = self.chosen_class()
        if color is None:
            picked = QColorDialog.getColor(QColor(self.model.classes.get(class_id).color), self)
            if not picked.isValid():
                return
            color = picked.name()
        self.model.edit_class(class_id, color=color)

    def set_class_key(self, key: int | None = None) -> None:
        class_id = self.chosen_class()
        if key is None:
            current = self.model.classes.get(class_id).key or 0
            key, ok = QInputDialog.getInt(self, "Class key", "Key (0 = none)", current, 0, 9)
            if not ok:
                return
        self.model.edit_class(class_id, key=key or None)

    def merge_class(self, target_name: str | None = None) -> None:
        source = self.chosen_class()
        others = [c.name for c in self.model.classes if c.id != source]
        if target_name is None:
            target_name, ok = QInputDialog.getItem(self, "Merge class", "Merge into", others, 0, False)
            if not ok:
                return
        self.model.merge_classes(source, self.model.classes.by_name(target_name).id)

    def delete_class(self, confirmed: bool = False) -> None:
        class_id = self.chosen_class()
        name = self.model.classes.get(class_id).name
        if not confirmed and QMessageBox.question(self, "Delete class", f"Delete '{name}' and unlabel its frames? "
                                                  "(Ctrl+Z brings it back)") != QMessageBox.StandardButton.Yes:
            return
        self.model.delete_class(class_id)
