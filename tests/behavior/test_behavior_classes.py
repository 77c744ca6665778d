"""Class lists (ids, names, keys, colours) and the project file that shares them."""

from __future__ import annotations

import json

import pytest

from napari_sbl.behavior.classes import ClassList, Project, find_project, read_project, reconcile_classes, write_project
from napari_sbl.errors import AnnotationError


def test_add_assigns_free_keys_and_palette_colours():
    classes = ClassList().add("groom").add("rear", key=1).add("walk")
    assert [(c.id, c.name, c.key) for c in classes] == [(0, "groom", None), (1, "rear", 1), (2, "walk", 2)]
    assert len({c.color for c in classes}) == 3
    assert classes.by_key(1).name == "rear" and classes.by_name(" GROOM ").id == 0


def test_rename_recolor_rekey_remove():
    classes = ClassList().add("groom").add("rear")
    classes = classes.rename(0, "self-groom").recolor(1, "#ABCDEF").set_key(1, 1).remove(0)
    assert [(c.name, c.color, c.key) for c in classes] == [("rear", "#abcdef", 1)]
    with pytest.raises(AnnotationError, match="already exists"):
        ClassList().add("a").add("b").rename(1, "A")
    with pytest.raises(AnnotationError, match="keys are 1–9"):
        classes.set_key(1, 0)
    with pytest.raises(AnnotationError, match="'#rrggbb'"):
        classes.recolor(1, "red")
    with pytest.raises(AnnotationError, match="non-empty name"):
        classes.add("  ")


def test_json_round_trip_and_tolerant_reading():
    classes = ClassList().add("groom").add("rear", color="#00ff00").set_key(0, None)
    assert ClassList.from_json(classes.to_json()) == classes
    loose = ClassList.from_json(["groom", {"name": "rear", "key": 99, "color": "nope"}, {"name": "walk", "id": 0}])
    assert [(c.id, c.name, c.key) for c in loose] == [(0, "groom", None), (1, "rear", None), (2, "walk", None)]
    with pytest.raises(AnnotationError, match="class entry 0 has no name"):
        ClassList.from_json([{"id": 3}])


def test_reconcile_matches_by_name():
    shared = ClassList().add("groom").add("rear")
    store = ClassList().add("rear").add("dig", key=2)
    merged, id_map = reconcile_classes(store, shared)
    assert merged.names == ["groom", "rear", "dig"]
    assert id_map == {0: 1, 1: 2} and merged.by_name("dig").key is None  # key 2 is rear's in the shared list


def test_project_file_round_trip_and_errors(tmp_path):
    project = Project(tmp_path / "lab.sblproject.json", classes=ClassList().add("groom"))
    project.add_store(tmp_path / "m1.sbl.zarr")
    project.add_store(tmp_path / "sub" / "m2.sbl.zarr")
    project.add_store(tmp_path / "m1.sbl.zarr")
    write_project(project)
    data = json.loads(project.path.read_text())
    data["metadata"] = {"m1.sbl.zarr": {"group": "control"}}  # another module's part of the file
    project.path.write_text(json.dumps(data))
    again = read_project(project.path)
    write_project(again)
    data = json.loads(project.path.read_text())
    assert data["metadata"] == {"m1.sbl.zarr": {"group": "control"}}
    assert data["stores"] == ["m1.sbl.zarr", "sub/m2.sbl.zarr"] and data["format"] == "napari-sbl-project"
    again = read_project(project.path)
    assert again.classes == project.classes and again.lists_store(tmp_path / "sub" / "m2.sbl.zarr")
    assert find_project(tmp_path / "sub" / "m2.sbl.zarr").path == project.path
    assert find_project(tmp_path / "elsewhere.sbl.zarr") is None
    bad = tmp_path / "bad.sblproject.json"
    bad.write_text("{oops")
    with pytest.raises(AnnotationError, match="not valid JSON"):
        read_project(bad)
    bad.write_text(json.dumps({"stores": []}))
    with pytest.raises(AnnotationError, match="not a napari-sbl project file"):
        read_project(bad)
