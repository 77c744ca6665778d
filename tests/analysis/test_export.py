"""Exports: the CLI over several stores with groups and regions, frames.parquet, figures, overlay videos."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from napari_sbl.analysis import figures
from napari_sbl.analysis.overlay import OverlayParams, export_overlay
from napari_sbl.analysis.run import AnalyzeParams, analyse, analysis_figures, write_figures
from napari_sbl.analysis.sequences import load_sequences
from napari_sbl.cli import analyze_cmd
from napari_sbl.cli.common import add_shared_options
from napari_sbl.errors import Cancelled, SblError, StoreError
from napari_sbl.io.video import VideoReader
from napari_sbl.plugin.layers import animal_color
from napari_sbl.progress import Reporter

from .conftest import make_store, planted_centres


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    analyze_cmd.add_arguments(parser)
    add_shared_options(parser)
    return analyze_cmd.run(parser.parse_args(argv))


@pytest.fixture
def grouped_stores(tmp_path):
    """Four sessions; in 'drug' sessions both animals groom 10 of 20 frames, in 'ctrl' sessions 2 to 5."""
    stores, groom_frames = [], {"s1": 2, "s2": 3, "s3": 10, "s4": 10}
    for name, frames in groom_frames.items():
        extra = 1 if name in ("s2", "s4") else 0
        rows = [(animal, 0, frames + extra * animal // 7, 1) for animal in (3, 7)]
        rows += [(animal, 12, 20, 2) for animal in (3, 7)]
        stores.append(make_store(tmp_path / name, name, planted_centres(), [3, 7], annotations=rows))
    groups = tmp_path / "groups.csv"
    groups.write_text("video,treatment,batch\ns1.mp4,ctrl,A\ns2,ctrl,B\ns3.mp4,drug,A\ns4.sbl.zarr,drug,B\n")
    return stores, groups


def test_cli_writes_tables_figures_and_group_comparisons(grouped_stores, tmp_path, capsys):
    stores, groups = grouped_stores
    regions = tmp_path / "regions.json"
    regions.write_text(json.dumps([{"name": "left", "box": [0, 0, 40, 64]}]))
    out = tmp_path / "out"
    argv = [*(str(s.path) for s in stores), "--out", str(out), "--groups", str(groups), "--group-column",
            "treatment", "--bin-minutes", "0.01", "--regions", str(regions), "--formats", "png"]
    assert run_cli(argv) == 0
    printed = capsys.readouterr().out
    assert "s1: annotations, 2 animals, 20 frames" in printed and "groups by treatment: " in printed
    for name in ("bouts.csv", "time_budget.csv", "transitions.csv", "transitions_by_animal.csv", "frames.parquet",
                 "time_bins.csv", "region_budget.csv", "comparison_treatment.csv", "figures/ethogram.png",
                 "figures/comparison_treatment.png", "figures/time_bins.png"):
        assert (out / name).is_file(), name
    assert not (out / "comparison_batch.csv").exists() and not list(out.rglob("*.svg"))
    bouts = pd.read_csv(out / "bouts.csv")
    assert list(bouts.columns[:7]) == ["video", "animal_id", "class", "start_frame", "stop_frame", "start_s",
                                       "duration_s"]
    assert set(bouts["region"]) == {"left", "outside"}
    budget = pd.read_csv(out / "time_budget.csv")
    groom = budget[budget["class"] == "groom"]
    assert groom.set_index(["video", "animal_id"])["frames"].to_dict() == {
        ("s1", 3): 2, ("s1", 7): 2, ("s2", 3): 3, ("s2", 7): 4, ("s3", 3): 10, ("s3", 7): 10,
        ("s4", 3): 10, ("s4", 7): 11}
    tests = pd.read_csv(out / "comparison_treatment.csv")
    row = tests[(tests["metric"] == "fraction") & (tests["class"] == "groom")].iloc[0]
    ctrl, drug = (groom[groom["video"].isin(v)]["fraction"] for v in (("s1", "s2"), ("s3", "s4")))
    reference = sps.mannwhitneyu(ctrl, drug, alternative="two-sided")
    assert row["test"] == "mann-whitney" and row["statistic"] == reference.statistic == 0
    assert row["p"] == pytest.approx(reference.pvalue) and row["effect"] == -1.0
    assert row["n_ctrl"] == row["n_drug"] == 4
    scopes = set(pd.read_csv(out / "transitions.csv")["scope"])
    assert scopes == {"all", "treatment=ctrl", "treatment=drug"}


def test_unknown_group_column_and_unlisted_videos(grouped_stores, tmp_path, caplog):
    stores, groups = grouped_stores
    with pytest.raises(SblError, match="has no column genotype; it has batch, treatment"):
        run_cli([str(stores[0].path), "--out", str(tmp_path / "o"), "--groups", str(groups),
                 "--group-column", "genotype"])
    groups.write_text("store,treatment\ns1.sbl.zarr,ctrl\ns2.sbl.zarr,ctrl\ns3.sbl.zarr,drug\n")
    analysis = analyse([s.path for s in stores], AnalyzeParams(groups_file=groups))
    assert "s4" in caplog.text and "no row" in caplog.text
    tests = analysis.comparisons["treatment"][0]
    fraction = tests[tests["metric"] == "fraction"]
    assert (fraction["n_ctrl"] == 4).all() and (fraction["n_drug"] == 2).all()
    latency = tests[(tests["metric"] == "latency_s") & (tests["class"] == "rear")]  # never happens: no test
    assert (latency[["n_ctrl", "n_drug"]] == 0).all().all() and latency["p"].isna().all()


def test_cli_on_an_unlabelled_store_names_the_problem(tmp_path):
    store = make_store(tmp_path, "bare", planted_centres(), [3, 7])
    with pytest.raises(StoreError, match=r"bare\.sbl\.zarr has no annotations"):
        run_cli([str(store.path), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out" / "bouts.csv").exists()


def test_frames_parquet_has_every_frame_animal_and_probability(tmp_path):
    store = make_store(tmp_path, "p", planted_centres(), [3, 7])
    labels = np.tile([[0, 1]], (20, 1))
    probs = np.zeros((20, 2, 2), dtype=np.float16)
    probs[:, 0, 0] = probs[:, 1, 1] = 0.75
    classes = [{"id": 0, "name": "still", "color": "#888888"}, {"id": 1, "name": "run", "color": "#ff8800"}]
    store.write_array("predictions/mlp/labels", labels.astype(np.int16), attrs={"classes": classes})
    store.write_array("predictions/mlp/probs", probs, attrs={"classes": classes})
    assert run_cli([str(store.path), "--out", str(tmp_path / "out"), "--formats", "--start", "5"]) == 0
    frames = pd.read_parquet(tmp_path / "out" / "frames.parquet")
    assert len(frames) == 15 * 2 and frames["frame"].min() == 5
    assert list(frames.columns) == ["video", "frame", "time_s", "animal_id", "present", "class", "p_still", "p_run"]
    absent = frames[(frames["animal_id"] == 3) & frames["frame"].isin([14, 15])]
    assert (~absent["present"]).all() and absent["class"].isna().all()
    run = frames[frames["animal_id"] == 7]
    assert (run["class"] == "run").all() and np.allclose(run["p_run"], 0.75)
    assert not (tmp_path / "out" / "figures").exists()


def test_figures_render_with_agg_and_are_not_trivial(grouped_stores, tmp_path):
    stores, groups = grouped_stores
    analysis = analyse([s.path for s in stores], AnalyzeParams(groups_file=groups, bin_minutes=0.01))
    written = write_figures(analysis, tmp_path / "figs")
    names = {p.stem for p in written}
    assert names == {"ethogram", "time_budget", "bout_durations", "transition_matrix", "transition_graph",
                     "time_bins", "comparison_treatment", "comparison_batch"}
    import matplotlib.image

    for path in written:
        if path.suffix == ".png":
            image = matplotlib.image.imread(path)
            ink = (image[..., :3] < 0.8).any(axis=-1).mean()
            assert image.shape[0] > 200 and 0.01 < ink < 0.9 and len(np.unique(image[::4, ::4, 0])) > 10, path
        else:
            text = path.read_text()
            assert "<svg" in text and text.count("<path") > 10, path
    figure = analysis_figures(analysis)["transition_matrix"]()
    assert type(figure.canvas).__name__ == "FigureCanvasAgg"
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert texts.count("0") >= 1 and len(texts) == len(analysis.class_names) ** 2
    assert figures.SIGNIFICANT_Z == 1.96


def test_overlay_video_is_playable_with_matching_frames_and_size(planted_store, tmp_path):
    seq = load_sequences(planted_store)
    video = VideoReader(planted_store.video_path())
    out = export_overlay(video, planted_store, seq, tmp_path / "o" / "overlay.mp4",
                         OverlayParams(start=5, stop=15, crf=8), Reporter())
    decoded = VideoReader(out)
    assert decoded.n_frames == 10 and (decoded.height, decoded.width) == (video.height, video.width)
    assert np.allclose(decoded.frame_times(), video.frame_times()[5:15] - video.frame_times()[5], atol=1e-3)
    frame = decoded.frame(0)  # video frame 5: animal 3 at (20, 30), animal 7 at (65, 50), radius 6
    ring = frame[30, 20 - 6:20 - 4].astype(float).mean(axis=0)
    colour = np.array([int(animal_color(3)[i:i + 2], 16) for i in (1, 3, 5)], dtype=float)
    assert np.abs(ring - colour).max() < 60, (ring, colour)
    assert np.abs(video.frame(5)[30, 14].astype(float) - colour).max() > 100  # the original had no outline


def test_cancelled_overlay_leaves_no_file(planted_store, tmp_path):
    seq = load_sequences(planted_store)
    video = VideoReader(planted_store.video_path())
    reporter = Reporter()
    reporter.listener = lambda done, total, message: reporter.cancel() if done == 3 else None
    with pytest.raises(Cancelled):
        export_overlay(video, planted_store, seq, tmp_path / "o" / "overlay.mp4", OverlayParams(), reporter)
    assert list((tmp_path / "o").iterdir()) == []
