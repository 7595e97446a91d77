"""Test-set reports written to the run folder (and logged to MLflow by train.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sweeplab.data.base import Task


def pyplot() -> Any:
    """matplotlib's pyplot, drawing to files only."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # A name in a script the default font lacks (CJK, emoji) draws as boxes: say nothing about it.
    warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font", category=UserWarning)
    return plt


DPI, PAD_INCHES = 110, 0.1
_CONFUSION_LOCK = threading.Lock()  # a kept plot shows one report's counts at a time


def _save(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` cropped to what is drawn."""
    import matplotlib.pyplot as plt

    if len(fig.axes) > 1:  # panels laid out so that none overlaps another's labels
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Cropped to what is drawn: for one panel, tight_layout would lay the figure out by drawing it once more (a third of its time)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=PAD_INCHES)
    plt.close(fig)
    return path


def confusion_figure(matrix: np.ndarray, names: list[str]) -> Any:
    """The test confusion matrix: counts as colours, and as numbers where not 0 (a blank cell is
    no sample; the numbers that stand out are the errors). ConfusionMatrixDisplay writes every
    cell, most of a digits report's time in text it draws."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pyplot()  # the missing-glyph warnings filtered
    n = len(names)
    fig = Figure(figsize=(max(4, 0.6 * n + 2), max(4, 0.6 * n + 1.5)), dpi=DPI)  # not pyplot's: a kept one is never closed
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="viridis", vmin=0)
    ax.set(xticks=range(n), yticks=range(n), xlabel="Predicted label", ylabel="True label", title="Test confusion matrix")
    ax.set_xticklabels(names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticklabels(names)
    for (i, j), colour in _counts(ax, matrix):
        ax.text(j, i, str(matrix[i, j]), ha="center", va="center", color=colour)
    return fig


def _counts(ax: Any, matrix: np.ndarray) -> list[tuple[tuple[int, int], Any]]:
    """``matrix`` as the plot's colours; the cells to write (not 0), each with its number's colour."""
    image = ax.images[0]
    image.set_data(matrix)
    image.set_clim(0, matrix.max())
    dark, light = image.get_cmap()(0.0), image.get_cmap()(1.0)
    middle = matrix.max() / 2
    return [((i, j), dark if matrix[i, j] > middle else light) for i, j in zip(*np.nonzero(matrix))]


class ConfusionPlot:
    """The confusion figure of some class names, made once a process and drawn again for each
    report (a fused group's trials write theirs one after another). Made: laid out, sized to the
    crop ``bbox_inches="tight"`` gives (the counts are drawn inside the axes: it does not depend
    on them), and drawn without what changes (the matrix, its border, the counts) into a kept
    background. A report puts the background back and draws only those on it: the PNG is pixel
    for pixel what a fresh figure saved tight gives, in about 60% of the time (45 ms to 25-30 ms a
    digits report: a fresh one's layout pass, the draw of its axes, ticks and labels, and the
    crop are done once). Callers hold ``_CONFUSION_LOCK`` from ``draw`` to ``save``."""

    _kept: dict[tuple[str, ...], ConfusionPlot] = {}

    @classmethod
    def of(cls, names: list[str], matrix: np.ndarray) -> ConfusionPlot:
        plot = cls._kept.get(tuple(names))
        if plot is None:
            plot = cls._kept[tuple(names)] = cls(matrix, names)
        return plot

    def __init__(self, matrix: np.ndarray, names: list[str]) -> None:
        self.fig = fig = confusion_figure(matrix, names)
        self.ax = ax = fig.axes[0]
        fig.draw_without_rendering()
        box = fig.get_tightbbox(fig.canvas.get_renderer()).padded(PAD_INCHES)
        width, height = fig.get_size_inches()
        where = ax.get_position()
        fig.set_size_inches(box.width, box.height)
        ax.set_position(
            [(where.x0 * width - box.x0) / box.width, (where.y0 * height - box.y0) / box.height]
            + [where.width * width / box.width, where.height * height / box.height]
        )
        for text in list(ax.texts):
            text.remove()
        self.cells: dict[tuple[int, int], Any] = {}  # a cell's number, made once (a new Text costs 0.6 ms), shown where not 0
        self.changing = [ax.images[0], *ax.spines.values()]  # the border is drawn over the matrix
        for artist in self.changing:
            artist.set_visible(False)
        fig.canvas.draw()
        self.background = fig.canvas.copy_from_bbox(fig.bbox)
        for artist in self.changing:
            artist.set_visible(True)

    def draw(self, matrix: np.ndarray) -> ConfusionPlot:
        for text in self.cells.values():
            text.set_visible(False)
        for (i, j), colour in _counts(self.ax, matrix):
            if (i, j) not in self.cells:
                self.cells[i, j] = self.ax.text(j, i, "", ha="center", va="center")
            self.cells[i, j].set(text=str(matrix[i, j]), color=colour, visible=True)
        return self

    def save(self, path: Path) -> Path:
        from matplotlib.image import imsave

        canvas = self.fig.canvas
        canvas.restore_region(self.background)
        renderer = canvas.get_renderer()
        for artist in [*self.changing, *self.ax.texts]:
            artist.draw(renderer)
        path.parent.mkdir(parents=True, exist_ok=True)
        imsave(path, np.asarray(canvas.buffer_rgba()), dpi=DPI, format="png")  # with savefig's metadata
        return path


def write_cluster_plot(features: np.ndarray, clusters: np.ndarray, labels: np.ndarray | None, out_dir: Path) -> Path:
    """Test samples in 2-D (PCA projection), coloured by cluster and, beside, by label."""
    from sklearn.decomposition import PCA

    plt = pyplot()
    points = PCA(n_components=2).fit_transform(features) if features.shape[1] > 2 else features
    panels = [("clusters", clusters)] + ([("labels", labels)] if labels is not None else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5), squeeze=False)
    for ax, (title, colours) in zip(axes[0], panels):
        ax.scatter(points[:, 0], points[:, 1], c=colours, s=10, cmap="tab10")
        ax.set_title(f"test samples by {title} (PCA 2-D)")
    return _save(fig, out_dir / "clusters.png")


def write_reconstructions(original: np.ndarray, reconstructed: np.ndarray, shape: tuple[int, ...], out_dir: Path, n: int = 10) -> Path:
    """Top row: test images; bottom row: their reconstructions."""
    plt = pyplot()
    n = min(n, len(original))
    fig, axes = plt.subplots(2, n, figsize=(1.2 * n, 2.6), squeeze=False)
    for i in range(n):
        # One grey scale per original/reconstruction pair, so they compare by eye.
        low = float(min(np.min(original[i]), np.min(reconstructed[i])))
        high = float(max(np.max(original[i]), np.max(reconstructed[i])))
        for row, images in enumerate((original, reconstructed)):
            image = np.asarray(images[i]).reshape(shape)
            if image.shape[0] == 1:
                axes[row][i].imshow(image[0], cmap="gray", vmin=low, vmax=high)
            else:
                axes[row][i].imshow(np.clip((np.moveaxis(image, 0, -1) - low) / (high - low or 1.0), 0, 1))
            axes[row][i].axis("off")
    axes[0][0].set_title("original", fontsize=8, loc="left")
    axes[1][0].set_title("reconstructed", fontsize=8, loc="left")
    return _save(fig, out_dir / "reconstructions.png")


def write_reconstruction_report(
    original: np.ndarray,
    reconstructed: np.ndarray,
    shape: tuple[int, ...],
    out_dir: Path,
    unscale: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[Path]:
    """reconstruction_errors.csv (per-sample mse, in the model's units) and, for
    images, reconstructions.png (drawn in pixel units when ``unscale`` is given)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    flat_true, flat_pred = original.reshape(len(original), -1), reconstructed.reshape(len(reconstructed), -1)
    errors = out_dir / "reconstruction_errors.csv"
    np.savetxt(errors, ((flat_true - flat_pred) ** 2).mean(axis=1), header="mse", comments="", fmt="%.9g")
    written = [errors]
    if len(shape) == 3:
        if unscale is not None:
            original, reconstructed = unscale(original), unscale(reconstructed)
        written.append(write_reconstructions(original, reconstructed, shape, out_dir))
    return written


def write_forecast_plot(y_true: np.ndarray, y_pred: np.ndarray, out_dir: Path, times: np.ndarray | None = None) -> Path:
    """Test targets and predictions over time (series data: samples are in time order)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.5))
    t = np.arange(len(y_true)) if times is None else times
    ax.plot(t, y_true, label="true", linewidth=1.5)
    ax.plot(t, y_pred, label="predicted", linewidth=1.2, linestyle="--")
    ax.set_xlabel("time" if times is not None else "test step (time order)")
    ax.set_ylabel("value")
    ax.set_title("Test forecasts")
    ax.legend()
    return _save(fig, out_dir / "forecast.png")


def write_predictions(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    path: Path,
    ids: np.ndarray | None = None,
    id_name: str = "row",
    class_names: list[str] | None = None,
    probabilities: np.ndarray | None = None,
) -> Path:
    """One row per test sample: its id (row in the source table, image file,
    time), ``y_true`` and ``y_pred`` (class codes or values, so any metric can
    be recomputed from the run alone) and, for classifiers, the class names
    and one ``p_<class>`` probability column per class when the model has them."""
    import pandas as pd

    columns: dict[str, object] = {}
    if ids is not None:
        columns[id_name] = np.asarray(ids)
    columns["y_true"], columns["y_pred"] = np.asarray(y_true), np.asarray(y_pred)
    if class_names:
        names = np.asarray(class_names, dtype=object)
        columns["true_class"] = names[np.asarray(y_true, dtype=np.int64)]
        columns["predicted_class"] = names[np.asarray(y_pred, dtype=np.int64)]
    if probabilities is not None:
        labels = class_names or [str(i) for i in range(probabilities.shape[1])]
        columns.update({f"p_{label}": probabilities[:, i] for i, label in enumerate(labels)})
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(columns).to_csv(path, index=False, float_format="%.9g")
    return path


def write_test_report(
    task: Task,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    out_dir: Path,
    data: Any,
    probabilities: np.ndarray | None = None,
) -> list[Path]:
    """test_predictions.csv, and a confusion matrix PNG + classification_report
    for classifiers or a predicted-vs-true scatter for regressors (plus
    forecast.png when the samples are in time order). ``data`` is the data
    module of the test split: its class names, sample ids and time order.
    Regression values are in the target's own units. Returns the files written."""
    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    class_names = data.class_names if task.is_classification else None
    ids = data.ids.get("test") if getattr(data, "ids", None) else None
    if ids is not None:
        # The test loader is sequential, so a run limited to its first batches
        # (trainer.limit_test_batches) predicted the first ids.
        ids = np.asarray(ids)[: len(y_true)]
    written: list[Path] = [
        write_predictions(y_true, y_pred, out_dir / "test_predictions.csv", ids, data.id_name, class_names, probabilities)
    ]
    if task.is_classification:
        from sklearn.metrics import classification_report, confusion_matrix

        labels = list(range(len(class_names))) if class_names else sorted(set(y_true) | set(y_pred))
        names = class_names or [str(label) for label in labels]
        report = classification_report(y_true, y_pred, labels=labels, target_names=names, digits=4, zero_division=0)
        path = out_dir / "classification_report.txt"
        path.write_text(report)
        written.append(path)
        matrix = confusion_matrix(y_true, y_pred, labels=labels)
        with _CONFUSION_LOCK:
            written.append(ConfusionPlot.of(names, matrix).draw(matrix).save(out_dir / "confusion_matrix.png"))
        return written
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(y_true, y_pred, s=10, alpha=0.6)
    lo, hi = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax.plot([lo, hi], [lo, hi], "k--", linewidth=1)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title("Test predictions")
    if data.time_ordered:
        written.append(write_forecast_plot(y_true, y_pred, out_dir, ids))
    written.append(_save(fig, out_dir / "predicted_vs_true.png"))
    return written


def write_som_maps(
    distance_map: np.ndarray,
    xx: np.ndarray,
    yy: np.ndarray,
    best_units: np.ndarray,
    labels: np.ndarray | None,
    class_names: list[str] | None,
    hits: np.ndarray,
    topology: str,
    out_dir: Path,
) -> Path:
    """som_maps.png: the U-matrix (each unit's mean distance to its neighbours:
    light = far, so ridges separate clusters) with each test sample's class
    drawn on its best-matching unit, and the hit map (test samples per unit)."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import RegularPolygon

    plt = pyplot()
    hexagonal = topology == "hexagonal"
    centres = np.column_stack([xx.ravel(), yy.ravel()])

    def cells(ax, values, cmap):
        radius = 1 / np.sqrt(3) if hexagonal else np.sqrt(0.5)
        shapes = [
            RegularPolygon(c, numVertices=6 if hexagonal else 4, radius=radius, orientation=0 if hexagonal else np.pi / 4) for c in centres
        ]
        collection = PatchCollection(shapes, cmap=cmap, edgecolor="white", linewidth=0.3)
        collection.set_array(np.asarray(values).ravel())
        ax.add_collection(collection)
        ax.set_xlim(centres[:, 0].min() - 1, centres[:, 0].max() + 1)
        ax.set_ylim(centres[:, 1].max() + 1, centres[:, 1].min() - 1)  # row 0 at the top
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        return collection

    rows, cols = distance_map.shape
    fig, axes = plt.subplots(1, 2, figsize=(2 * (0.45 * cols + 2.5), 0.45 * rows + 2.2))
    plt.colorbar(cells(axes[0], distance_map, "bone_r"), ax=axes[0], fraction=0.046, label="distance to neighbours (max = 1)")
    if labels is not None:
        rng = np.random.default_rng(0)
        points = centres[best_units] + rng.uniform(-0.25, 0.25, (len(best_units), 2))
        classes = np.unique(labels)
        cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
        for i, c in enumerate(classes):
            chosen = labels == c
            name = class_names[int(c)] if class_names and int(c) < len(class_names) else str(c)
            axes[0].scatter(points[chosen, 0], points[chosen, 1], s=9, color=cmap(i % cmap.N), label=name, edgecolor="none")
        if len(classes) <= 20:
            axes[0].legend(
                loc="upper center",
                bbox_to_anchor=(0.5, 0.0),
                ncol=min(10, len(classes)),
                fontsize=7,
                title="class",
                title_fontsize=7,
                markerscale=1.5,
                frameon=False,
            )
    axes[0].set_title("U-matrix, test samples on their best unit", fontsize=9)
    plt.colorbar(cells(axes[1], hits, "Blues"), ax=axes[1], fraction=0.046, label="test samples")
    if hits.size <= 400:
        for (x, y), n in zip(centres, hits.ravel()):
            if n:
                axes[1].text(x, y, str(int(n)), ha="center", va="center", fontsize=6)
    axes[1].set_title("hit map", fontsize=9)
    return _save(fig, out_dir / "som_maps.png")


ARROW_GLYPHS = {"left": "\u2190", "down": "\u2193", "right": "\u2192", "up": "\u2191"}


def write_policy_map(
    values: np.ndarray,
    policy: np.ndarray,
    shape: tuple[int, int],
    arrows: tuple[str, ...],
    marks: dict[int, str],
    out_dir: Path,
    title: str,
) -> Path:
    """A grid world's state values as a heat map with the greedy action drawn as
    an arrow in each cell; cells in ``marks`` (holes, cliff, goal) show their letter instead."""
    plt = pyplot()
    rows, cols = shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * cols + 1.5), max(3.0, 0.6 * rows + 1.0)))
    image = ax.imshow(values.reshape(rows, cols), cmap="viridis")
    fig.colorbar(image, ax=ax, label="state value V(s)", shrink=0.8)
    for state in range(rows * cols):
        r, c = divmod(state, cols)
        text = marks.get(state) or ARROW_GLYPHS[arrows[int(policy[state])]]
        ax.text(c, r, text, ha="center", va="center", color="white", fontsize=12, fontweight="bold")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    return _save(fig, out_dir / "policy_map.png")


def write_learning_curve(returns: np.ndarray, out_dir: Path, title: str) -> Path:
    """Return per training episode, and its moving average over 2% of the episodes."""
    plt = pyplot()
    returns = np.asarray(returns, dtype=float)
    episodes = np.arange(1, len(returns) + 1)
    window = max(1, len(returns) // 50)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(episodes, returns, color="tab:blue", alpha=0.25, linewidth=0.8, label="episode return")
    if len(returns) >= window:
        smooth = np.convolve(returns, np.ones(window) / window, mode="valid")
        ax.plot(episodes[window - 1 :], smooth, color="tab:blue", linewidth=2, label=f"moving average ({window} episodes)")
    ax.set_xlabel("training episode")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    return _save(fig, out_dir / "learning_curve.png")
