"""Training on cached embeddings of real stores, inference on a held-out video, reloading, refusals, CLI."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_sbl.behavior.decode import decode_preset
from napari_sbl.behavior.infer import EncoderMismatchError, infer_store, predict_store, redecode_store
from napari_sbl.behavior.metrics import macro_f1
from napari_sbl.behavior.model_dir import MODEL_FILE, REPORT_FILE, WEIGHTS_FILE, load_model
from napari_sbl.behavior.profiles import load_profile
from napari_sbl.behavior.train import train_behavior_model
from napari_sbl.errors import Cancelled, SblError
from napari_sbl.progress import Reporter
from tests.behavior.test_model_synthetic import make_behavior_store, write_embeddings


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two labelled videos (60 % of bouts labelled), one unseen video with known truth, a quick model."""
    folder = tmp_path_factory.mktemp("behaviour")
    first, first_truth = make_behavior_store(folder, "day1", seed=11, label_fraction=0.6)
    second, _ = make_behavior_store(folder, "day2", seed=21, label_fraction=0.6)
    unseen, truth = make_behavior_store(folder, "day3", seed=31, with_annotations=False)
    params = replace(load_profile("quick"), device="cpu", seed=1)
    epochs = []
    result = train_behavior_model([first, second], folder / "mouse-model", params, on_epoch=epochs.append)
    return SimpleNamespace(folder=folder, stores=[first, second], unseen=unseen, truth=truth, result=result,
                           epochs=epochs, params=params, first_truth=first_truth)


def held_out_f1(store, truth, name: str) -> float:
    labels = store.read(f"predictions/{name}/labels")
    return float(np.mean([macro_f1(truth[a], labels[:, i], 3) for i, a in enumerate(sorted(truth))]))


