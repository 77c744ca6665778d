"""Import/export: CSV, BORIS and seed JSON → store → CSV give back the planted segments; bad files are named."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest

from napari_sbl.behavior.annotation_io import UnknownClassesError, export_csv, import_file, timing_of_store
from napari_sbl.behavior.annotation_readers import detect_format
from napari_sbl.behavior.annotation_store import AnnotationSession, load_model
from napari_sbl.cli import labels_cmd
from napari_sbl.cli.common import add_shared_options
from napari_sbl.errors import AnnotationError
from napari_sbl.io.writer import VideoWriteParams, write_video
from napari_sbl.pipeline.session import open_session

FPS = 25
N_FRAMES = 200
PLANTED = {(1, "groom", 10, 40), (1, "rear", 40, 54), (2, "walk", 0, 25), (2, "groom", 100, 180), (1, "walk", 190, 200)}


@pytest.fixture
def store(tmp_path):
    frames = [np.full((24, 32, 3), (3 * i) % 256, dtype=np.uint8) for i in range(N_FRAMES)]
    write_video(tmp_path / "mouse.mp4", frames, VideoWriteParams(fps=FPS, gop=25, crf=20))
    _, store = open_session(tmp_path / "mouse.mp4")
    store.write_array("tracks/animal_ids", np.array([1, 2], dtype=np.int32))
    return store


def run_labels(*argv) -> int:
    parser = argparse.ArgumentParser()
    labels_cmd.add_arguments(parser)
    add_shared_options(parser)
    return labels_cmd.run(parser.parse_args([str(a) for a in argv]))


def exported_rows(path) -> set[tuple]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {(int(r["animal_id"]), r["class"], int(r["start_frame"]), int(r["stop_frame"])) for r in rows}


def write_csv(path, rows, header=("animal_id", "class", "start_frame", "stop_frame")):
    path.write_text("\n".join([",".join(header), *(",".join(map(str, r)) for r in rows)]) + "\n")
    return path


def test_csv_round_trip_through_the_store_and_twice_adds_nothing(store, tmp_path, capsys):
    source = write_csv(tmp_path / "in.csv", sorted(PLANTED))
    assert run_labels(store.path, "--import", source, "--add-unknown-classes") == 0
    assert "imported 5 segments" in capsys.readouterr().out
    assert run_labels(store.path, "--import", source, "--export", tmp_path / "out.csv") == 0
    out = capsys.readouterr().out
    assert "nothing new" in out and "exported 5 segments" in out
    assert exported_rows(tmp_path / "out.csv") == PLANTED
    model, version = load_model(store)
    assert len(model.segments()) == 5 and version == 2


def test_csv_with_negatives_and_aliases(store, tmp_path):
    source = write_csv(tmp_path / "in.tsv", [(1, "groom", 0, 10, "label"), (1, "groom", 10, 20, "not")],
                       header=("Animal", "Behavior", "Start", "Stop", "kind"))
    source.write_text(source.read_text().replace(",", "\t"))
    session = AnnotationSession.open(store)
    result = import_file(session.model, source, timing_of_store(store), add_unknown=True)
    assert (result.format, result.segments, result.negatives) == ("csv", 1, 1)
    export_csv(session.model, tmp_path / "out.csv", include_negatives=True)
    text = (tmp_path / "out.csv").read_text().splitlines()
    assert text == ["animal_id,class,start_frame,stop_frame,kind", "1,groom,0,10,label", "1,groom,10,20,not"]


def boris_time(frame: int) -> str:
    return f"{frame / FPS:.3f}"


def test_boris_aggregated_round_trip(store, tmp_path):
    header = ["Observation id", "Observation date", "Description", "Observation duration", "Observation type",
              "Source", "Media duration (s)", "FPS", "Subject", "Behavior", "Behavioral category", "Behavior type",
              "Start (s)", "Stop (s)", "Duration (s)", "Media file name", "Comment start", "Comment stop"]
    lines = ["\t".join(header)]
    for animal, name, start, stop in sorted(PLANTED):
        lines.append("\t".join(["obs1", "2024-05-01", "", "8.0", "Media file(s)", "player #1:mouse.mp4", "8.0", "25",
                                f"mouse {animal}", name, "", "STATE", boris_time(start), boris_time(stop),
                                boris_time(stop - start), "/data/mouse.mp4", "", ""]))
    path = tmp_path / "boris_aggregated.tsv"
    path.write_text("\n".join(lines) + "\n")
    assert detect_format(path) == "boris"
    assert run_labels(store.path, "--import", path, "--add-unknown-classes", "--export", tmp_path / "out.csv") == 0
    assert exported_rows(tmp_path / "out.csv") == PLANTED


def test_boris_tabular_events_with_points_and_preamble(store, tmp_path):
    lines = ["Observation id,obs1", "Observation date,2024-05-01", "Time offset (s),0.000", "",
             "Media file(s)", "Player #1,mouse.mp4", "",
             "Time,Media file path,Total length,FPS,Subject,Behavior,Behavioral category,Comment,Status"]
    events = []
    for animal, name, start, stop in PLANTED:
        events += [(start, f"mouse {animal}", name, "START"), (stop, f"mouse {animal}", name, "STOP")]
    events.append((90, "", "sniff", "POINT"))
    for frame, subject, name, status in sorted(events, key=lambda e: (e[0], e[3] == "START")):
        lines.append(f"{boris_time(frame)},mouse.mp4,8.0,25,{subject},{name},,,{status}")
    path = tmp_path / "boris_events.csv"
    path.write_text("\n".join(lines) + "\n")
    assert run_labels(store.path, "--import", path, "--add-unknown-classes", "--animal", 2,
                      "--export", tmp_path / "out.csv") == 0
    assert exported_rows(tmp_path / "out.csv") == PLANTED | {(2, "sniff", 90, 91)}


def seed_file(path, step_fps=FPS / 2):
    clips = [
        {"id": "mouse/clip_000010_00000.mp4", "label": "groom", "labels": ["groom"],
         "meta": {"source_video": "mouse.mp4", "source_frame": 10, "clip_length": 30, "target_fps": FPS}},
        {"id": "mouse/clip_000040_00001.mp4", "label": "rear",
         "meta": {"source_video": "mouse", "sub_start_frame": 20, "clip_length": 8, "target_fps": step_fps},
         "frame_labels": ["rear"] * 7 + [None]},
        {"id": "mouse/clip_000100.mp4", "label": "groom",
         "meta": {"source_video": "mouse.mp4", "source_frame": 100, "clip_length": 80, "animal_id": 2}},
        {"id": "other/clip.mp4", "label": "walk", "meta": {"source_video": "other.mp4", "source_frame": 0}},
        {"id": "mouse/unlabelled.mp4", "label": "", "meta": {"source_video": "mouse.mp4", "source_frame": 60}},
        {"id": "mouse/neg.mp4", "label": "rear", "hard_negative": True,
         "meta": {"source_video": "mouse.mp4", "source_frame": 60, "clip_length": 5}},
        {"id": "mouse/clip_walk.mp4", "labels": ["walk"], "source_video": "mouse.mp4", "start_frame": 190,
         "clip_length": 10},
        {"id": "mouse/walk2.mp4", "label": "walk", "meta": {"source_video": "mouse.mp4", "source_frame": 0,
                                                             "clip_length": 25, "animal_id": 2}},
    ]
    path.write_text(json.dumps({"classes": ["groom", "rear", "walk"], "clips": clips}))
    return path


def test_seed_json_maps_clips_back_to_source_frames(store, tmp_path, capsys):
    path = seed_file(tmp_path / "annotations.json")
    assert run_labels(store.path, "--import", path, "--from", "sbl", "--add-unknown-classes", "--animal", 1,
                      "--export", tmp_path / "out.csv") == 0
    assert "skipped clips of other videos: ['other']" in capsys.readouterr().out
    assert exported_rows(tmp_path / "out.csv") == PLANTED  # clip 2: 7 frames × step 2 from 20 × 2
    model, _ = load_model(store)
    assert [(s.animal_id, s.start_frame, s.stop_frame) for s in model.negative_segments()] == [(1, 60, 65)]


def test_unknown_classes_are_listed_and_nothing_is_saved(store, tmp_path, capsys):
    write_csv(tmp_path / "first.csv", [(1, "groom", 0, 5)])
    run_labels(store.path, "--import", tmp_path / "first.csv", "--add-unknown-classes")
    before = load_model(store)[0].segments()
    source = write_csv(tmp_path / "new.csv", [(1, "groom", 5, 9), (2, "dig", 0, 3), (1, "Flail", 4, 6)])
    with pytest.raises(UnknownClassesError, match=r"'dig', 'Flail'.*--add-unknown-classes") as info:
        run_labels(store.path, "--import", source)
    assert info.value.names == ["dig", "Flail"] and isinstance(info.value, AnnotationError)
    assert load_model(store)[0].segments() == before


@pytest.mark.parametrize(("rows", "message"), [
    ([(1, "groom", 0, 5), (1, "groom", 190, 260)], r"in.csv line 3: frames 190–260 run past the video's end \(200"),
    ([(1, "groom", 30, 10)], "line 2: empty or reversed frame range: start 30, stop 10"),
    ([(1, "groom", -5, 10)], "line 2: negative frame"),
    ([(9, "groom", 0, 10)], r"line 2: animal 9 is not in this store \(animals: \[1, 2\]\)"),
    ([(1, "groom", "abc", 10)], "line 2: start_frame 'abc' is not a number"),
    ([(1, "groom", 2.5, 10)], "line 2: start_frame '2.5' is not a whole frame number"),
])
def test_bad_csv_rows_are_named(store, tmp_path, rows, message):
    source = write_csv(tmp_path / "in.csv", rows)
    with pytest.raises(AnnotationError, match=message):
        run_labels(store.path, "--import", source, "--add-unknown-classes")
    assert load_model(store)[0].segments() == [] and load_model(store)[0].classes.names == []


def test_corrupt_files_give_clear_messages(store, tmp_path):
    cases = {
        "garbage.csv": (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "not a text file"),
        "nocolumn.csv": (b"animal_id,start_frame,stop_frame\n1,0,5\n", "no 'class' column"),
        "broken.json": (b'{"clips": [{"id": "a", "label": "x"', "not valid JSON"),
        "empty.csv": (b"", "is empty"),
        "book.xlsx": (b"PK", "spreadsheets are not read"),
        "stop.csv": (b"Time,Subject,Behavior,Status\n1.0,,groom,STOP\n", "STOP of 'groom' without a START"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(AnnotationError, match=message):
            run_labels(store.path, "--import", tmp_path / name, "--add-unknown-classes")


def test_boris_media_of_other_videos_and_times_past_the_end(store, tmp_path):
    header = "Subject\tBehavior\tStart (s)\tStop (s)\tMedia file name"
    other = tmp_path / "other.tsv"
    other.write_text(f"{header}\nmouse 1\tgroom\t1.0\t2.0\ta.mp4\nmouse 1\tgroom\t1.0\t2.0\tb.mp4\n")
    with pytest.raises(AnnotationError, match=r"annotates media \['a', 'b'\], none of which is this video"):
        run_labels(store.path, "--import", other, "--add-unknown-classes")
    late = tmp_path / "late.tsv"
    late.write_text(f"{header}\nmouse 1\tgroom\t7.0\t12.5\tmouse.mp4\n")
    with pytest.raises(AnnotationError, match=r"late.tsv line 2: 7.0–12.5 s runs past the video's end"):
        run_labels(store.path, "--import", late, "--add-unknown-classes")


def test_classes_listing(store, tmp_path, capsys):
    write_csv(tmp_path / "in.csv", sorted(PLANTED))
    run_labels(store.path, "--import", tmp_path / "in.csv", "--add-unknown-classes")
    capsys.readouterr()
    assert run_labels(store.path, "--classes") == 0
    out = capsys.readouterr().out
    assert "3 classes (one class per frame), 5 labelled segments" in out
    groom_line = next(line for line in out.splitlines() if line.endswith("groom"))
    assert "110" in groom_line.split()  # 30 + 80 frames
