"""Replaced and deleted arrays leave the store at once and their files are deleted in the background; what
a killed process left behind is cleaned up when the store opens again, and saved data is never lost."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import napari_sbl.store.trash as trash_module
from napari_sbl.store.atomic import replace_directory
from napari_sbl.store.session import SessionStore
from napari_sbl.store.trash import Trash

VIDEO = {"path": "/videos/v.mp4", "size_bytes": 1, "n_frames": 40, "height": 8, "width": 8, "fps": 10.0}
KEY = "embeddings/videoprism/tokens"


@pytest.fixture
def store(tmp_path):
    return SessionStore.create(tmp_path / "v.sbl.zarr", VIDEO)


def stored_files(store: SessionStore) -> list[str]:
    return sorted(str(p.relative_to(store.path)) for p in store.path.rglob("*") if p.is_file())


def fill(store: SessionStore, value: float, overwrite: bool):
    array = store.create_incremental(KEY, (40, 16), np.float32, (4, 16), {"run": value}, overwrite=overwrite)
    array[:] = value
    return array


def test_overwrite_replaces_without_leaving_old_files(store):
    fill(store, 1.0, overwrite=False)
    fill(store, 2.0, overwrite=True)
    store.wait_for_deletions()
    np.testing.assert_array_equal(store.read(KEY), np.full((40, 16), 2.0, np.float32))
    assert store.attrs(KEY)["run"] == 2.0
    assert not any(name.startswith(".trash") or ".tokens.trash" in name for name in stored_files(store))
    fresh = SessionStore.create(store.path.with_name("fresh.sbl.zarr"), VIDEO)
    fill(fresh, 2.0, overwrite=False)
    assert len(stored_files(store)) == len(stored_files(fresh))  # the old chunks are all gone


def test_replacing_does_not_wait_for_the_deletion(store, monkeypatch):
    fill(store, 1.0, overwrite=False)
    release, started = threading.Event(), threading.Event()
    real_remove = trash_module._remove

    def slow_remove(path):
        started.set()
        assert release.wait(10)
        real_remove(path)

    monkeypatch.setattr(trash_module, "_remove", slow_remove)
    fill(store, 2.0, overwrite=True)  # returns while the old copy is still being deleted
    assert started.wait(10) and store._trash.busy
    np.testing.assert_array_equal(store.read(KEY), np.full((40, 16), 2.0, np.float32))
    release.set()
    store.wait_for_deletions()
    assert not store._trash.busy and not any((store.path / ".trash").iterdir())


def test_a_killed_deletion_is_finished_when_the_store_reopens(store):
    fill(store, 1.0, overwrite=False)
    left = store.path / ".trash" / "killed-mid-delete"  # what a process killed while deleting leaves
    left.mkdir(parents=True)
    (left / "c.0.0").write_bytes(b"x" * 100)
    reopened = SessionStore.open(store.path)
    reopened.wait_for_deletions()
    assert not left.exists()
    np.testing.assert_array_equal(reopened.read(KEY), np.full((40, 16), 1.0, np.float32))


def test_a_kill_between_the_renames_loses_nothing(store):
    old = fill(store, 1.0, overwrite=False)
    target = store.path / KEY
    aside = target.with_name(".tokens.trash")
    os.replace(target, aside)  # killed after moving the old copy aside, before the new one landed
    np.testing.assert_array_equal(SessionStore.open(store.path).read(KEY), old[:])  # the old copy is back
    os.replace(target, aside)
    fresh = SessionStore.create(store.path.with_name("other.sbl.zarr"), VIDEO)
    fill(fresh, 2.0, overwrite=False)
    os.replace(fresh.path / KEY, target)  # killed after the new copy landed, before the old one was discarded
    reopened = SessionStore.open(store.path)
    np.testing.assert_array_equal(reopened.read(KEY), np.full((40, 16), 2.0, np.float32))
    reopened.wait_for_deletions()
    assert not aside.exists() and not any((store.path / ".trash").iterdir())


def test_delete_goes_through_the_trash(store):
    fill(store, 1.0, overwrite=False)
    store.delete(KEY)
    assert not store.has(KEY)
    store.wait_for_deletions()
    assert not any((store.path / ".trash").iterdir())
    fill(store, 3.0, overwrite=False)  # the key is free again at once
    assert store.read(KEY)[0, 0] == 3.0


def test_trash_tolerates_what_another_thread_already_discarded(tmp_path):
    trash = Trash(tmp_path / ".trash")
    trash.discard(tmp_path / "gone")  # nothing there: nothing to do
    staged, target = tmp_path / "staged", tmp_path / "target"
    for folder, text in ((target, "old"), (staged, "new")):
        folder.mkdir()
        (folder / "f").write_text(text)
    replace_directory(staged, target, trash.discard)
    trash.wait()
    assert (target / "f").read_text() == "new" and not staged.exists()
    assert not any(trash.folder.iterdir()) and sorted(p.name for p in tmp_path.iterdir()) == [".trash", "target"]
