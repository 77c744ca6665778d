"""Prompts: our JSON, the seed's JSON, napari points, and the errors bad input gets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_sbl.errors import PromptError
from napari_sbl.segment.prompts import (
    points_from_prompts,
    prompts_from_json,
    prompts_from_points,
    prompts_to_json,
    read_prompts,
    validate_prompts,
    write_prompts,
)

OURS = [
    {"frame": 10, "animals": [{"id": 2, "points": [[5.5, 6.0]], "labels": [1]}]},
    {"frame": 0, "animals": [{"id": 1, "points": [[1, 2], [3, 4]], "labels": [1, 0]},
                             {"id": 2, "points": [[7, 8]], "labels": [1]}]},
]


def test_round_trip_through_file(tmp_path):
    prompts = prompts_from_json(OURS)
    assert [p.frame_index for p in prompts] == [0, 10]
    path = tmp_path / "prompts.json"
    write_prompts(path, prompts)
    again = read_prompts(path)
    assert prompts_to_json(again) == prompts_to_json(prompts)
    assert json.loads(path.read_text())[0]["animals"][0] == {"id": 1, "points": [[1.0, 2.0], [3.0, 4.0]],
                                                             "labels": [1, 0]}


def test_seed_format_is_read_with_ids_shifted_off_background():
    seed = {"video_path": "v.mp4", "prompts": [
        {"frame_idx": 3, "obj_id": 0, "x": 10, "y": 20, "label": 1},
        {"frame_idx": 3, "obj_id": 1, "x": 30, "y": 40, "label": 1},
        {"frame_idx": 3, "obj_id": 0, "x": 12, "y": 22, "label": 0},
    ]}
    prompts = prompts_from_json(seed)
    assert len(prompts) == 1 and [a.animal_id for a in prompts[0].animals] == [1, 2]
    assert prompts[0].animals[0].labels.tolist() == [1, 0]


def test_points_layer_conversion_round_trip():
    prompts = prompts_from_json(OURS)
    coords, ids, positive = points_from_prompts(prompts)
    assert coords.shape == (4, 3) and coords[0].tolist() == [0, 2, 1]
    assert prompts_to_json(prompts_from_points(coords, ids, positive)) == prompts_to_json(prompts)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"a": 1}, "must be a list"),
        ([{"frame": 0}], "needs 'frame' and 'animals'"),
        ([{"frame": "x", "animals": []}], "frame must be an integer"),
        ([{"frame": 0, "animals": [{"id": 0, "points": [[1, 1]]}]}], "between 1 and 65535"),
        ([{"frame": 0, "animals": [{"id": 1, "points": [[1, 1]], "labels": [2]}]}], "1 \\(on the animal\\)"),
        ([{"frame": 0, "animals": [{"id": 1, "points": "abc"}]}], "points must be"),
    ],
)
def test_malformed_json_is_named(data, message):
    with pytest.raises(PromptError, match=message):
        prompts_from_json(data)


def test_validation_against_video():
    validate_prompts(prompts_from_json(OURS), n_frames=20, height=50, width=50)
    with pytest.raises(PromptError, match=r"frame 10 but the video has frames 0\.\.4"):
        validate_prompts(prompts_from_json(OURS), n_frames=5, height=50, width=50)
    outside = prompts_from_json([{"frame": 0, "animals": [{"id": 1, "points": [[60, 5]]}]}])
    with pytest.raises(PromptError, match="outside"):
        validate_prompts(outside, n_frames=5, height=50, width=50)
    negative_only = prompts_from_json([{"frame": 0, "animals": [{"id": 3, "points": [[5, 5]], "labels": [0]}]}])
    with pytest.raises(PromptError, match="animal 3 has only negative points"):
        validate_prompts(negative_only, n_frames=5, height=50, width=50)


def test_missing_file(tmp_path):
    with pytest.raises(PromptError, match="does not exist"):
        read_prompts(tmp_path / "none.json")
    assert np.array_equal(points_from_prompts([])[0], np.zeros((0, 3)))
