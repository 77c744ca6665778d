"""Review dock: the clips the model most needs a person for, played one by one, answered by key.

Keys while the dock has focus: A accept, N "not this" (hard negative), S skip, 1–9 relabel with the
class of that key, Space play/pause. Answers go straight into the store's annotations; Retrain
trains the model again on them and predicts anew.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_sbl.errors import SblError
from napari_sbl.widgets._jobs import JobPanel
from napari_sbl.widgets._layers import fill_layer_box, find_session_layers, sbl_info

if TYPE_CHECKING:
    import napari


class ReviewWidget(QWidget):
    """Propose a review round, play each candidate, and write the answers as annotations."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.candidates: list = []
        self.attrs: dict = {}
        self._build()
        self.viewer.layers.events.inserted.connect(self.refresh_layers)
        self.viewer.layers.events.removed.connect(self.refresh_layers)
        self.refresh_layers()

    def _build(self) -> None:
        self.video_box = QComboBox()
        self.model_box = QComboBox()
        self.count_spin = QSpinBox()
        self.count_spin.setRange(1, 500)
        self.count_spin.setValue(20)
        self.propose_button = QPushButton("Propose candidates")
        self.list = QListWidget()
        self.play_button = QPushButton("Play")
        self.accept_button = QPushButton("Accept (A)")
        self.negative_button = QPushButton("Not this (N)")
        self.skip_button = QPushButton("Skip (S)")
        self.class_box = QComboBox()
        self.relabel_button = QPushButton("Relabel")
        self.retrain_button = QPushButton("Retrain")
        self.job = JobPanel()
        self.message = QLabel("")
        self.message.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Video", self.video_box)
        form.addRow("Predictions", self.model_box)
        form.addRow("Candidates", self.count_spin)
        answers = QHBoxLayout()
        for button in (self.accept_button, self.negative_button, self.skip_button):
            answers.addWidget(button)
        relabel = QHBoxLayout()
        relabel.addWidget(self.class_box, 1)
        relabel.addWidget(self.relabel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.propose_button)
        layout.addWidget(self.list, 1)
        layout.addWidget(self.play_button)
        layout.addLayout(answers)
        layout.addLayout(relabel)
        layout.addWidget(self.retrain_button)
        layout.addWidget(self.job)
        layout.addWidget(self.message)
        self._timer = QTimer(self)
        self._timer.setInterval(60)
        self._timer.timeout.connect(self._next_frame)
        self.video_box.currentTextChanged.connect(self.refresh_models)
        self.model_box.currentTextChanged.connect(self.load_candidates)
        self.propose_button.clicked.connect(self.propose)
        self.list.currentRowChanged.connect(self.show_candidate)
        self.play_button.clicked.connect(self.toggle_play)
        self.accept_button.clicked.connect(lambda: self.answer("accept"))
        self.negative_button.clicked.connect(lambda: self.answer("negative"))
        self.skip_button.clicked.connect(lambda: self.answer("skip"))
        self.relabel_button.clicked.connect(lambda: self.answer("relabel", self.class_box.currentText()))
        self.retrain_button.clicked.connect(self.retrain)

    # -- session ------------------------------------------------------------------------------------
    def refresh_layers(self, *_) -> None:
        names = [layer.name for layer in find_session_layers(self.viewer, "video") if sbl_info(layer).get("store")]
        fill_layer_box(self.video_box, names)
        self.refresh_models()

    def store(self):
        from napari_sbl.store.session import SessionStore

        name = self.video_box.currentText()
        if name not in self.viewer.layers:
            raise LookupError("open a video with a session store first")
        return SessionStore.open(sbl_info(self.viewer.layers[name])["store"])

    def refresh_models(self, *_) -> None:
        from napari_sbl.store import layout

        try:
            names = self.store().children(layout.PREDICTIONS)
        except LookupError:
            names = []
        self.model_box.blockSignals(True)
        self.model_box.clear()
        self.model_box.addItems(names)
        self.model_box.blockSignals(False)
        self.load_candidates()

    # -- candidates ---------------------------------------------------------------------------------
    def propose(self) -> None:
        from napari_sbl.behavior.infer import read_predictions
        from napari_sbl.behavior.review import ReviewParams, propose_candidates, write_candidates

        try:
            store, model = self.store(), self.model_box.currentText()
            _, attrs = read_predictions(store, model)
        except (LookupError, SblError) as err:
            self.message.setText(f"{err} (predict behaviour in the Infer dock first)")
            return
        picks = propose_candidates([store], model, ReviewParams(n_candidates=self.count_spin.value()))
        number = write_candidates(store, picks, attrs.get("classes", []), model)
        self.load_candidates()
        self.message.setText(f"review round {number}: {len(picks)} candidates")

    def load_candidates(self, *_) -> None:
        from napari_sbl.behavior.review import read_candidates

        try:
            self.candidates, self.attrs = read_candidates(self.store())
        except LookupError:
            self.candidates, self.attrs = [], {}
        names = self.class_names()
        self.class_box.clear()
        self.class_box.addItems(names)
        self.list.blockSignals(True)
        self.list.clear()
        for c in self.candidates:
            proposed = names[c.class_index] if 0 <= c.class_index < len(names) else "?"
            self.list.addItem(f"animal {c.animal_id}  frames {c.start_frame}–{c.stop_frame}  {proposed}?  "
                              f"({c.reason} {c.score:.2f})  [{c.decision}]")
        self.list.blockSignals(False)

    def class_names(self) -> list[str]:
        return [c["name"] if isinstance(c, dict) else str(c) for c in self.attrs.get("classes", [])]

    def show_candidate(self, row: int) -> None:
        """Jump the viewer to the candidate's first frame."""
        if 0 <= row < len(self.candidates):
            self.viewer.dims.set_current_step(0, self.candidates[row].start_frame)

    def toggle_play(self) -> None:
        if self._timer.isActive():
            self._timer.stop()
            self.play_button.setText("Play")
        elif 0 <= self.list.currentRow() < len(self.candidates):
            self._timer.start()
            self.play_button.setText("Pause")

    def _next_frame(self) -> None:
        """Loop the current candidate's frames while playing."""
        row = self.list.currentRow()
        if not 0 <= row < len(self.candidates):
            self._timer.stop()
            return
        candidate = self.candidates[row]
        frame = int(self.viewer.dims.current_step[0]) + 1
        if not candidate.start_frame <= frame < candidate.stop_frame:
            frame = candidate.start_frame
        self.viewer.dims.set_current_step(0, frame)

    def answer(self, decision: str, class_name: str | None = None) -> None:
        """Write the answer for the selected candidate and move on to the next pending one."""
        from napari_sbl.behavior.review import decide

        row = self.list.currentRow()
        if not 0 <= row < len(self.candidates):
            self.message.setText("select a candidate first")
            return
        try:
            decide(self.store(), row, decision, class_name)
        except SblError as err:
            self.message.setText(str(err))
            return
        self.load_candidates()
        pending = [i for i, c in enumerate(self.candidates) if c.decision == "pending" and i > row]
        self.list.setCurrentRow(pending[0] if pending else row)
        self.message.setText(f"candidate {row + 1}: {self.candidates[row].decision}")

    def keyPressEvent(self, event) -> None:
        text = event.text().lower()
        keys = {str(c.get("key")): c["name"] for c in self.attrs.get("classes", []) if isinstance(c, dict)}
        if text in ("a", "n", "s"):
            self.answer({"a": "accept", "n": "negative", "s": "skip"}[text])
        elif text in keys:
            self.answer("relabel", keys[text])
        elif event.key() == Qt.Key.Key_Space:
            self.toggle_play()
        else:
            super().keyPressEvent(event)

    # -- retraining -----------------------------------------------------------------------------------
    def retrain(self) -> None:
        """Train the model again (its own profile and stores, plus this one) on the answers, then predict."""
        from pathlib import Path

        from napari_sbl.behavior.infer import infer_store, read_predictions
        from napari_sbl.behavior.model_dir import load_model_info
        from napari_sbl.behavior.profiles import TrainParams
        from napari_sbl.behavior.train import train_behavior_model
        from napari_sbl.store.session import SessionStore

        try:
            store, model = self.store(), self.model_box.currentText()
            model_dir = Path(read_predictions(store, model)[1]["model_dir"])
            info = load_model_info(model_dir)
        except (LookupError, SblError, KeyError) as err:
            self.message.setText(f"cannot retrain: {err}")
            return
        paths = {str(Path(p).resolve()) for p in info.training.get("stores", []) if Path(p).is_dir()}
        paths.add(str(store.path.resolve()))
        stores = [SessionStore.open(p) for p in sorted(paths)]
        params = TrainParams.from_json(info.params)

        def job(reporter):
            result = train_behavior_model(stores, model_dir, params, info.encoder, reporter)
            infer_store(result.model_dir, store, reporter=reporter, name=model)
            return result

        self.job.start(job, on_done=self._retrained)

    def _retrained(self, result) -> None:
        f1 = result.report.get("macro_f1")
        quality = f"validation macro-F1 {f1:.3f}" if f1 is not None else result.report.get("note", "")
        self.message.setText(f"retrained on {result.n_labelled_frames} labelled frames ({quality}); predictions "
                             "updated: propose a new round")
