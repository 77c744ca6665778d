"""What a clustering produces: statistics, label candidates, CSV, metadata, the CLI verb and the demo step."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest

from napari_sbl.cli import cluster_cmd
from napari_sbl.cli.common import add_shared_options
from napari_sbl.cluster.candidates import read_candidates, send_to_labels
from napari_sbl.cluster.preprocess import group_codes, load_clips, preprocess_features
from napari_sbl.cluster.run import ClusterParams, cluster_stores, export_csv
from napari_sbl.cluster.summary import clip_positions, consecutive_runs, group_proportions, row_metadata
from napari_sbl.project import MetadataError, read_session_metadata
from napari_sbl.store import layout
from tests.cluster.planted import FPS, behaviour_centres, centroid_of, planted_store


@pytest.fixture
def two_stores(tmp_path):
    centres = behaviour_centres()
    a = planted_store(tmp_path, "a", centres, clips_per_animal=60, seed=1)
    b = planted_store(tmp_path, "b", centres, clips_per_animal=40, seed=2)
    params = ClusterParams(embedding="motion", method="hdbscan", cluster_on="features")
    return a, b, cluster_stores([a.store, b.store], params, name="blobs")


def test_runs_sizes_and_representatives(two_stores):
    a, b, result = two_stores
    runs = consecutive_runs(result.table, result.labels)
    assert np.all(runs.frames % 8 == 0) and runs.frames.sum() == 8 * len(result.table)
    truth = np.concatenate([a.truth, b.truth])
    true_runs = consecutive_runs(result.table, truth)
    assert len(runs.label) == len(true_runs.label)  # clusters recovered, so the same bouts
    stats = {s.cluster_id: s for s in result.stats(n_representatives=3)}
    for cluster, s in stats.items():
        members = result.labels == cluster
        assert s.size == members.sum() and s.mean_run_s == pytest.approx(s.mean_run_frames / FPS)
        assert len(s.representatives) == 3 and np.all(result.labels[s.representatives] == cluster)
        centre = result.space[members].mean(axis=0)
        spread = np.linalg.norm(result.space[members] - centre, axis=1)
        assert np.linalg.norm(result.space[s.representatives[0]] - centre) == pytest.approx(spread.min())
    assert result.summary_lines()[1].startswith("4 clusters over 200 clips; noise 0.0%")


def test_preprocessing_centres_and_scales(two_stores):
    a, b, _ = two_stores
    table = load_clips([a.store, b.store], "motion")
    codes = group_codes(table, "animal")
    assert len(np.unique(codes)) == 4
    centred = preprocess_features(table.features, codes)
    for code in np.unique(codes):
        assert np.allclose(centred[codes == code].mean(axis=0), 0, atol=1e-4)
    unit = preprocess_features(table.features, scaling="l2")
    assert np.allclose(np.linalg.norm(unit, axis=1), 1, atol=1e-5)
    standard = preprocess_features(table.features, scaling="standard", pca_components=5)
    assert standard.shape == (len(table), 5) and standard.dtype == np.float32


def test_candidates_are_appended_without_duplicates(two_stores):
    a, b, result = two_stores
    added = send_to_labels([a.store, b.store], result, "groom", clusters=[0])
    assert added == (result.labels == 0).sum()
    selection = np.flatnonzero(result.labels == 2)[:5]
    assert send_to_labels([a.store, b.store], result, "rear", rows=selection) == 5
    assert send_to_labels([a.store, b.store], result, "groom", clusters=[0]) == 0
    for store, rows in ((a.store, result.table.rows_of(0)), (b.store, result.table.rows_of(1))):
        candidates = read_candidates(store)
        mine = np.isin(np.flatnonzero(result.labels == 0), np.arange(rows.start, rows.stop)).sum()
        assert candidates.classes[0] == "groom" and (candidates.class_index == 0).sum() == mine
        assert np.all(candidates.stop_frame - candidates.start_frame == 8)
        assert np.all(candidates.cluster_id[candidates.class_index == 0] == 0)
        assert np.all(np.isfinite(candidates.distance))
        assert [s["class_name"] for s in candidates.sources] == ["groom", "rear", "groom"][: len(candidates.sources)]
    assert read_candidates(a.store).class_names().count("rear") + read_candidates(b.store).class_names().count(
        "rear") == 5
    a.store.write_array(f"{layout.ANNOTATIONS}/candidates/class_index", np.zeros(3, np.int32))  # torn write
    assert len(read_candidates(a.store)) == 0


def test_csv_export_with_metadata(two_stores, tmp_path):
    a, b, result = two_stores
    metadata_path = tmp_path / "sessions.csv"
    metadata_path.write_text("store,group,genotype\na.sbl.zarr,control,wt\nb,treated,ko\n")
    metadata = read_session_metadata(metadata_path)
    records = [metadata.for_session(s.path, s.video_path()) for s in (a.store, b.store)]
    assert records == [{"group": "control", "genotype": "wt"}, {"group": "treated", "genotype": "ko"}]
    columns = row_metadata(result.table, records)
    rows = np.array([0, 5, 130, 199])
    export_csv(result, tmp_path / "clips.csv", rows=rows, metadata=columns)
    lines = list(csv.DictReader((tmp_path / "clips.csv").open()))
    assert [line["store"] for line in lines] == ["a.sbl.zarr", "a.sbl.zarr", "b.sbl.zarr", "b.sbl.zarr"]
    assert [int(line["clip"]) for line in lines] == [0, 5, 10, 79]
    assert [line["group"] for line in lines] == ["control", "control", "treated", "treated"]
    assert int(lines[1]["start_frame"]) == 40 and float(lines[1]["start_s"]) == pytest.approx(4.0)
    assert float(lines[2]["umap_x"]) == pytest.approx(float(result.embedding_2d[130, 0]), rel=1e-5)
    assert int(lines[3]["cluster"]) == result.labels[199]
    shares = group_proportions(result.labels, columns["group"])
    assert np.allclose(shares.sum(axis=1), 1.0) and list(shares.index) == ["control", "treated"]


def test_metadata_json_forms_and_errors(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"sessions": [{"video": "a.mp4", "session": "1"}]}))
    metadata = read_session_metadata(tmp_path / "m.json")
    assert metadata.for_session(tmp_path / "a.sbl.zarr", tmp_path / "a.mp4") == {"session": "1"}
    assert metadata.for_session(tmp_path / "c.sbl.zarr") == {}
    (tmp_path / "bad.csv").write_text("name,group\nx,1\n")
    with pytest.raises(MetadataError, match="'store' or 'video' column"):
        read_session_metadata(tmp_path / "bad.csv")


def test_clip_positions_follow_the_tracks(two_stores):
    a, b, result = two_stores
    positions = clip_positions([a.store, b.store], result.table)
    row = 70  # store a, animal 2, frames 80-88
    expected = np.mean([centroid_of(2, t) for t in range(80, 88)], axis=0)
    assert result.table.animal_id[row] == 2 and np.allclose(positions[row], expected)


def _cli(argv):
    parser = argparse.ArgumentParser()
    cluster_cmd.add_arguments(parser)
    add_shared_options(parser)
    return cluster_cmd.run(parser.parse_args(argv))


def test_cli_clusters_several_stores_and_reuses_the_result(two_stores, capsys, tmp_path):
    a, b, _ = two_stores
    argv = [str(a.store.path), str(b.store.path), "--method", "hdbscan", "--cluster-on", "features",
            "--min-cluster-size", "10", "--name", "cli", "--no-progress", "--csv", str(tmp_path / "all.csv")]
    assert _cli(argv) == 0
    out = capsys.readouterr().out
    assert "4 clusters over 200 clips; noise 0.0%" in out and "computed: clusters" in out
    assert a.store.has(layout.cluster_key("cli", "labels")) and b.store.has(layout.cluster_key("cli", "labels"))
    assert len((tmp_path / "all.csv").read_text().splitlines()) == 201
    assert _cli(argv) == 0
    assert "computed: nothing" in capsys.readouterr().out


def test_demo_step_uses_the_store_embedding(two_stores):
    from types import SimpleNamespace

    from napari_sbl.cluster.run import demo_step_cluster
    from napari_sbl.progress import silent

    a, _, _ = two_stores
    line = demo_step_cluster(SimpleNamespace(store=a.store, reporter=silent(), params=SimpleNamespace(max_frames=None)))
    assert line.startswith("clustered 120 clips of motion into") and "clusters/motion-demo" in line
