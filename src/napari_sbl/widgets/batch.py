"""Batch dock: the videos of an experiment, each step's state, and one button to run what is missing."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_sbl.io.video import VIDEO_SUFFIXES
from napari_sbl.pipeline.batch_steps import STEPS, BatchParams
from napari_sbl.widgets._jobs import JobPanel

if TYPE_CHECKING:
    import napari


class BatchWidget(QWidget):
    """Lists videos with per-step state (read from their stores) and runs the batch on dask."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.videos: list[Path] = []
        self.step_checks = {step: QCheckBox(step) for step in STEPS}
        for step in ("segment", "embed"):
            self.step_checks[step].setChecked(True)
        self.animals_spin = QSpinBox()
        self.animals_spin.setRange(1, 50)
        self.workers_spin = QSpinBox()
        self.workers_spin.setRange(1, 64)
        self.workers_spin.setValue(2)
        self.gpus_spin = QSpinBox()
        self.gpus_spin.setRange(0, 8)
        self.scheduler_edit = QLineEdit("local")
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("model directory (for the infer step)")
        self.table = QTableWidget(0, 1 + len(STEPS))
        self.table.setHorizontalHeaderLabels(["video", *STEPS])
        self.job = JobPanel()
        self._build_layout()

    def _build_layout(self) -> None:
        add_files, add_folder, refresh, run = (QPushButton(t) for t in
                                               ("Add videos…", "Add folder…", "Refresh", "Run batch"))
        add_files.clicked.connect(self._add_files_dialog)
        add_folder.clicked.connect(self._add_folder_dialog)
        refresh.clicked.connect(self.refresh)
        run.clicked.connect(self.run)
        steps = QHBoxLayout()
        for check in self.step_checks.values():
            steps.addWidget(check)
        form = QFormLayout()
        form.addRow("Steps", steps)
        form.addRow("Animals (no prompts)", self.animals_spin)
        form.addRow("Workers", self.workers_spin)
        form.addRow("GPUs per worker", self.gpus_spin)
        form.addRow("Scheduler", self.scheduler_edit)
        form.addRow("Model", self.model_edit)
        buttons = QHBoxLayout()
        for button in (add_files, add_folder, refresh, run):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.job)

    def params(self) -> BatchParams:
        steps = tuple(step for step, check in self.step_checks.items() if check.isChecked())
        return BatchParams(steps=steps, n_animals=self.animals_spin.value(), workers=self.workers_spin.value(),
                           gpus_per_worker=self.gpus_spin.value(), scheduler=self.scheduler_edit.text() or "local",
                           model_dir=self.model_edit.text() or None)

    def add_videos(self, paths) -> None:
        for path in map(Path, paths):
            if path.is_dir():
                self.add_videos(sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES))
            elif path not in self.videos:
                self.videos.append(path)
        self.refresh()

    def refresh(self) -> None:
        from napari_sbl.pipeline.batch import status_table

        rows = status_table(self.videos, BatchParams(steps=STEPS)) if self.videos else []
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            self.table.setItem(r, 0, QTableWidgetItem(Path(row["video"]).name))
            for c, step in enumerate(STEPS, start=1):
                self.table.setItem(r, c, QTableWidgetItem(row[step]))
        self.table.resizeColumnsToContents()

    def run(self) -> None:
        from napari_sbl.pipeline.batch import run_batch

        if not self.videos:
            self.job.status.setText("add videos first")
            return
        params, videos = self.params(), list(self.videos)

        def job(reporter):
            return run_batch(videos, params, reporter)

        self.job.start(job, on_done=self._finished)

    def _finished(self, results) -> None:
        self.refresh()
        failed = [r for r in results if r.state == "failed"]
        lines = [f"{Path(r.video).name} {r.step}: {r.error}" for r in failed]
        self.job.status.setText("all steps done" if not failed else "failed:\n" + "\n".join(lines))

    def _add_files_dialog(self) -> None:
        patterns = " ".join(f"*{s}" for s in VIDEO_SUFFIXES)
        paths, _ = QFileDialog.getOpenFileNames(self, "Add videos", "", f"Videos ({patterns})")
        self.add_videos(paths)

    def _add_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of videos")
        if folder:
            self.add_videos([folder])
