"""The analysis step over one or many session stores, shared by ``napari-sbl analyze`` and the Analyze dock.

:func:`analyse` computes every table in memory (the dock plots from it); :func:`write_analysis` writes the
tables, figures and optional overlay videos into a folder; :func:`analyze_stores` does both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from napari_sbl.analysis import figures, tables
from napari_sbl.analysis.regions import Region, load_regions, read_regions_file
from napari_sbl.analysis.sequences import LabelSequences, load_sequences, unify_classes
from napari_sbl.analysis.stats import compare_groups
from napari_sbl.analysis.transitions import TransitionMatrix, analyse_transitions
from napari_sbl.errors import SblError
from napari_sbl.progress import Reporter, silent
from napari_sbl.project import read_session_metadata
from napari_sbl.store import layout
from napari_sbl.store.session import SessionStore

log = logging.getLogger(__name__)


@dataclass
class AnalyzeParams:
    """What to analyse and what to write. Frames are ``[start, stop)`` of every video."""

    source: str = "auto"  # "auto" (predictions if any, else annotations), "annotations" or "predictions"
    model: str | None = None
    start: int = 0
    stop: int | None = None
    bin_minutes: float | None = None
    regions_file: Path | None = None  # the same regions for every store; else each store's saved regions
    region_mode: str = "start"  # tag a bout with the region at its start, or where most of its frames were
    groups_file: Path | None = None
    group_columns: list[str] | None = None  # None: every column of the groups table
    correction: str = "holm"  # or "bh"
    formats: tuple[str, ...] = figures.FIGURE_FORMATS
    overlay: bool = False


@dataclass
class Analysis:
    """Every table of one analysis, in memory."""

    sequences: list[LabelSequences]
    regions: dict[str, list[Region]]  # by video
    bouts: pd.DataFrame
    budget: pd.DataFrame
    subjects: pd.DataFrame  # budget rows with the metadata columns of their video
    transitions: pd.DataFrame  # scope "all" plus one scope per group
    pooled: TransitionMatrix
    animal_transitions: pd.DataFrame
    binned: pd.DataFrame | None = None
    region_budget: pd.DataFrame | None = None
    comparisons: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return self.sequences[0].class_names

    @property
    def colors(self) -> dict[str, str]:
        return {c.name: c.color for c in self.sequences[0].classes}


@dataclass
class AnalysisReport:
    analysis: Analysis
    out_dir: Path
    files: list[Path]
    lines: list[str]


def analyse(store_paths: list[str | Path], params: AnalyzeParams | None = None,
            reporter: Reporter | None = None) -> Analysis:
    """Load every store's labels and compute bouts, budgets, transitions, bins, regions and group tests."""
    reporter, params = reporter or silent(), params or AnalyzeParams()
    if not store_paths:
        raise SblError("no session stores given; pass one or more *.sbl.zarr folders")
    store_paths = list(dict.fromkeys(Path(p).resolve() for p in store_paths))
    reporter.start(len(store_paths), "loading labels")
    sequences, video_paths, regions_by_store = [], {}, {}
    shared_regions = read_regions_file(params.regions_file) if params.regions_file else None
    for path in store_paths:
        reporter.check()
        store = SessionStore.open(path, mode="r")
        sequences.append(load_sequences(store, params.source, params.model).window(params.start, params.stop))
        regions_by_store[store.path] = shared_regions if shared_regions is not None else load_regions(store)
        video_paths[store.path] = store.video_path()
        reporter.advance()
    sequences = _unique_video_names(unify_classes(sequences))
    regions = {seq.video: regions_by_store[seq.store_path] for seq in sequences}
    sessions = {seq.video: (seq.store_path, video_paths[seq.store_path]) for seq in sequences}
    return _compute(sequences, regions, sessions, params)


