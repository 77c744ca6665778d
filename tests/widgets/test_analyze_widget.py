"""Analyze dock in a real viewer: compute and show figures for a store, save regions drawn as shapes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_sbl.analysis.regions import load_regions
from napari_sbl.io.video import VideoReader
from tests.analysis.conftest import ANNOTATIONS, PLANTED_TIMES, make_store, planted_centres

pytestmark = pytest.mark.gui


@pytest.fixture
def viewer_with_analyze_widget(make_napari_viewer, tmp_path):
    from napari_sbl.widgets.analyze import AnalyzeWidget

    store = make_store(tmp_path / "planted", "planted", planted_centres(), [3, 7], frame_times=PLANTED_TIMES,
                       annotations=ANNOTATIONS, masks=True)
    viewer = make_napari_viewer()
    viewer.open(str(store.path), plugin="napari-sbl")
    widget = AnalyzeWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget, store


def wait_for_job(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.job.busy, timeout=60_000)


def test_compute_shows_figures_and_exports(qtbot, viewer_with_analyze_widget, tmp_path):
    viewer, widget, store = viewer_with_analyze_widget
    assert widget.store_paths() == [str(store.path)]
    widget.compute()
    wait_for_job(qtbot, widget)
    assert widget.analysis is not None, widget.job.status.text()
    names = [widget.figure_box.itemText(i) for i in range(widget.figure_box.count())]
    assert names[:5] == ["ethogram", "time_budget", "bout_durations", "transition_matrix", "transition_graph"]
    labels = [t.get_text() for t in widget.figure.axes[0].get_yticklabels()]
    assert labels == ["planted · animal 3", "planted · animal 7"]
    assert "planted: annotations, 2 animals, 20 frames" in widget.message.text()
    widget.figure_box.setCurrentText("transition_matrix")
    counts = [t.get_text() for t in widget.figure.axes[0].texts]
    assert len(counts) == 9 and sorted(counts).count("1") == 3
    saved = widget.save_figure(tmp_path / "matrix.svg")
    assert saved.stat().st_size > 5000 and "<svg" in saved.read_text()
    widget.export_tables(tmp_path / "tables")
    wait_for_job(qtbot, widget)
    assert len(pd.read_csv(tmp_path / "tables" / "bouts.csv")) == 6
    assert (tmp_path / "tables" / "figures" / "ethogram.png").is_file()


def test_regions_drawn_as_shapes_are_saved_and_tag_bouts(qtbot, viewer_with_analyze_widget):
    viewer, widget, store = viewer_with_analyze_widget
    layer = widget.regions_layer()
    widget.region_name_edit.setText("left")
    layer.add_rectangles(np.array([[0.0, 0.0], [64.0, 40.0]]))  # (y, x) corners
    widget.region_name_edit.setText("right")
    layer.add_polygons([np.array([[0.0, 40.0], [0.0, 80.0], [64.0, 80.0], [64.0, 40.0]])])
    assert layer.features["name"].tolist() == ["left", "right"]
    saved = widget.save_regions()
    assert [r.name for r in saved] == ["left", "right"]
    regions = load_regions(store)
    assert [(r.name, r.kind) for r in regions] == [("left", "rectangle"), ("right", "polygon")]
    assert regions[0].vertices.max(axis=0).tolist() == [40.0, 64.0]
    widget.compute()
    wait_for_job(qtbot, widget)
    assert widget.analysis.bouts["region"].tolist() == ["left", "left", "left", "right", "right", "right"]
    viewer.layers.remove("regions")
    again = widget.regions_layer()  # reopened from the store
    assert again.features["name"].tolist() == ["left", "right"] and len(again.data) == 2


def test_overlay_export_runs_in_the_job_panel(qtbot, viewer_with_analyze_widget, tmp_path):
    viewer, widget, store = viewer_with_analyze_widget
    widget.start_spin.setValue(2)
    widget.stop_spin.setValue(8)
    progress = []
    widget.job._bridge.progressed.connect(lambda done, total, message: progress.append((done, total)))
    widget.export_overlay(tmp_path / "overlay.mp4")
    wait_for_job(qtbot, widget)
    video = VideoReader(tmp_path / "overlay.mp4")
    assert video.n_frames == 6 and (video.height, video.width) == (64, 80)
    assert progress[-1] == (6, 6) and "overlay.mp4" in widget.message.text()


def test_group_comparison_of_several_stores(qtbot, viewer_with_analyze_widget, tmp_path):
    viewer, widget, store = viewer_with_analyze_widget
    other = make_store(tmp_path / "other", "other", planted_centres(), [3, 7],
                       annotations=[(3, 0, 12, 1), (7, 0, 12, 1)])
    widget.add_store(other.path)
    assert widget.store_paths() == [str(store.path), str(other.path)]
    groups = tmp_path / "groups.csv"
    groups.write_text("video,treatment\nplanted.mp4,ctrl\nother.mp4,drug\n")
    widget.set_groups_file(groups)
    assert [widget.group_column_box.itemText(i) for i in range(widget.group_column_box.count())] == [
        "all columns", "treatment"]
    widget.group_column_box.setCurrentText("treatment")
    widget.compute()
    wait_for_job(qtbot, widget)
    assert "groups by treatment: " in widget.message.text()
    widget.figure_box.setCurrentText("comparison_treatment")
    widget.metric_box.setCurrentText("bouts")
    panels = widget.figure.axes
    assert [a.get_title().split("\n")[0] for a in panels] == ["groom", "walk", "rear"]
    assert panels[0].get_ylabel() == "bouts" and widget.figure._suptitle.get_text() == "bouts by treatment"
