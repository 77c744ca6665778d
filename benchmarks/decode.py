"""Decode benchmark: our reader vs OpenCV's seek-and-read, side by side in one run.

Reports random-access latency, +/-1 frame step latency and sequential fps on the real videos and on a
1080p H.264 file made here (keyframe every 250 frames), plus raw PyAV decode speed as the ceiling.

    python benchmarks/decode.py --out benchmarks/results/decode.md
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

from napari_sbl.io.video import VideoReader
from napari_sbl.io.writer import VideoWriteParams, write_video

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared/data/videos"
REAL = [SHARED / "mouse_openfield_dlc.mp4", SHARED / "flies_pair_sleap.mp4"]


def make_1080p(path: Path, n_frames: int) -> Path:
    """A 1080p clip with texture and motion, keyframe every 250 frames, B-frames on (x264 defaults)."""
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 255, (270, 480, 3), dtype=np.uint8), (1920, 1080))

    def frames():
        for i in range(n_frames):
            frame = np.roll(base, shift=(i * 3, i * 5), axis=(0, 1))
            cv2.circle(frame, (200 + (i * 7) % 1500, 540), 80, (255, 255, 255), -1)
            yield frame

    return write_video(path, frames(), VideoWriteParams(fps=30, gop=250, crf=23))


def raw_pyav_fps(path: Path, rgb: bool) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start, count = time.perf_counter(), 0
        for frame in container.decode(stream):
            if rgb:
                frame.to_ndarray(format="rgb24")
            count += 1
    return count / (time.perf_counter() - start)


def ours_sequential_fps(path: Path) -> float:
    reader = VideoReader(path)
    start = time.perf_counter()
    for frame_index in range(reader.n_frames):
        reader.frame(frame_index)
    return reader.n_frames / (time.perf_counter() - start)


def opencv_sequential_fps(path: Path) -> float:
    capture = cv2.VideoCapture(str(path))
    start, count = time.perf_counter(), 0
    while True:
        ok, _ = capture.read()
        if not ok:
            break
        count += 1
    return count / (time.perf_counter() - start)


def random_targets(n_frames: int, count: int, seed: int = 0) -> list[int]:
    return [int(i) for i in np.random.default_rng(seed).integers(0, n_frames, count)]


def ours_random_ms(path: Path, targets: list[int]) -> tuple[float, float]:
    """Median random-access latency, and median latency of the -1/+1 steps right after each jump."""
    reader = VideoReader(path)
    jumps, steps = [], []
    for target in targets:
        start = time.perf_counter()
        reader.frame(target)
        jumps.append(time.perf_counter() - start)
        for step in (-1, 1, 1):
            neighbour = min(max(target + step, 0), reader.n_frames - 1)
            start = time.perf_counter()
            reader.frame(neighbour)
            steps.append(time.perf_counter() - start)
    return 1e3 * float(np.median(jumps)), 1e3 * float(np.median(steps))


def opencv_random_ms(path: Path, targets: list[int]) -> tuple[float, float]:
    capture = cv2.VideoCapture(str(path))
    jumps, steps = [], []
    for target in targets:
        start = time.perf_counter()
        capture.set(cv2.CAP_PROP_POS_FRAMES, target)
        capture.read()
        jumps.append(time.perf_counter() - start)
        start = time.perf_counter()
        capture.set(cv2.CAP_PROP_POS_FRAMES, max(target - 1, 0))
        capture.read()
        steps.append(time.perf_counter() - start)
    return 1e3 * float(np.median(jumps)), 1e3 * float(np.median(steps))


def opencv_exactness(path: Path, targets: list[int]) -> float:
    """Share of OpenCV seeks that return exactly the frame sequential decoding gives."""
    reader = VideoReader(path)
    capture = cv2.VideoCapture(str(path))
    exact = 0
    for target in targets:
        capture.set(cv2.CAP_PROP_POS_FRAMES, target)
        ok, bgr = capture.read()
        exact += bool(ok) and np.abs(bgr[..., ::-1].astype(int) - reader.frame(target)).mean() < 1.0
    return exact / len(targets)


def measure(path: Path, n_random: int) -> dict:
    reader = VideoReader(path)
    targets = random_targets(reader.n_frames, n_random)
    ours_jump, ours_step = ours_random_ms(path, targets)
    cv_jump, cv_step = opencv_random_ms(path, targets)
    return {
        "video": f"{path.name} ({reader.width}x{reader.height}, {reader.n_frames} frames, "
                 f"{len(reader.index.keyframes)} keyframes)",
        "ours_random_ms": ours_jump, "opencv_random_ms": cv_jump,
        "ours_step_ms": ours_step, "opencv_step_ms": cv_step,
        "ours_seq_fps": ours_sequential_fps(path), "opencv_seq_fps": opencv_sequential_fps(path),
        "pyav_decode_fps": raw_pyav_fps(path, rgb=False), "pyav_rgb_fps": raw_pyav_fps(path, rgb=True),
        "opencv_exact": opencv_exactness(path, targets[:20]),
    }


def to_markdown(rows: list[dict]) -> str:
    lines = [
        f"# Decode benchmark\n\nMachine: {platform.processor() or platform.machine()}, "
        f"{__import__('os').cpu_count()} cores, PyAV {av.__version__}, OpenCV {cv2.__version__}.\n",
        "| video | random ms ours / OpenCV (ratio) | ±1 step ms ours / OpenCV | sequential fps ours / OpenCV "
        "| raw PyAV fps decode / +RGB | ours vs raw+RGB | OpenCV seeks exact |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['video']} | {r['ours_random_ms']:.1f} / {r['opencv_random_ms']:.1f} "
            f"({r['ours_random_ms'] / r['opencv_random_ms']:.2f}x) "
            f"| {r['ours_step_ms']:.2f} / {r['opencv_step_ms']:.1f} "
            f"| {r['ours_seq_fps']:.0f} / {r['opencv_seq_fps']:.0f} | {r['pyav_decode_fps']:.0f} / "
            f"{r['pyav_rgb_fps']:.0f} | {100 * r['ours_seq_fps'] / r['pyav_rgb_fps']:.0f}% | "
            f"{100 * r['opencv_exact']:.0f}% |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/decode.md")
    parser.add_argument("--random", type=int, default=40, help="random seeks per video")
    parser.add_argument("--hd-frames", type=int, default=750, help="frames of the generated 1080p file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        videos = [p for p in REAL if p.is_file()] + [make_1080p(Path(tmp) / "synthetic_1080p.mp4", args.hd_frames)]
        rows = [measure(path, args.random) for path in videos]
    text = to_markdown(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