def _compute(sequences: list[LabelSequences], regions: dict[str, list[Region]],
             sessions: dict[str, tuple[Path, Path]], params: AnalyzeParams) -> Analysis:
    budget = pd.concat([tables.time_budget_table(s) for s in sequences], ignore_index=True)
    subjects, group_columns = _subjects(budget, sessions, params)
    counts = {(s.video, int(a)): tables.animal_transition_counts(s, c)
              for s in sequences for c, a in enumerate(s.animal_ids)}
    names = sequences[0].class_names
    pooled = sum(counts.values())
    transition_parts = [tables.transitions_table(pooled, names)]
    for column in group_columns:
        for group, rows in subjects.dropna(subset=[column]).groupby(column):
            members = {(v, int(a)) for v, a in zip(rows["video"], rows["animal_id"], strict=True)}
            transition_parts.append(tables.transitions_table(sum(counts[m] for m in members), names,
                                                             scope=f"{column}={group}"))
    analysis = Analysis(
        sequences=sequences, regions=regions,
        bouts=pd.concat([tables.bouts_table(s, regions[s.video], params.region_mode) for s in sequences],
                        ignore_index=True),
        budget=budget, subjects=subjects, transitions=pd.concat(transition_parts, ignore_index=True),
        pooled=analyse_transitions(pooled),
        animal_transitions=pd.concat([tables.animal_transitions_table(s) for s in sequences], ignore_index=True),
    )
    if params.bin_minutes:
        analysis.binned = pd.concat([tables.binned_table(s, params.bin_minutes * 60) for s in sequences],
                                    ignore_index=True)
    if any(regions.values()):
        analysis.region_budget = pd.concat([tables.region_budget_table(s, regions[s.video], params.region_mode)
                                            for s in sequences], ignore_index=True)
    for column in group_columns:
        analysis.comparisons[column] = compare_groups(subjects, column, list(tables.SUBJECT_METRICS), "class",
                                                      params.correction)
    return analysis


def _subjects(budget: pd.DataFrame, sessions: dict[str, tuple[Path, Path]], params: AnalyzeParams):
    """(budget rows with their session's metadata columns, the columns that split animals into 2+ groups)."""
    if params.groups_file is None:
        return budget.copy(), []
    metadata = read_session_metadata(params.groups_file)
    values = {video: metadata.for_session(store, video_path) for video, (store, video_path) in sessions.items()}
    missing = [video for video, found in values.items() if not found]
    if missing:
        log.warning("%s has no row for %s; left out of group comparisons", params.groups_file, ", ".join(missing))
    wanted = params.group_columns or metadata.columns
    unknown = [c for c in wanted if c not in metadata.columns]
    if unknown:
        raise SblError(f"{params.groups_file} has no column {', '.join(unknown)}; "
                       f"it has {', '.join(metadata.columns)}")
    subjects = budget.copy()
    for column in metadata.columns:
        subjects[column] = subjects["video"].map(lambda video, c=column: values[video].get(c) or None)
    columns = [c for c in wanted if subjects[c].dropna().nunique() >= 2]
    for column in sorted(set(wanted) - set(columns)):
        log.warning("column %r puts every analysed animal in one group; not compared", column)
    return subjects, columns


def write_analysis(analysis: Analysis, out_dir: str | Path, params: AnalyzeParams | None = None,
                   reporter: Reporter | None = None) -> list[Path]:
    """Write the tables (CSV, Parquet), figures and, if asked, overlay videos into ``out_dir``."""
    reporter, params = reporter or silent(), params or AnalyzeParams()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [
        tables.write_csv(analysis.bouts, out_dir / "bouts.csv"),
        tables.write_csv(analysis.budget, out_dir / "time_budget.csv"),
        tables.write_csv(analysis.transitions, out_dir / "transitions.csv"),
        tables.write_csv(analysis.animal_transitions, out_dir / "transitions_by_animal.csv"),
        tables.write_parquet(pd.concat([tables.frames_table(s, analysis.regions[s.video])
                                        for s in analysis.sequences], ignore_index=True), out_dir / "frames.parquet"),
    ]
    if analysis.binned is not None:
        written.append(tables.write_csv(analysis.binned, out_dir / "time_bins.csv"))
    if analysis.region_budget is not None:
        written.append(tables.write_csv(analysis.region_budget, out_dir / "region_budget.csv"))
    for column, (tests, pairs) in analysis.comparisons.items():
        written.append(tables.write_csv(tests, out_dir / f"comparison_{_safe(column)}.csv"))
        if len(pairs):
            written.append(tables.write_csv(pairs, out_dir / f"posthoc_{_safe(column)}.csv"))
    if params.formats:
        written += write_figures(analysis, out_dir / "figures", params.formats)
    if params.overlay:
        written += write_overlays(analysis, out_dir / "overlay", params, reporter)
    return written


def analysis_figures(analysis: Analysis, metric: str = "fraction") -> dict[str, Callable[..., object]]:
    """Every figure of an analysis by name: ``make(figure=None)`` draws it (on ``figure`` when given).

    Group comparisons plot ``metric`` (a column of the time budget, see ``tables.SUBJECT_METRICS``).
    """
    colors, names = analysis.colors, analysis.class_names
    result = {
        "ethogram": lambda figure=None: figures.ethogram_figure(analysis.sequences, figure),
        "time_budget": lambda figure=None: figures.time_budget_figure(analysis.budget, colors, figure),
        "bout_durations": lambda figure=None: figures.bout_duration_figure(analysis.bouts, colors, figure),
        "transition_matrix": lambda figure=None: figures.transition_heatmap(analysis.pooled, names, figure),
        "transition_graph": lambda figure=None: figures.transition_graph(analysis.pooled, names, colors,
                                                                         figure=figure),
    }
    if analysis.binned is not None:
        result["time_bins"] = lambda figure=None: figures.binned_figure(analysis.binned, colors, figure)
    for column, (tests, _) in analysis.comparisons.items():
        result[f"comparison_{_safe(column)}"] = (
            lambda figure=None, column=column, tests=tests: figures.group_comparison_figure(
                analysis.subjects, column, metric, tests, colors, figure))
    return result


