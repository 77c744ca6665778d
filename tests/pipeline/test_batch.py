"""Batch runs on a real dask LocalCluster with two worker processes."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from napari_sbl.pipeline.batch import expand_videos, run_batch, status_table
from napari_sbl.pipeline.batch_steps import BatchParams
from napari_sbl.store import layout
from napari_sbl.store.session import SessionStore, default_store_path
from tests.widgets.test_track_widget import two_blob_video

STEPS = ("segment", "embed")
EMBED = {"embed": {"fps": 5.0, "clip_frames": 8, "stride": 4}}


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    with Client(cluster) as client:
        yield client
    cluster.close()


@pytest.fixture
def videos(tmp_path):
    paths = []
    for name, n_frames in (("a", 30), ("b", 40)):
        two_blob_video(tmp_path / f"{name}.mp4", n_frames=n_frames)
        paths.append(tmp_path / f"{name}.mp4")
    corrupt = tmp_path / "broken.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    return [*paths, corrupt]


def test_two_complete_one_reported_and_rerun_does_nothing(client, videos, tmp_path):
    params = BatchParams(steps=STEPS, n_animals=2, extra=EMBED)
    results = run_batch(videos, params, client=client, csv_path=tmp_path / "status.csv")
    states = {(os.path.basename(r.video), r.step): r for r in results}
    for name in ("a.mp4", "b.mp4"):
        assert [states[(name, step)].state for step in STEPS] == ["done", "done"], states
    broken = states[("broken.mp4", "segment")]
    assert broken.state == "failed" and "broken.mp4" in broken.error
    assert states[("broken.mp4", "embed")].state == "blocked"
    for name, n in (("a", 30), ("b", 40)):
        store = SessionStore.open(default_store_path(tmp_path / f"{name}.mp4"))
        assert store.attrs(layout.TRACKS_MASKS)["frames_done"] == [[0, n]]
        assert store.attrs(layout.embedding_key("motion", "clips"))["complete"] is True
    csv_text = (tmp_path / "status.csv").read_text()
    assert csv_text.startswith("video,step,state,seconds,error") and "failed" in csv_text
    again = run_batch(videos, params, client=client)
    assert [r.state for r in again if "broken" not in r.video] == ["skipped"] * 4
    table = status_table(videos[:2], params)
    assert [(row["segment"], row["embed"]) for row in table] == [("done", "done")] * 2


def test_killed_worker_then_rerun_completes_with_intact_stores(client, tmp_path):
    long_video = tmp_path / "long.mp4"
    two_blob_video(long_video, n_frames=400, size=(192, 256))
    params = BatchParams(steps=STEPS, n_animals=2)
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.setdefault("results", run_batch([long_video], params,
                                                                                     client=client)))
    runner.start()
    store_path = default_store_path(long_video)
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until tracking has written some frames
        if (store_path / "tracks/masks/zarr.json").is_file():
            done = SessionStore.open(store_path, mode="r").attrs(layout.TRACKS_MASKS).get("frames_done", [])
            if done:
                break
        time.sleep(0.2)
    pids = client.run(os.getpid)
    for pid in pids.values():  # kill every worker: the task dies mid-video
        os.kill(pid, signal.SIGKILL)
    runner.join(timeout=180)
    results = run_batch([long_video], params, client=client)
    assert results[0].state in ("done", "skipped")
    store = SessionStore.open(store_path)
    assert store.attrs(layout.TRACKS_MASKS)["frames_done"] == [[0, 400]]
    assert store.attrs(layout.TRACKS_MASKS)["complete"] is True
    masks = store.array(layout.TRACKS_MASKS)
    assert set(np.unique(masks[50])) == {0, 1, 2}  # both discs are in view early on


def test_globs_expand_in_order(videos, tmp_path):
    found = expand_videos([str(tmp_path / "*.mp4")])
    assert [p.name for p in found] == ["a.mp4", "b.mp4", "broken.mp4"]


@pytest.mark.gui
def test_batch_widget_lists_states_and_runs(make_napari_viewer, qtbot, tmp_path):
    from napari_sbl.widgets.batch import BatchWidget

    two_blob_video(tmp_path / "one.mp4", n_frames=20)
    widget = BatchWidget(make_napari_viewer())
    widget.step_checks["embed"].setChecked(False)
    widget.animals_spin.setValue(2)
    widget.workers_spin.setValue(1)
    widget.add_videos([tmp_path])
    assert widget.table.rowCount() == 1 and widget.table.item(0, 1).text() == "missing"
    widget.run()
    qtbot.waitUntil(lambda: not widget.job.busy, timeout=120_000)
    assert widget.table.item(0, 1).text() == "done", widget.job.status.text()
    assert "all steps done" in widget.job.status.text()


def test_gpu_pinning_gives_each_worker_its_own_devices(monkeypatch):
    from types import SimpleNamespace

    from napari_sbl.pipeline.gpu_pinning import GpuPinning

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    GpuPinning(2).setup(SimpleNamespace(name="1"))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,3"
    GpuPinning(1).setup(SimpleNamespace(name="0"))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