def test_temporal_head_reaches_f1_090_on_an_unseen_video(trained):
    summary = infer_store(trained.result.model_dir, trained.unseen, decode_preset("none"))
    per_frame = held_out_f1(trained.unseen, trained.truth, summary.name)
    assert per_frame >= 0.9, per_frame
    infer_store(trained.result.model_dir, trained.unseen, decode_preset("standard"))
    assert held_out_f1(trained.unseen, trained.truth, summary.name) >= 0.9
    # the per-frame signal alone is far weaker: nearest class mean of the raw per-frame vectors
    means = sampled_vectors(trained.stores[0], trained.first_truth)[1]
    vectors, truth = sampled_vectors(trained.unseen, trained.truth)[0], sampled_truth(trained.unseen, trained.truth)
    nearest = np.argmin(((vectors[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert macro_f1(truth, nearest, 3) < per_frame - 0.1


def sampled_truth(store, truth: dict) -> np.ndarray:
    """The planted class of every per-frame vector of ``store`` (vector i of a clip sits on frame start + 2i + 1)."""
    starts, animals = store.read("embeddings/motion/start_frame"), store.read("embeddings/motion/animal_id")
    return np.array([truth[a][s + 1 + 2 * i] for a, s in zip(animals, starts, strict=True) for i in range(8)])


def sampled_vectors(store, truth: dict) -> tuple[np.ndarray, np.ndarray]:
    """(all per-frame vectors, their class means) of ``store``."""
    vectors = store.read("embeddings/motion/frames").astype(np.float32).reshape(-1, 24)
    labels = sampled_truth(store, truth)
    return vectors, np.stack([vectors[labels == c].mean(axis=0) for c in range(3)])


def test_model_directory_holds_everything_needed(trained):
    model_dir = trained.result.model_dir
    assert {p.name for p in model_dir.iterdir()} == {WEIGHTS_FILE, MODEL_FILE, REPORT_FILE}
    assert not [p for p in model_dir.parent.iterdir() if p.name.startswith(".mouse-model")]  # no temp dirs left
    info = json.loads((model_dir / MODEL_FILE).read_text())
    assert [c["name"] for c in info["classes"]] == ["rest", "walk", "groom"]
    assert info["encoder"] == "motion" and info["checkpoint_sha256"] == "sha-motion-1"
    assert info["frame_step"] == 2 and "evenly spaced" in info["sampling_assumption"]
    assert info["params"]["name"] == "quick" and len(info["data_fingerprint"]) == 64
    assert info["training"]["split"]["how"] == "bouts" and info["training"]["best_epoch"] >= 1
    assert len(info["calibration"]["temperature"]) == 3
    report = json.loads((model_dir / REPORT_FILE).read_text())
    assert report["macro_f1"] > 0.8 and len(report["confusion"]) == 3 and len(report["confusion"][0]) == 4
    assert {"segmental_f1_50", "edit_score"} <= set(report)
    assert [c["name"] for c in report["per_class"]] == ["rest", "walk", "groom"]
    assert len(trained.epochs) == len(info["training"]["history"]) and trained.epochs[0].val_macro_f1 is not None


def test_reloading_the_model_reproduces_its_predictions(trained):
    infer_store(trained.result.model_dir, trained.unseen, decode_preset("none"), name="first")
    stored = trained.unseen.read("predictions/first/probs")
    again = predict_store(load_model(trained.result.model_dir, "cpu"), trained.unseen)
    np.testing.assert_array_equal(again.probs.astype(np.float16), stored)
    attrs = trained.unseen.attrs("predictions/first/labels")
    assert attrs["model_sha256"] == load_model(trained.result.model_dir, "cpu").weights_sha256
    assert attrs["decoding"]["preset"] == "none" and [c["name"] for c in attrs["classes"]] == ["rest", "walk", "groom"]


def test_predictions_layout_and_live_redecoding(trained, tmp_path):
    store = trained.unseen
    infer_store(trained.result.model_dir, store, decode_preset("none"), name="live")
    probs = store.read("predictions/live/probs")
    labels = store.read("predictions/live/labels")
    assert probs.shape == (1600, 2, 3) and probs.dtype == np.float16 and labels.dtype == np.int16
    covered = ~np.isnan(probs[..., 0].astype(np.float32))
    assert covered[:1592].all() and np.allclose(probs[covered].astype(np.float32).sum(-1), 1.0, atol=5e-3)
    assert (labels[~covered] == -1).all()
    before = len(np.flatnonzero(np.diff(labels[:, 0])))
    relabelled = redecode_store(store, "live", decode_preset("aggressive"))
    assert len(np.flatnonzero(np.diff(relabelled[:, 0]))) < before
    np.testing.assert_array_equal(store.read("predictions/live/labels"), relabelled)
    assert store.attrs("predictions/live/labels")["decoding"]["preset"] == "aggressive"


def test_a_model_refuses_embeddings_of_another_encoder(trained, tmp_path):
    other, _ = make_behavior_store(tmp_path, "vp", seed=5, n_frames=300, encoder="videoprism",
                                   checkpoint="sha-vp", with_annotations=False)
    with pytest.raises(EncoderMismatchError, match=r"no 'motion' embeddings.*it has: videoprism.*napari-sbl embed"):
        infer_store(trained.result.model_dir, other)
    write_embeddings(other, {1: np.zeros((300, 24), np.float32)}, "motion", "sha-motion-2", 16, 8, 8, 0,
                     np.random.default_rng(0))
    with pytest.raises(EncoderMismatchError, match=r"trained on 'motion' \(checkpoint sha-motion-1.*another checkpo"):
        infer_store(trained.result.model_dir, other)


def test_cancel_keeps_the_best_epoch_so_far(trained, tmp_path):
    steps = {"n": 0}
    reporter = Reporter(listener=lambda done, total, message: steps.__setitem__("n", steps["n"] + 1))

    def cancel_in_epoch_three(record):
        if record.epoch == 2:
            reporter.cancel()

    params = replace(trained.params, epochs=10)
    result = train_behavior_model(trained.stores, tmp_path / "cancelled", params, reporter=reporter,
                                  on_epoch=cancel_in_epoch_three)
    assert result.cancelled and len(result.history) == 2 and result.best_epoch in (1, 2)
    assert load_model(result.model_dir, "cpu").info.training["cancelled"] is True
    with pytest.raises(Cancelled):  # cancelled before any epoch finished: nothing to keep
        early = Reporter()
        early.cancel()
        train_behavior_model(trained.stores, tmp_path / "none", params, reporter=early)
    assert not (tmp_path / "none").exists()


def test_cli_train_and_infer(trained, tmp_path, capsys):
    from napari_sbl.cli import infer_cmd, train_cmd
    from napari_sbl.cli.common import add_shared_options

    def parse(module, argv):
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        add_shared_options(parser)
        return parser.parse_args(argv)

    stores = [str(s.path) for s in trained.stores]
    args = parse(train_cmd, [*stores, "--out", str(tmp_path / "cli-model"), "--profile", "quick", "--epochs", "2",
                             "--device", "cpu", "--no-progress"])
    assert train_cmd.run(args) == 0
    out = capsys.readouterr().out
    assert "model written to" in out and "macro-F1" in out and "groom" in out
    args = parse(infer_cmd, [str(tmp_path / "cli-model"), str(trained.unseen.path), "--decode", "light",
                             "--override", "groom:min_segment_frames=30", "--no-progress"])
    assert infer_cmd.run(args) == 0
    assert "predictions/cli-model" in capsys.readouterr().out
    decoding = trained.unseen.attrs("predictions/cli-model/labels")["decoding"]
    assert decoding["smooth_frames"] == 3 and decoding["class_overrides"] == {"groom": {"min_segment_frames": 30}}
    labels = trained.unseen.read("predictions/cli-model/labels")[:, 0]
    change = np.flatnonzero(np.diff(labels)) + 1
    starts, stops = np.concatenate([[0], change]), np.concatenate([change, [len(labels)]])
    assert all(b - a >= 30 for a, b in zip(starts, stops, strict=True) if labels[a] == 2 and a > 0 and b < 1592)
    with pytest.raises(SblError, match="not a napari-sbl behaviour model"):
        infer_cmd.run(parse(infer_cmd, [str(tmp_path), str(trained.unseen.path)]))


def test_multilabel_training_gives_independent_probabilities(trained, tmp_path):
    params = replace(trained.params, mode="multilabel", epochs=3)
    result = train_behavior_model(trained.stores, tmp_path / "multi", params)
    model = load_model(result.model_dir, "cpu")
    assert model.info.multilabel and len(model.info.calibration["thresholds"]) == 3
    probs = predict_store(model, trained.unseen).probs
    finite = probs[~np.isnan(probs[..., 0])]
    assert ((finite >= 0) & (finite <= 1)).all() and not np.allclose(finite.sum(-1), 1.0, atol=1e-2)


def test_demo_step_trains_and_predicts_on_its_own_video(trained, tmp_path):
    from napari_sbl.behavior.train import demo_step_train

    store, _ = make_behavior_store(tmp_path, "demo", seed=41, n_frames=900, label_fraction=0.8)
    line = demo_step_train(SimpleNamespace(store=store, reporter=Reporter(), params=SimpleNamespace(max_frames=None)))
    assert "trained a quick 'motion' behaviour model" in line and "own video" in line
    assert (tmp_path / "demo-model" / MODEL_FILE).is_file() and store.has("predictions/demo-model/labels")
    bare, _ = make_behavior_store(tmp_path, "bare", seed=42, n_frames=200, with_annotations=False)
    assert "skipped" in demo_step_train(SimpleNamespace(store=bare, reporter=Reporter(), params=None))


def test_profiles_are_json_files_to_duplicate_edit_and_auto_tune(trained, tmp_path, monkeypatch):
    from napari_sbl.behavior.profiles import autotune_profile, duplicate_profile, list_profiles

    monkeypatch.setenv("NAPARI_SBL_PROFILES", str(tmp_path / "profiles"))
    assert list_profiles()[:3] == ["quick", "balanced", "precise"]
    path = duplicate_profile("quick", "mine")
    data = json.loads(path.read_text())
    data.update(epochs=2, width=16)
    path.write_text(json.dumps(data))
    assert "mine" in list_profiles() and load_profile("mine").width == 16
    with pytest.raises(SblError, match="unknown training parameters"):
        path.write_text(json.dumps({**data, "widht": 3}))
        load_profile("mine")
    path.write_text(json.dumps(data))
    best, trials, written = autotune_profile(trained.stores, "mine", trials=3)
    assert written == path and len(trials) == 3 and all(t.val_macro_f1 is not None for t in trials)
    saved = load_profile("mine")
    winner = max(trials, key=lambda t: t.val_macro_f1)
    assert (saved.lr, saved.width, saved.layers) == (winner.lr, winner.width, winner.layers)
    assert "auto-tuned over 3 trials" in saved.description and saved.epochs == 2


def test_data_fingerprint_follows_the_training_arrays_and_labels(trained, tmp_path):
    from napari_sbl.behavior.dataset import read_clip_table
    from napari_sbl.behavior.model_dir import data_fingerprint
    from napari_sbl.behavior.train import fingerprint_record

    store, _ = make_behavior_store(tmp_path, "fp", seed=8, n_frames=300, animals=(1,))

    def fingerprint():
        return data_fingerprint([fingerprint_record(store, "motion", read_clip_table(store, "motion"))])

    first = fingerprint()
    assert fingerprint() == first
    stored = json.loads((trained.result.model_dir / MODEL_FILE).read_text())["data_fingerprint"]
    assert stored != first  # other stores, other fingerprint
    for part, value in (("animal_id", 1), ("start_frame", 0), ("stop_frame", 10), ("class_id", 2)):
        store.write_array(f"annotations/hard_negatives/{part}", np.array([value], np.int32))
    assert fingerprint() != first
