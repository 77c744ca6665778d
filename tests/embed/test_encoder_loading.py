"""The encoder loads what needs no plan (weights, device) on a thread while the step plans: same embeddings,
the same errors, and cancelling during planning still stops the step."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_sbl.embed.clips import EmbedError, VideoPrismParams
from napari_sbl.embed.motion import MotionEncoder
from napari_sbl.embed.run import embed_video
from napari_sbl.embed.videoprism_encoder import VideoPrismClipEncoder
from napari_sbl.errors import Cancelled, WeightsMissingError
from napari_sbl.progress import Reporter
from tests.embed.test_embed_step import MOTION, key, make_session, tiny_params


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return make_session(tmp_path_factory.mktemp("loading"))


class LoadingMotionEncoder(MotionEncoder):
    """The motion encoder with an early ``load()`` that waits until planning has begun (so it must run
    beside the plan, not before it) and then fails or records where it ran."""

    def __init__(self, params, planning: threading.Event, error: Exception | None = None) -> None:
        super().__init__(params)
        self.planning, self.error = planning, error
        self.started = threading.Event()
        self.loaded_on: str | None = None

    def load(self) -> None:
        self.started.set()
        assert self.planning.wait(30), "the encoder's load ran before planning, not beside it"
        if self.error is not None:
            raise self.error
        self.loaded_on = threading.current_thread().name


def planning_listener(planning: threading.Event, cancel: Reporter | None = None, loading: list | None = None):
    """Marks the start of planning; ``loading`` gets whether the encoder's load was under way by then."""
    def listen(done, total, message):
        if message == "reading masks" and not planning.is_set():
            if loading is not None:
                loading.append(loading[0].started.wait(10))
            planning.set()
            if cancel is not None:
                cancel.cancel()
    return listen


def test_encoder_loads_beside_the_plan_with_the_same_embeddings(session):
    video, store = session
    embed_video(video, store, MOTION, Reporter(), overwrite=True)
    expected = {part: store.read(key(part)) for part in ("clips", "frames", "start_frame")}
    planning = threading.Event()
    encoder = LoadingMotionEncoder(MOTION, planning)
    loading = [encoder]
    summary = embed_video(video, store, MOTION, Reporter(listener=planning_listener(planning, loading=loading)),
                          encoder=encoder, overwrite=True)
    assert summary.complete and loading[1:] == [True] and encoder.loaded_on.startswith("embed-encoder")
    for part, values in expected.items():
        np.testing.assert_array_equal(store.read(key(part)), values)


def test_a_load_error_surfaces_before_the_store_is_touched(tmp_path):
    video, store = make_session(tmp_path / "broken")
    planning = threading.Event()
    encoder = LoadingMotionEncoder(MOTION, planning, EmbedError("weights file is damaged; download it again"))
    with pytest.raises(EmbedError, match="damaged; download it again"):
        embed_video(video, store, MOTION, Reporter(listener=planning_listener(planning)), encoder=encoder)
    assert not store.has(key("clips"))


def test_missing_videoprism_weights_say_the_same_as_before(session, tmp_path):
    video, store = session
    missing = tmp_path / "videoprism_tiny.npz"
    params = tiny_params(videoprism=VideoPrismParams(model="tiny", checkpoint=str(missing), dtype="float32"))
    with pytest.raises(WeightsMissingError, match=f"checkpoint {missing} is not a file"):
        embed_video(video, store, params, overwrite=True)


def test_videoprism_loaded_early_is_not_loaded_again(session):
    params = tiny_params()
    encoder = VideoPrismClipEncoder(params)
    encoder.load()
    loaded = encoder.encoder
    assert loaded is not None and loaded.config.name == "tiny"
    encoder.prepare(None)
    assert encoder.encoder is loaded


def test_cancelling_while_planning_stops_the_step(tmp_path):
    video, store = make_session(tmp_path / "cancel")
    planning = threading.Event()
    reporter = Reporter()
    reporter.listener = planning_listener(planning, cancel=reporter)
    with pytest.raises(Cancelled):
        embed_video(video, store, MOTION, reporter, encoder=LoadingMotionEncoder(MOTION, planning))
    assert not store.has(key("clips"))
    assert not [t for t in threading.enumerate() if t.name.startswith("embed-encoder")]
