"""Decode benchmark: our reader vs OpenCV's seek-and-read, side by side in one run.

Reports random-access latency, +/-1 frame step latency, latency while a simulated user scrubs (see
``scrub_targets``) and sequential fps on the real videos and on a 1080p H.264 file made here (keyframe every
250 frames), plus raw PyAV decode speed as the ceiling.

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
OPENCV_READ_ON_FRAMES = 30
SCRUB_NOTE = """
Scrubbing: a simulated user drags the time slider around three moments of each video, visiting them in the
order A, B, A, C, B, C, 20 requests a visit: a jump to the moment, then a drag of 1-10 frames per UI tick that
keeps its direction with probability 0.75 and turns at +/- 4 s of video around the moment. Each reader (ours with
its defaults, OpenCV `set(CAP_PROP_POS_FRAMES)` + `read()`, and OpenCV reading on with `grab()` when the target is
at most 30 frames ahead) replays the same requests from a freshly opened file with the same idle gap before each
request; only the request is timed. The gap is where our reader decodes the rest of the visited GOPs in the
background. The first jump to each moment is a cold decode for every reader, and so are drags into a GOP not yet
visited: these make the tail (p95)."""


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
    with VideoReader(path) as reader:
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
    jumps, steps = [], []
    with VideoReader(path) as reader:
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


def scrub_targets(n_frames: int, fps: float, seed: int = 0, requests_per_visit: int = 20) -> list[int]:
    """Frames a user asks for while dragging the time slider around three moments of the video.

    The visits go A, B, A, C, B, C (coming back to a moment seen before). Each starts with a jump to the
    moment, then drags: every UI tick (40 ms by default) moves 1-10 frames, keeps its direction with
    probability 0.75 and turns at the edges of a window of +/- 4 s of video around the moment, so requests
    go back and forth within and across neighbouring GOPs. The same list is replayed for every reader.
    """
    rng = np.random.default_rng(seed)
    half_window = max(1, round(4 * fps))
    low, high = half_window, max(half_window + 1, n_frames - half_window)
    centres = rng.integers(low, high, 3)
    targets: list[int] = []
    for centre in (centres[i] for i in (0, 1, 0, 2, 1, 2)):
        position, direction = int(centre), int(rng.choice((-1, 1)))
        for _ in range(requests_per_visit):
            targets.append(min(max(position, 0), n_frames - 1))
            if rng.random() < 0.25 or abs(position + direction * 10 - centre) > half_window:
                direction = -direction
            position += direction * int(rng.integers(1, 11))
    return targets


def scrub_ms(read_frame, targets: list[int], gap_s: float) -> np.ndarray:
    """Latency (ms) of each request, with ``gap_s`` of idle time (a UI's tick; not counted) between them."""
    latencies = []
    for target in targets:
        time.sleep(gap_s)
        start = time.perf_counter()
        read_frame(target)
        latencies.append(time.perf_counter() - start)
    return 1e3 * np.asarray(latencies)


def ours_scrub_ms(path: Path, targets: list[int], gap_s: float) -> np.ndarray:
    with VideoReader(path) as reader:
        return scrub_ms(reader.frame, targets, gap_s)


def opencv_scrub_ms(path: Path, targets: list[int], gap_s: float, read_on: int = 0) -> np.ndarray:
    """OpenCV's seek-and-read per request; with ``read_on`` > 0, a target at most that many frames ahead of
    the last one read is reached by reading on instead (what a hand-written OpenCV viewer could do)."""
    capture = cv2.VideoCapture(str(path))
    next_frame = -1

    def read_frame(target: int) -> None:
        nonlocal next_frame
        if read_on and 0 <= target - next_frame <= read_on:
            for _ in range(target - next_frame):
                capture.grab()
        else:
            capture.set(cv2.CAP_PROP_POS_FRAMES, target)
        capture.read()
        next_frame = target + 1

    return scrub_ms(read_frame, targets, gap_s)


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


def measure(path: Path, n_random: int, gap_s: float) -> dict:
    reader = VideoReader(path, gop_cache_bytes=0)
    targets = random_targets(reader.n_frames, n_random)
    ours_jump, ours_step = ours_random_ms(path, targets)
    cv_jump, cv_step = opencv_random_ms(path, targets)
    scrub = scrub_targets(reader.n_frames, reader.info.fps)
    ours_scrub, cv_scrub = ours_scrub_ms(path, scrub, gap_s), opencv_scrub_ms(path, scrub, gap_s)
    cv_read_on_scrub = opencv_scrub_ms(path, scrub, gap_s, read_on=OPENCV_READ_ON_FRAMES)
    return {
        "video": f"{path.name} ({reader.width}x{reader.height}, {reader.n_frames} frames, "
                 f"{len(reader.index.keyframes)} keyframes)",
        "ours_random_ms": ours_jump, "opencv_random_ms": cv_jump,
        "ours_step_ms": ours_step, "opencv_step_ms": cv_step,
        "ours_scrub_ms": ours_scrub, "opencv_scrub_ms": cv_scrub, "opencv_read_on_scrub_ms": cv_read_on_scrub,
        "ours_seq_fps": ours_sequential_fps(path), "opencv_seq_fps": opencv_sequential_fps(path),
        "pyav_decode_fps": raw_pyav_fps(path, rgb=False), "pyav_rgb_fps": raw_pyav_fps(path, rgb=True),
        "opencv_exact": opencv_exactness(path, targets[:20]),
    }


def to_markdown(rows: list[dict], gap_s: float) -> str:
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
    lines += [
        f"\nScrubbing ({len(rows[0]['ours_scrub_ms'])} requests per video, {1e3 * gap_s:.0f} ms idle between "
        "requests, not counted):\n",
        "| video | mean ms ours / OpenCV (ratio) | p95 ms ours / OpenCV (ratio) "
        f"| mean ms OpenCV reading on ≤ {OPENCV_READ_ON_FRAMES} frames (ours ratio) "
        "| requests under 5 ms ours / OpenCV |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        ours, cv, cv_read_on = r["ours_scrub_ms"], r["opencv_scrub_ms"], r["opencv_read_on_scrub_ms"]
        ours_p95, cv_p95 = np.percentile(ours, 95), np.percentile(cv, 95)
        lines.append(
            f"| {r['video'].split(' ')[0]} | {ours.mean():.1f} / {cv.mean():.1f} ({ours.mean() / cv.mean():.2f}x) "
            f"| {ours_p95:.1f} / {cv_p95:.1f} ({ours_p95 / cv_p95:.2f}x) "
            f"| {cv_read_on.mean():.1f} ({ours.mean() / cv_read_on.mean():.2f}x) "
            f"| {100 * np.mean(ours < 5):.0f}% / {100 * np.mean(cv < 5):.0f}% |"
        )
    lines.append(SCRUB_NOTE)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/decode.md")
    parser.add_argument("--random", type=int, default=40, help="random seeks per video")
    parser.add_argument("--hd-frames", type=int, default=750, help="frames of the generated 1080p file")
    parser.add_argument("--gap-ms", type=float, default=40.0, help="idle time between scrubbing requests")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        videos = [p for p in REAL if p.is_file()] + [make_1080p(Path(tmp) / "synthetic_1080p.mp4", args.hd_frames)]
        rows = [measure(path, args.random, args.gap_ms / 1e3) for path in videos]
    text = to_markdown(rows, args.gap_ms / 1e3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
