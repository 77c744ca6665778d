"""Video input/output: frame-accurate lazy reading and writing with PyAV."""

from napari_sbl.io.video import VideoInfo, VideoReader, open_video

__all__ = ["VideoInfo", "VideoReader", "open_video"]
