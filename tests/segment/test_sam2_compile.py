"""The compiled (VOS-optimised) SAM2 path: same masks as the eager path, one encoder batch shape.

Runs in a subprocess with TorchDynamo disabled: ``torch.compile`` then hands back the eager
functions, so this proves the wiring (SAM2's VOS predictor class, its cloning overrides, our fixed
encoder batch) on a CPU in seconds, and keeps triton out of the test process (its LLVM and Mesa's
crash each other once napari widgets have loaded OpenGL). The compiled speed is measured on a GPU by
``benchmarks/track_sam2.py --impls ours-compiled``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("sam2")

SCRIPT = r"""
import json, sys
import numpy as np
import torch
import os
from napari_sbl.segment.prompts import AnimalPrompt, FramePrompts
from napari_sbl.segment.sam2_tracker import Sam2Params, Sam2Tracker, tiny_test_overrides
from napari_sbl.progress import silent

class Discs:
    n_frames, height, width = 30, 64, 80
    def centres(self, i):
        return [(20 + i, 30.0), (60 - i, 34.0)]
    def frame(self, i):
        yy, xx = np.mgrid[:self.height, :self.width]
        image = np.full((self.height, self.width, 3), 20, np.uint8)
        for x, y in self.centres(i):
            image[(xx - x) ** 2 + (yy - y) ** 2 < 49] = 220
        return image

batches = []

video = Discs()
prompt = FramePrompts(12, tuple(AnimalPrompt(i + 1, np.array([c]), np.array([1], np.int8))
                                for i, c in enumerate(video.centres(12))))
result = {}
for compiled in (False, True, "encoder"):
    batches.clear()
    params = Sam2Params(weights="random", device="cpu", config_overrides=tiny_test_overrides(64),
                        encoder_batch_frames=4, compile=compiled is True,
                        compile_image_encoder=compiled == "encoder")
    tracker = Sam2Tracker(params)
    predictor = tracker.load()
    inner = predictor.forward_image  # every encoder call, ours and SAM2's own
    def spy(batch, inner=inner):
        batches.append(int(batch.shape[0]))
        return inner(batch)
    predictor.forward_image = spy
    labels = {f.frame_index: f.labels.tolist() for f in tracker.track(video, [prompt], 0, video.n_frames, silent())}
    result[str(compiled)] = {"class": type(predictor).__name__, "batches": sorted(set(batches)),
                             "frames": sorted(labels), "labels": labels}
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def compile_runs() -> dict:
    env = {**os.environ, "TORCHDYNAMO_DISABLE": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_compiled_predictor_gives_the_eager_masks_with_one_encoder_batch_shape(compile_runs):
    eager, compiled = compile_runs["False"], compile_runs["True"]
    assert eager["class"] == "SAM2VideoPredictor"
    assert compiled["class"] == "CompiledVideoPredictor"
    assert compiled["frames"] == eager["frames"] == list(range(30))
    assert compiled["batches"] == [4]  # short batches at the ends of each pass are padded
    assert len(eager["batches"]) > 1  # the eager path encodes short batches as they come
    assert compiled["labels"] == eager["labels"]


def test_compiled_image_encoder_sees_one_batch_shape_and_gives_the_eager_masks(compile_runs):
    eager, encoder = compile_runs["False"], compile_runs["encoder"]
    assert encoder["class"] == "SAM2VideoPredictor"  # only the image encoder is compiled
    assert encoder["batches"] == [4]  # the prompted frame too, padded like the rest
    assert encoder["frames"] == eager["frames"]
    assert encoder["labels"] == eager["labels"]



@pytest.mark.parametrize(("extra", "compiled", "recover", "encoder"), [
    ({}, False, True, False),
    ({"compile": True}, True, True, False),
    ({"compile": True, "drift": {"recover": False}}, True, False, False),
    ({"compile_image_encoder": True}, False, True, True),
])
def test_track_params_extra_reaches_the_sam2_tracker(extra, compiled, recover, encoder):
    from napari_sbl.segment.backends import TrackParams, make_tracker

    tracker = make_tracker(TrackParams(backend="sam2", weights="random", extra=extra))
    assert tracker.params.compile is compiled
    assert tracker.params.drift.recover is recover
    assert tracker.params.compile_image_encoder is encoder


@pytest.mark.parametrize(("flags", "extra"), [
    ([], {}),
    (["--compile-encoder"], {"compile_image_encoder": True}),
    (["--no-drift-recovery", "--compile-encoder"], {"drift": {"recover": False}, "compile_image_encoder": True}),
])
def test_segment_command_sam2_switches(flags, extra):
    import argparse

    from napari_sbl.cli.segment_cmd import add_arguments, sam2_options

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert sam2_options(parser.parse_args(["video.mp4", *flags])) == extra
