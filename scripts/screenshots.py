"""Screenshots for the user guide, taken from a real demo session under Xvfb.

    .venv/bin/napari-sbl demo --out /tmp/demo
    xvfb-run -a .venv/bin/python scripts/screenshots.py /tmp/demo/flies_pair_sleap.sbl.zarr
"""

from __future__ import annotations

import sys
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def settle(rounds: int = 30) -> None:
    for _ in range(rounds):
        QApplication.processEvents()


def shot(viewer: napari.Viewer, name: str) -> None:
    settle()
    viewer.screenshot(str(OUT / name), canvas_only=False)
    print("wrote", OUT / name)


def main(store: str) -> None:
    from napari_sbl.widgets.discover import DiscoverWidget
    from napari_sbl.widgets.labels import LabelsWidget
    from napari_sbl.widgets.session import SessionWidget
    from napari_sbl.widgets.track import TrackWidget

    OUT.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer()
    viewer.window.resize(1500, 950)
    viewer.open(store, plugin="napari-sbl")
    viewer.dims.set_current_step(0, 640)
    session = viewer.window.add_dock_widget(SessionWidget(viewer), name="Session", area="right")
    track = viewer.window.add_dock_widget(TrackWidget(viewer), name="Track animals", area="right")
    shot(viewer, "session.png")
    viewer.window.remove_dock_widget(session)
    viewer.window.remove_dock_widget(track)
    labels = LabelsWidget(viewer)
    labels_dock = viewer.window.add_dock_widget(labels, name="Label behaviour", area="right")
    shot(viewer, "labelling.png")
    viewer.window.remove_dock_widget(labels_dock)
    for widget in list(viewer.window._dock_widgets.values()):
        viewer.window.remove_dock_widget(widget)
    discover = DiscoverWidget(viewer)
    viewer.window.add_dock_widget(discover, name="Discover", area="right")
    settle()
    discover.open_clustering()
    wait_for(lambda: not discover.job.busy)
    discover.show_clip(10)
    shot(viewer, "discover.png")
    viewer.close()


def wait_for(condition, seconds: float = 60.0) -> None:
    import time

    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:
        settle(5)
        time.sleep(0.05)


if __name__ == "__main__":
    main(sys.argv[1])
