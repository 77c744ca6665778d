"""Figures of an analysis, drawn on plain matplotlib Figures with the Agg canvas (no pyplot, no GUI).

Each function returns a :class:`matplotlib.figure.Figure`; the CLI saves it, the Analyze dock shows the
same Figure in a Qt canvas. Classes keep the colours of the labelling dock.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from napari_sbl.analysis.bouts import find_runs, frame_edges
from napari_sbl.analysis.sequences import LabelSequences
from napari_sbl.analysis.transitions import TransitionMatrix
from napari_sbl.store.atomic import atomic_write_bytes

FIGURE_FORMATS = ("png", "svg")
SIGNIFICANT_Z = 1.96


def new_figure(width: float = 8.0, height: float = 4.0):
    """A Figure drawn by the Agg canvas (what every function here draws on)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, stem: str | Path, formats=FIGURE_FORMATS, dpi: int = 150) -> list[Path]:
    """Write ``stem.png``/``stem.svg`` atomically; returns the files written."""
    import io

    written = []
    for fmt in formats:
        buffer = io.BytesIO()
        figure.savefig(buffer, format=fmt, dpi=dpi)
        path = Path(f"{stem}.{fmt}")
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
    return written


def ethogram_figure(sequences: list[LabelSequences], figure=None):
    """One row per animal of every video: coloured spans where each behaviour happens, over real time."""
    rows = [(seq, c) for seq in sequences for c in range(len(seq.animal_ids))]
    figure = figure or new_figure(9.0, 1.2 + 0.45 * max(len(rows), 1))
    axes = figure.add_subplot()
    classes = sequences[0].classes if sequences else []
    for row, (seq, column) in enumerate(rows):
        edges = frame_edges(seq.frame_times, seq.fps)
        values, starts, stops = find_runs(seq.labels[:, column])
        for c, cls in enumerate(classes):
            spans = _spans(edges, starts[values == c], stops[values == c])
            if spans:
                axes.broken_barh(spans, (row - 0.4, 0.8), facecolors=cls.color)
        _, starts, stops = find_runs(np.where(seq.present[:, column], -1, 0))
        if len(starts):
            axes.broken_barh(_spans(edges, starts, stops), (row - 0.1, 0.2), facecolors="#bbbbbb")
    axes.set_yticks(range(len(rows)), [f"{seq.video} · animal {seq.animal_ids[c]}" for seq, c in rows])
    axes.set_ylim(len(rows) - 0.5, -0.5)
    axes.set_xlabel("time (s)")
    axes.set_title("Ethogram (grey: animal not tracked)")
    _class_legend(figure, axes, classes)
    return figure


def time_budget_figure(budget: pd.DataFrame, colors: dict[str, str], figure=None):
    """Stacked bars of the fraction of labelled time per class, one bar per animal."""
    table = budget.pivot_table(index=["video", "animal_id"], columns="class", values="fraction", sort=False)
    figure = figure or new_figure(8.0, 1.2 + 0.4 * max(len(table), 1))
    axes = figure.add_subplot()
    left = np.zeros(len(table))
    for name in [c for c in colors if c in table.columns]:
        values = table[name].fillna(0).to_numpy()
        axes.barh(range(len(table)), values, left=left, color=colors[name], label=name)
        left += values
    axes.set_yticks(range(len(table)), [f"{video} · animal {animal}" for video, animal in table.index])
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel("fraction of labelled time")
    axes.set_title("Time budget")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize="small")
    return figure


def bout_duration_figure(bouts: pd.DataFrame, colors: dict[str, str], figure=None):
    """Distribution of bout durations per class: box plot with every bout as a dot (log scale)."""
    figure = figure or new_figure(max(4.0, 1.0 + 0.9 * len(colors)), 4.0)
    axes = figure.add_subplot()
    names = [n for n in colors if (bouts["class"] == n).any()] if len(bouts) else []
    data = [bouts.loc[bouts["class"] == n, "duration_s"].to_numpy() for n in names]
    if data:
        boxes = axes.boxplot(data, positions=range(len(names)), widths=0.6, showfliers=False, patch_artist=True)
        for patch, name in zip(boxes["boxes"], names, strict=True):
            patch.set(facecolor=colors[name], alpha=0.35)
        rng = np.random.default_rng(0)
        for i, (name, values) in enumerate(zip(names, data, strict=True)):
            axes.scatter(i + rng.uniform(-0.2, 0.2, len(values)), values, s=6, color=colors[name], zorder=3)
        axes.set_xticks(range(len(names)), names, rotation=30, ha="right")
        axes.set_yscale("log")
    else:
        axes.text(0.5, 0.5, "no bouts", ha="center", va="center", transform=axes.transAxes)
    axes.set_ylabel("bout duration (s)")
    axes.set_title("Bout durations")
    return figure


