"""Discover dock in a real viewer: the map and the video are linked both ways, on real stores and videos."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import ConvexHull, cKDTree

from napari_sbl.cluster.candidates import read_candidates
from tests.cluster.planted import behaviour_centres, planted_store

pytestmark = pytest.mark.gui


@pytest.fixture
def discover(make_napari_viewer, qtbot, tmp_path):
    """A viewer showing a planted store (video + masks), the Discover dock, and a finished clustering."""
    from napari_sbl.widgets.discover import DiscoverWidget

    planted = planted_store(tmp_path, "mice", behaviour_centres(), clips_per_animal=60, with_masks=True)
    viewer = make_napari_viewer()
    viewer.open(str(planted.store.path), plugin="napari-sbl")
    widget = DiscoverWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Discover")
    assert [s.path.name for s in widget.stores] == ["mice.sbl.zarr"]
    assert widget.form.embedding_box.currentText() == "motion"
    widget.form.method_box.setCurrentText("hdbscan")
    widget.form.min_size_spin.setValue(10)
    widget.run_clustering()
    qtbot.waitUntil(lambda: not widget.job.busy, timeout=120_000)
    assert widget.result is not None, widget.job.status.text()
    return viewer, widget, planted


def _click(scatter, pixel) -> None:
    scatter.canvas.events.mouse_press(pos=tuple(pixel), button=1, modifiers=())
    scatter.canvas.events.mouse_release(pos=tuple(pixel), button=1, modifiers=())


def _drag(scatter, path) -> None:
    scatter.canvas.events.mouse_press(pos=tuple(path[0]), button=1, modifiers=())
    for point in path[1:]:
        scatter.canvas.events.mouse_move(pos=tuple(point), button=1, modifiers=())
    scatter.canvas.events.mouse_release(pos=tuple(path[-1]), button=1, modifiers=())


def test_click_on_a_point_moves_the_viewer_to_its_clip(discover):
    viewer, widget, planted = discover
    pixels = widget.scatter.canvas_positions()
    distances, _ = cKDTree(pixels).query(pixels, k=2)
    row = int(np.argmax(distances[:, 1]))  # the most isolated point: the click can only mean it
    assert distances[row, 1] > 2.0
    _click(widget.scatter, pixels[row])
    assert viewer.dims.current_step[0] == planted.start_frame[row]
    masks = viewer.layers["masks"]
    assert masks.selected_label == planted.animal_id[row] and masks.show_selected_label
    assert f"frames {planted.start_frame[row]}–{planted.stop_frame[row]}" in widget.describe(row)


def test_lasso_lists_the_clips_of_a_cluster_and_plays_them(discover):
    viewer, widget, planted = discover
    labels = widget.result.labels
    pixels = widget.scatter.canvas_positions()
    members = np.flatnonzero(labels == 0)
    hull = pixels[members][ConvexHull(pixels[members]).vertices]
    lasso = hull + (hull - hull.mean(axis=0)) * 0.08  # slightly outside the hull
    widget.scatter.set_mode("lasso")
    _drag(widget.scatter, np.vstack([lasso, lasso[:1]]))
    listed = set(widget.clips.rows.tolist())
    assert listed == set(members.tolist())
    assert widget.clips.list.count() == len(members)
    first = int(widget.clips.rows[0])
    widget.clips.play()
    widget.clips.stop()
    assert viewer.dims.current_step[0] == planted.start_frame[first]
    for _ in range(8):  # a clip lasts 8 frames: the ninth step shows the next clip's first frame
        widget.clips.step()
    second = int(widget.clips.rows[1])
    assert viewer.dims.current_step[0] == planted.start_frame[second]
    assert viewer.layers["masks"].selected_label == planted.animal_id[second]


def test_time_slider_marks_the_clip_playing(discover):
    viewer, widget, planted = discover
    viewer.dims.set_current_step(0, 50)  # before any click: the clips of every animal at that frame
    assert widget.scatter.marked_rows.tolist() == np.flatnonzero(planted.start_frame == 48).tolist()
    widget.show_clip(3)  # animal 1, frames 24-32: from now on that animal's clips
    for frame_index in (5, 100, 203):
        viewer.dims.set_current_step(0, frame_index)
        expected = np.flatnonzero((planted.animal_id == 1) & (planted.start_frame <= frame_index)
                                  & (frame_index < planted.stop_frame))
        assert widget.scatter.marked_rows.tolist() == expected.tolist()
        assert len(expected) == 1


def test_reopen_recolour_send_and_export(discover, qtbot, tmp_path):
    viewer, widget, planted = discover
    widget.open_box.setCurrentText(widget.result.name)
    widget.open_clustering()
    qtbot.waitUntil(lambda: not widget.job.busy, timeout=30_000)
    assert widget.result.computed == set()
    for mode in ("animal", "video", "time", "label", "cluster"):
        widget.colour_box.setCurrentText(mode)
        assert widget.scatter.colors.shape == (len(planted.truth), 4)
    widget.choose_clusters([1])
    assert set(widget.clips.rows.tolist()) == set(np.flatnonzero(widget.result.labels == 1).tolist())
    widget.class_edit.setText("rear")
    added = widget.send_to_labels()
    candidates = read_candidates(planted.store)
    assert added == len(candidates) == (widget.result.labels == 1).sum()
    assert candidates.classes == ["rear"]
    widget.export_csv(tmp_path / "view.csv")
    lines = (tmp_path / "view.csv").read_text().splitlines()
    assert len(lines) == 1 + added and lines[0].startswith("store,clip,animal_id")


def test_a_hundred_thousand_points_render(discover):
    _, widget, _ = discover
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(120_000, 2)).astype(np.float32)
    from napari_sbl.widgets.scatter import category_colors

    colors, _ = category_colors(rng.integers(0, 12, len(coords)))
    widget.scatter.set_points(coords, colors)
    image = widget.scatter.canvas.render()
    assert image.shape[2] == 4 and image.shape[0] > 100
    background = image[0, 0]
    assert (np.abs(image.astype(int) - background).sum(axis=2) > 30).mean() > 0.05
    pixels = widget.scatter.canvas_positions()
    row = widget.scatter.row_at(pixels[1234])
    assert row is not None and np.hypot(*(pixels[row] - pixels[1234])) < 1e-6


def test_three_d_map_picks_and_lassoes_through_the_projection(discover, qtbot):
    viewer, widget, planted = discover
    widget.form.display_box.setCurrentText("3")
    widget.run_clustering()
    qtbot.waitUntil(lambda: not widget.job.busy, timeout=60_000)
    assert widget.result.embedding_3d is not None and widget.scatter.coords.shape == (len(planted.truth), 3)
    widget.scatter.view.camera.azimuth += 40  # rotate: picking follows the projection
    pixels = widget.scatter.canvas_positions()
    assert np.all(np.isfinite(pixels)) and np.ptp(pixels[:, 0]) > 50
    distances, _ = cKDTree(pixels).query(pixels, k=2)
    row = int(np.argmax(distances[:, 1]))
    _click(widget.scatter, pixels[row])
    assert viewer.dims.current_step[0] == planted.start_frame[row]
    widget.scatter.set_mode("box")
    low, high = pixels.min(axis=0) - 2, pixels.max(axis=0) + 2
    _drag(widget.scatter, [low, (low + high) / 2, high])
    assert len(widget.clips.rows) == len(planted.truth)
