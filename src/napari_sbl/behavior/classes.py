"""Behaviour class lists, and the project file that shares one class list across several stores.

A class has a stable integer ``id`` (what the per-frame arrays hold), a unique ``name`` (what
identifies it across stores and files), a ``color`` and an optional keyboard ``key`` 1–9. Lists are
immutable: every edit returns a new :class:`ClassList`, so undo can keep the old one.

Project file (``<name>.sblproject.json``), written atomically::

    {"format": "napari-sbl-project", "version": 1,
     "stores": ["mouse1.sbl.zarr", "day2/mouse2.sbl.zarr"],      # relative to the project file
     "classes": [{"id": 0, "name": "groom", "color": "#1f77b4", "key": 1}, ...],
     "multi_label": false}

Classes are matched across stores by name; :func:`reconcile_classes` maps a store's ids onto the
project's. Other top-level keys (such as the ``"metadata"`` mapping :mod:`napari_sbl.project` reads)
are preserved when the file is rewritten.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from napari_sbl.errors import AnnotationError
from napari_sbl.jsonfile import read_json_file
from napari_sbl.store.atomic import atomic_write_text

PROJECT_SUFFIX = ".sblproject.json"
PROJECT_FORMAT = "napari-sbl-project"
PROJECT_VERSION = 1
CLASS_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22", "#17becf", "#aec7e8", "#ffbb78")
KEYS = tuple(range(1, 10))
_PROJECT_KEYS = ("format", "version", "stores", "classes", "multi_label")
_HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True)
class BehaviorClass:
    """One behaviour: ``id`` is stored in the per-frame arrays, ``key`` (1–9 or None) labels with one press."""

    id: int
    name: str
    color: str
    key: int | None = None

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "color": self.color, "key": self.key}


@dataclass(frozen=True)
class ClassList:
    """An ordered, immutable list of behaviour classes (unique ids, names and keys)."""

    classes: tuple[BehaviorClass, ...] = ()
    multi_label: bool = False

    # -- lookup -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self):
        return iter(self.classes)

    @property
    def ids(self) -> list[int]:
        return [c.id for c in self.classes]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def get(self, class_id: int) -> BehaviorClass:
        for one in self.classes:
            if one.id == int(class_id):
                return one
        raise AnnotationError(f"no behaviour class with id {class_id}; classes are {self.describe()}")

    def has_id(self, class_id: int) -> bool:
        return any(c.id == int(class_id) for c in self.classes)

    def by_name(self, name: str) -> BehaviorClass | None:
        wanted = _name_key(name)
        return next((c for c in self.classes if _name_key(c.name) == wanted), None)

    def by_key(self, key: int) -> BehaviorClass | None:
        return next((c for c in self.classes if c.key == int(key)), None)

    def next_id(self) -> int:
        return max(self.ids, default=-1) + 1

    def describe(self) -> str:
        return ", ".join(f"{c.id}={c.name!r}" for c in self.classes) or "(none)"

    # -- edits (each returns a new list) ----------------------------------------------------------
    def add(self, name: str, color: str | None = None, key: int | None = None,
            class_id: int | None = None, auto_key: bool = True) -> ClassList:
        """Append a class; without ``key`` it gets the first free one of 1–9 (if ``auto_key``)."""
        name = _clean_name(name)
        if self.by_name(name) is not None:
            raise AnnotationError(f"a behaviour class named {name!r} already exists")
        class_id = self.next_id() if class_id is None else int(class_id)
        if self.has_id(class_id):
            raise AnnotationError(f"behaviour class id {class_id} is already used by {self.get(class_id).name!r}")
        color = _check_color(color) if color else CLASS_COLORS[len(self.classes) % len(CLASS_COLORS)]
        if key is None and auto_key:
            key = next((k for k in KEYS if self.by_key(k) is None), None)
        listed = replace(self, classes=(*self.classes, BehaviorClass(class_id, name, color, None)))
        return listed.set_key(class_id, key) if key is not None else listed

    def rename(self, class_id: int, name: str) -> ClassList:
        name = _clean_name(name)
        other = self.by_name(name)
        if other is not None and other.id != int(class_id):
            raise AnnotationError(f"a behaviour class named {name!r} already exists; merge the two instead")
        return self._replace_one(class_id, name=name)

    def recolor(self, class_id: int, color: str) -> ClassList:
        return self._replace_one(class_id, color=_check_color(color))

    def set_key(self, class_id: int, key: int | None) -> ClassList:
        """Give ``class_id`` the key ``key`` (taking it from any class that had it) or no key."""
        if key is not None and int(key) not in KEYS:
            raise AnnotationError(f"class keys are 1–9, not {key}")
        self.get(class_id)
        classes = tuple(replace(c, key=None) if key is not None and c.key == int(key) else c for c in self.classes)
        listed = replace(self, classes=classes)
        return listed._replace_one(class_id, key=None if key is None else int(key))

    def remove(self, class_id: int) -> ClassList:
        self.get(class_id)
        return replace(self, classes=tuple(c for c in self.classes if c.id != int(class_id)))

    def with_multi_label(self, multi_label: bool) -> ClassList:
        return replace(self, multi_label=bool(multi_label))

    def _replace_one(self, class_id: int, **changes) -> ClassList:
        self.get(class_id)
        return replace(self, classes=tuple(replace(c, **changes) if c.id == int(class_id) else c
                                           for c in self.classes))

    # -- serialisation ----------------------------------------------------------------------------
    def to_json(self) -> list[dict]:
        """The store's ``classes`` attribute: ``[{id, name, color, key}]``."""
        return [c.to_json() for c in self.classes]

    @classmethod
    def from_json(cls, records, multi_label: bool = False) -> ClassList:
        """Read ``[{id, name, color, key}]``; plain names are accepted too (ids in order)."""
        if records is None:
            return cls(multi_label=multi_label)
        if not isinstance(records, list):
            raise AnnotationError(f"a class list must be a JSON list, got {type(records).__name__}")
        listed = cls(multi_label=multi_label)
        for position, record in enumerate(records):
            if isinstance(record, str):
                record = {"name": record}
            if not isinstance(record, dict) or not str(record.get("name", "")).strip():
                raise AnnotationError(f"class entry {position} has no name: {record!r}")
            key = record.get("key")
            key = int(key) if key not in (None, "") and int(key) in KEYS and listed.by_key(int(key)) is None else None
            class_id = record.get("id")
            class_id = int(class_id) if class_id is not None and not listed.has_id(int(class_id)) else None
            color = record.get("color") if _HEX_COLOR.match(str(record.get("color", ""))) else None
            listed = listed.add(str(record["name"]), color=color, key=key, class_id=class_id, auto_key=False)
        return listed


