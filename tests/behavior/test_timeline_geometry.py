"""Timeline geometry: frame ↔ pixel, zoom, coalesced bars, edge hits, drag ranges, ticks."""

from __future__ import annotations

import itertools

import numpy as np

from napari_sbl.behavior.annotations import value_runs
from napari_sbl.behavior.timeline_geometry import (
    FrameAxis,
    RowLayout,
    drag_range,
    hit_edge,
    tick_frames,
    visible_bars,
)


def test_frame_pixel_mapping_round_trips():
    axis = FrameAxis(n_frames=1000, x0_px=50, width_px=500)
    assert axis.frame_to_x(0) == 50 and axis.frame_to_x(1000) == 550
    for frame in (0, 1, 499, 998, 999):
        assert axis.x_to_frame(axis.frame_to_x(frame) + 0.25) == frame
    assert axis.x_to_frame(-100) == 0 and axis.x_to_frame(10_000) == 999
    assert axis.x_to_boundary(50 + 0.4 * 0.5) == 0 and axis.x_to_boundary(50 + 0.8) == 2  # 0.5 px per frame
    assert axis.x_to_boundary(10_000) == 1000


def test_zoom_keeps_anchor_and_clamps():
    axis = FrameAxis(n_frames=1000, x0_px=0, width_px=500)
    zoomed = axis.zoomed(anchor_frame=250, factor=4)
    assert zoomed.span == 250 and abs(zoomed.frame_to_x(250) - axis.frame_to_x(250)) < 1e-6
    assert zoomed.zoomed(250, 1000).span == 10  # never closer than 10 frames
    assert zoomed.zoomed(250, 0.001).span == 1000 and zoomed.zoomed(250, 0.001).view_start == 0
    assert zoomed.panned(-10_000).view_start == 0 and zoomed.panned(10_000).stop == 1000
    assert zoomed.showing(900).view_start <= 900 < zoomed.showing(900).stop


def test_bars_of_a_long_video_stay_within_pixel_budget():
    rng = np.random.default_rng(0)
    labels = np.repeat(rng.integers(-1, 4, size=20_000), rng.integers(1, 30, size=20_000))[:300_000]
    starts, stops, values = value_runs(labels)
    axis = FrameAxis(n_frames=len(labels), x0_px=0, width_px=800)
    bars = visible_bars(starts, stops, values, axis)
    assert len(starts) > 10_000 and len(bars) <= 800
    assert all(b[1] > b[0] for b in bars) and all(a[1] <= b[0] for a, b in itertools.pairwise(bars))
    close = axis.zoomed(1000, 300)
    bars = visible_bars(starts, stops, values, close)
    expected = [(s, e, v) for s, e, v in zip(starts, stops, values, strict=True) if e > close.view_start and
                s < close.stop]
    assert [b[2] for b in bars] == [v for _, _, v in expected]  # zoomed in: one bar per run


def test_hit_edge_and_drag_range():
    axis = FrameAxis(n_frames=100, x0_px=0, width_px=1000)  # 10 px per frame
    starts, stops = np.array([10, 50]), np.array([20, 60])
    assert hit_edge(starts, stops, 102, axis) == (0, "start")
    assert hit_edge(starts, stops, 597, axis) == (1, "stop")
    assert hit_edge(starts, stops, 300, axis) is None
    assert drag_range(30, 12) == (12, 31) and drag_range(5, 5) == (5, 6)


def test_rows_and_ticks():
    layout = RowLayout(top_px=20, n_rows=2)
    assert layout.row_at(10) is None and layout.row_at(21) == 0 and layout.row_at(20 + layout.row_px + 1) == 1
    assert layout.row_at(layout.height_px + 1) is None
    y, height = layout.lane_span(1, "predictions")
    assert y == 20 + layout.row_px + layout.labels_px and height == layout.lane_px
    ticks = tick_frames(FrameAxis(n_frames=10_000, x0_px=0, width_px=700))
    assert ticks[:3] == [0, 1000, 2000] and len(ticks) == 10