def write_figures(analysis: Analysis, folder: Path, formats=figures.FIGURE_FORMATS) -> list[Path]:
    written = []
    for name, make in analysis_figures(analysis).items():
        written += figures.save_figure(make(), folder / name, formats)
    return written


def write_overlays(analysis: Analysis, folder: Path, params: AnalyzeParams, reporter: Reporter) -> list[Path]:
    """One overlay video per store, over the analysed frame range."""
    from napari_sbl.analysis.overlay import OverlayParams, export_overlay
    from napari_sbl.pipeline.session import open_store_session

    written = []
    for seq in analysis.sequences:
        video, store = open_store_session(seq.store_path)
        overlay = OverlayParams(start=seq.first_frame, stop=seq.first_frame + seq.n_frames)
        written.append(export_overlay(video, store, seq, folder / f"{seq.video}_overlay.mp4", overlay, reporter))
    return written


def analyze_stores(store_paths: list[str | Path], out_dir: str | Path, params: AnalyzeParams | None = None,
                   reporter: Reporter | None = None) -> AnalysisReport:
    """Analyse ``store_paths`` and write everything into ``out_dir``; returns the files and a summary."""
    params = params or AnalyzeParams()
    analysis = analyse(store_paths, params, reporter)
    files = write_analysis(analysis, out_dir, params, reporter)
    lines = [*summary_lines(analysis), f"wrote {len(files)} files to {out_dir}"]
    return AnalysisReport(analysis, Path(out_dir), files, lines)


def summary_lines(analysis: Analysis) -> list[str]:
    """A few lines a person reads: per video what was analysed, transitions, group tests."""
    lines = []
    for seq in analysis.sequences:
        budget = analysis.budget[analysis.budget["video"] == seq.video]
        share = budget.groupby("class", sort=False)["seconds"].sum()
        top = ", ".join(f"{name} {100 * s / share.sum():.0f}%" for name, s in share.nlargest(3).items()
                        if share.sum() > 0)
        n_bouts = int((analysis.bouts["video"] == seq.video).sum())
        seconds = float(seq.frame_times[-1] - seq.frame_times[0])
        lines.append(f"{seq.video}: {seq.source}, {len(seq.animal_ids)} animals, {seq.n_frames} frames "
                     f"({seconds:.1f} s), {n_bouts} bouts; {top or 'nothing labelled in this range'}")
    above = int(np.nansum(analysis.pooled.z > figures.SIGNIFICANT_Z))
    lines.append(f"transitions: {analysis.pooled.n_transitions} between bouts, {above} kinds above chance")
    for column, (tests, _) in analysis.comparisons.items():
        significant = int((tests["p_adjusted"] < 0.05).sum())
        lines.append(f"groups by {column}: {len(tests)} tests, {significant} with adjusted p < 0.05")
    return lines


def demo_step_analyze(ctx) -> str:
    """Demo step: analyse the demo store's predictions (or annotations) into ``<stem>-analysis/`` beside it."""
    from napari_sbl.analysis.sequences import available_sources

    store: SessionStore = ctx.store
    found = available_sources(store)
    if not (found["annotations"] or found["predictions"]):
        return f"analysis skipped: nothing is labelled in {store.path.name} (no annotations or predictions)"
    out_dir = store.path.parent / f"{store.path.name.removesuffix(layout.STORE_SUFFIX)}-analysis"
    source = "predictions" if found["predictions"] else "annotations"
    model = found["predictions"][-1] if found["predictions"] else None
    stop = ctx.params.max_frames
    params = AnalyzeParams(source=source, model=model, stop=stop, bin_minutes=1.0)
    try:
        report = analyze_stores([store.path], out_dir, params, ctx.reporter)
    except SblError as err:
        return f"analysis skipped: {err}"
    return f"analysed {source} into {out_dir} ({len(report.files)} files: bouts, time budget, transitions, figures)"


def _unique_video_names(sequences: list[LabelSequences]) -> list[LabelSequences]:
    """Videos of the same name from different folders get their store's parent folder as prefix."""
    from dataclasses import replace

    names = [s.video for s in sequences]
    return [replace(s, video=f"{s.store_path.parent.name}/{s.video}") if names.count(s.video) > 1 else s
            for s in sequences]


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(name))