def transition_heatmap(matrix: TransitionMatrix, class_names: list[str], figure=None):
    """Transition probabilities (row = from, column = to) with counts; * marks z > 1.96 (above chance)."""
    n = len(class_names)
    figure = figure or new_figure(2.0 + 0.8 * n, 1.5 + 0.7 * n)
    axes = figure.add_subplot()
    image = axes.imshow(np.nan_to_num(matrix.probabilities), vmin=0, vmax=1, cmap="viridis")
    for i in range(n):
        for j in range(n):
            mark = "*" if np.nan_to_num(matrix.z[i, j]) > SIGNIFICANT_Z else ""
            color = "black" if np.nan_to_num(matrix.probabilities[i, j]) > 0.6 else "white"
            axes.text(j, i, f"{matrix.counts[i, j]}{mark}", ha="center", va="center", color=color, fontsize=8)
    axes.set_xticks(range(n), class_names, rotation=30, ha="right")
    axes.set_yticks(range(n), class_names)
    axes.set_xlabel("next behaviour")
    axes.set_ylabel("behaviour")
    axes.set_title(f"Transitions ({matrix.n_transitions}; * above chance)")
    figure.colorbar(image, ax=axes, label="probability")
    return figure


def transition_graph(matrix: TransitionMatrix, class_names: list[str], colors: dict[str, str],
                     min_probability: float = 0.05, figure=None):
    """Behaviours on a circle; arrows as wide as the transition probability, dark when above chance."""
    from matplotlib.patches import FancyArrowPatch

    n = len(class_names)
    figure = figure or new_figure(6.0, 6.0)
    axes = figure.add_subplot()
    angle = np.pi / 2 - 2 * np.pi * np.arange(n) / max(n, 1)
    xy = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    leaving = matrix.counts.sum(axis=1)
    sizes = 300 + 1700 * leaving / max(leaving.max(), 1)
    for i in range(n):
        for j in range(n):
            p = np.nan_to_num(matrix.probabilities[i, j])
            if i == j or p < min_probability:
                continue
            strong = np.nan_to_num(matrix.z[i, j]) > SIGNIFICANT_Z
            axes.add_patch(FancyArrowPatch(xy[i], xy[j], connectionstyle="arc3,rad=0.15", arrowstyle="-|>",
                                           mutation_scale=12, lw=0.5 + 6 * p, shrinkA=18, shrinkB=18,
                                           color="#222222" if strong else "#aaaaaa", zorder=1))
    axes.scatter(xy[:, 0], xy[:, 1], s=sizes, c=[colors.get(name, "#888888") for name in class_names], zorder=2)
    for (x, y), name in zip(xy, class_names, strict=True):
        axes.text(1.28 * x, 1.28 * y, name, ha="center", va="center", fontsize=9)
    axes.set_xlim(-1.4, 1.4)
    axes.set_ylim(-1.4, 1.4)
    axes.set_aspect("equal")
    axes.axis("off")
    axes.set_title("Transition graph (width: probability; dark: above chance)")
    return figure


def binned_figure(binned: pd.DataFrame, colors: dict[str, str], figure=None):
    """Fraction of labelled time per class in each time bin (mean over animals)."""
    figure = figure or new_figure(8.0, 4.0)
    axes = figure.add_subplot()
    mean = binned.groupby(["bin_start_s", "class"], sort=True)["fraction"].mean().unstack("class")
    for name in [c for c in colors if c in mean.columns]:
        axes.plot(mean.index / 60, mean[name], marker="o", color=colors[name], label=name)
    axes.set_xlabel("bin start (min)")
    axes.set_ylabel("fraction of labelled time")
    axes.set_title("Time course")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize="small")
    return figure


def group_comparison_figure(subjects: pd.DataFrame, group_column: str, metric: str, tests: pd.DataFrame | None,
                            colors: dict[str, str], figure=None):
    """One panel per class: ``metric`` per animal by group (box + dots), titled with the adjusted p-value."""
    names = [n for n in colors if (subjects["class"] == n).any()]
    groups = sorted(subjects[group_column].dropna().astype(str).unique())
    columns = min(len(names), 4) or 1
    rows = int(np.ceil(len(names) / columns)) or 1
    figure = figure or new_figure(3.0 * columns, 2.8 * rows)
    for k, name in enumerate(names):
        axes = figure.add_subplot(rows, columns, k + 1)
        part = subjects[subjects["class"] == name]
        data = [part.loc[part[group_column].astype(str) == g, metric].dropna().to_numpy(float) for g in groups]
        axes.boxplot(data, positions=range(len(groups)), widths=0.5, showfliers=False)
        for i, values in enumerate(data):
            axes.scatter(np.full(len(values), i) + np.linspace(-0.12, 0.12, len(values)), values, s=12,
                         color=colors[name], zorder=3)
        axes.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
        axes.set_title(f"{name}{_p_text(tests, metric, name)}", fontsize=9)
        axes.set_ylabel(metric if k % columns == 0 else "")
    figure.suptitle(f"{metric} by {group_column}")
    return figure


def _spans(edges: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> list[tuple[float, float]]:
    """(start, width) in seconds of frame runs, as ``broken_barh`` wants them."""
    return list(zip(edges[starts], edges[stops] - edges[starts], strict=True))


def _p_text(tests: pd.DataFrame | None, metric: str, name: str) -> str:
    if tests is None or not len(tests):
        return ""
    row = tests[(tests["metric"] == metric) & (tests["class"] == name)]
    if not len(row) or not np.isfinite(row["p_adjusted"].iloc[0]):
        return ""
    return f"\np_adj = {row['p_adjusted'].iloc[0]:.3g}"


def _class_legend(figure, axes, classes) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=c.color, label=c.name) for c in classes]
    if handles:
        axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize="small")