def _clean_name(name: str) -> str:
    name = str(name).strip()
    if not name:
        raise AnnotationError("a behaviour class needs a non-empty name")
    return name


def _name_key(name: str) -> str:
    return str(name).strip().casefold()


def _check_color(color: str) -> str:
    if not _HEX_COLOR.match(str(color)):
        raise AnnotationError(f"colours are '#rrggbb' hex strings, not {color!r}")
    return str(color).lower()


def reconcile_classes(store_classes: ClassList, shared: ClassList) -> tuple[ClassList, dict[int, int]]:
    """Merge a store's classes into a shared list by name.

    Returns the merged list (the shared classes first, then the store's classes the shared list
    lacks, with fresh ids) and the map from the store's ids to the merged ids, to relabel frames.
    """
    merged = shared.with_multi_label(shared.multi_label or store_classes.multi_label)
    id_map: dict[int, int] = {}
    for one in store_classes:
        match = merged.by_name(one.name)
        if match is None:
            key = one.key if one.key is not None and merged.by_key(one.key) is None else None
            merged = merged.add(one.name, color=one.color, key=key, auto_key=False)
            match = merged.classes[-1]
        id_map[one.id] = match.id
    return merged, id_map


# -- project file -------------------------------------------------------------------------------------
@dataclass
class Project:
    """A project file: the stores it groups (paths relative to the file) and their shared class list."""

    path: Path
    stores: list[str] = field(default_factory=list)
    classes: ClassList = field(default_factory=ClassList)
    extra: dict = field(default_factory=dict)  # other keys (e.g. "metadata" of napari_sbl.project), kept as read

    def store_paths(self) -> list[Path]:
        return [(self.path.parent / s).resolve() for s in self.stores]

    def lists_store(self, store_path: str | Path) -> bool:
        return Path(store_path).resolve() in self.store_paths()

    def add_store(self, store_path: str | Path) -> None:
        if self.lists_store(store_path):
            return
        store_path = Path(store_path).resolve()
        try:
            relative = store_path.relative_to(self.path.parent.resolve())
        except ValueError:
            relative = store_path
        self.stores.append(relative.as_posix())


def read_project(path: str | Path) -> Project:
    """Read a project file; a malformed one raises :class:`AnnotationError` naming what is wrong."""
    path = Path(path)
    data = read_json_file(path, "project", AnnotationError)
    if not isinstance(data, dict) or data.get("format") != PROJECT_FORMAT:
        raise AnnotationError(f"{path} is not a napari-sbl project file (no \"format\": \"{PROJECT_FORMAT}\")")
    if int(data.get("version", 1)) > PROJECT_VERSION:
        raise AnnotationError(f"{path} was written by a newer napari-sbl (project version {data['version']})")
    stores = data.get("stores") or []
    if not isinstance(stores, list) or not all(isinstance(s, str) for s in stores):
        raise AnnotationError(f"{path}: \"stores\" must be a list of paths")
    classes = ClassList.from_json(data.get("classes") or [], multi_label=bool(data.get("multi_label", False)))
    extra = {k: v for k, v in data.items() if k not in _PROJECT_KEYS}
    return Project(path=path, stores=list(stores), classes=classes, extra=extra)


def write_project(project: Project) -> None:
    """Write the project file atomically (a crash leaves the previous version); keys of other modules are kept."""
    payload = {**project.extra, "format": PROJECT_FORMAT, "version": PROJECT_VERSION, "stores": project.stores,
               "classes": project.classes.to_json(), "multi_label": project.classes.multi_label}
    atomic_write_text(project.path, json.dumps(payload, indent=2) + "\n")


def find_project(store_path: str | Path) -> Project | None:
    """The project file listing ``store_path``, searched in the store's folder and the folder above."""
    store_path = Path(store_path).resolve()
    for folder in (store_path.parent, store_path.parent.parent):
        for candidate in sorted(folder.glob(f"*{PROJECT_SUFFIX}")):
            try:
                project = read_project(candidate)
            except AnnotationError:
                continue
            if project.lists_store(store_path):
                return project
    return None
