"""Regions: containment, store and file round trips, bout tags, time in region per class."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_sbl.analysis.regions import (
    REGIONS_KEY,
    Region,
    load_regions,
    read_regions_file,
    rectangle,
    region_index,
    regions_from_shapes,
    save_regions,
    shapes_from_regions,
    write_regions_file,
)
from napari_sbl.analysis.sequences import load_sequences
from napari_sbl.analysis.tables import bouts_table, region_budget_table, select_region
from napari_sbl.errors import SblError

LEFT_RIGHT = [rectangle("left", 0, 0, 40, 64), rectangle("right", 40, 0, 80, 64)]


def test_points_in_rectangles_and_polygons():
    triangle = Region("tri", np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]))
    points = np.array([[1, 1], [6, 6], [4.9, 4.9], [np.nan, 1.0], [-1, 2]])
    assert triangle.contains(points).tolist() == [True, False, True, False, False]
    both = [rectangle("a", 0, 0, 10, 10), rectangle("b", 5, 5, 20, 20)]
    assert region_index(both, np.array([[2, 2], [7, 7], [15, 15], [30, 30]])).tolist() == [0, 0, 1, -1]


def test_regions_round_trip_through_store_and_file(planted_store, tmp_path):
    pentagon = Region("nest", np.array([[10, 10], [30, 5], [50, 10], [40, 40], [15, 35]], dtype=float))
    save_regions(planted_store, [LEFT_RIGHT[0], pentagon])
    assert planted_store.read(REGIONS_KEY).shape == (2, 5, 2)
    assert planted_store.attrs(REGIONS_KEY)["names"] == ["left", "nest"]
    loaded = load_regions(planted_store)
    assert [r.name for r in loaded] == ["left", "nest"] and [r.kind for r in loaded] == ["rectangle", "polygon"]
    assert np.array_equal(loaded[1].vertices, pentagon.vertices) and len(loaded[0].vertices) == 4
    write_regions_file(tmp_path / "r.json", loaded)
    again = read_regions_file(tmp_path / "r.json")
    assert [r.name for r in again] == ["left", "nest"]
    assert np.array_equal(again[0].vertices, loaded[0].vertices)
    save_regions(planted_store, [])
    assert not planted_store.has(REGIONS_KEY) and load_regions(planted_store) == []


def test_regions_file_errors_are_clear(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps([{"name": "a", "kind": "rectangle", "box": [0, 0, 5]}]))
    with pytest.raises(SblError, match="needs 'box'"):
        read_regions_file(path)
    path.write_text(json.dumps([{"name": "a", "box": [0, 0, 5, 5]}, {"name": "a", "points": [[0, 0], [1, 0], [0, 1]]}]))
    with pytest.raises(SblError, match="a used twice"):
        read_regions_file(path)
    path.write_text("{")
    with pytest.raises(SblError, match="not valid JSON"):
        read_regions_file(path)


def test_shapes_layer_data_become_named_regions():
    data = [np.array([[0, 0], [0, 40], [64, 40], [64, 0]]), np.array([[5, 50], [5, 70], [30, 60]])]  # (y, x)
    regions = regions_from_shapes(data, ["rectangle", "polygon"], ["left", ""])
    assert [r.name for r in regions] == ["left", "region 2"]
    assert regions[0].vertices.min(axis=0).tolist() == [0, 0] and regions[0].vertices.max(axis=0).tolist() == [40, 64]
    assert regions[1].vertices.tolist() == [[50, 5], [70, 5], [60, 30]]
    back, kinds, names = shapes_from_regions(regions)
    assert kinds == ["rectangle", "polygon"] and np.array_equal(back[1], data[1])
    with pytest.raises(SblError, match="is a line"):
        regions_from_shapes([np.zeros((2, 2))], ["line"], ["x"])


def test_bouts_are_tagged_at_start_or_by_majority(planted_store):
    seq = load_sequences(planted_store)
    at_start = bouts_table(seq, LEFT_RIGHT, "start")
    assert at_start["region"].tolist() == ["left", "left", "left", "right", "right", "right"]
    by_majority = bouts_table(seq, LEFT_RIGHT, "majority")
    assert by_majority["region"].tolist()[2] == "right"  # groom 9-11: frame 9 left, 10 and 11 right
    assert len(select_region(at_start, "left")) == 3 and len(select_region(at_start, None)) == 6


def test_time_in_region_per_class(planted_store):
    table = region_budget_table(load_sequences(planted_store), LEFT_RIGHT)
    three = table[table["animal_id"] == 3].set_index(["region", "class"])
    assert three.loc["left", "seconds"].tolist() == pytest.approx([0.6, 0.3, 0.0])  # groom 0-3 and 9; walk 4-6
    assert three.loc["right", "seconds"].tolist() == pytest.approx([0.4, 0.0, 1.2])  # groom 10-11; rear
    assert three.loc["left", "fraction"].tolist() == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert three.loc["right", "bouts"].tolist() == [0, 0, 2] and three.loc["left", "bouts"].tolist() == [2, 1, 0]
    seven = table[table["animal_id"] == 7].set_index(["region", "class"])
    assert seven.loc["right", "seconds"].tolist() == pytest.approx([0.0, 2.5, 0.0])
    assert seven.loc["left", "seconds"].sum() == 0 and seven.loc["outside", "seconds"].sum() == 0
