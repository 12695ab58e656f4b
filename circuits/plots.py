"""The experiments' matplotlib figures (without a display), as deterministic bytes: saved with fixed ids and no
timestamp, so the same result always renders to the same bytes. The report's interactive figures are hand-built
SVG (:mod:`circuits.svg_figures`)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

plt.rcParams["svg.hashsalt"] = "circuits"  # stable element ids


def figure_bytes(figure, kind: str, dpi: int = 130) -> bytes:
    """``figure`` saved as ``kind`` (png | svg) without metadata that changes between runs; closes it."""
    buffer = io.BytesIO()
    metadata = {"Date": None} if kind == "svg" else {"Software": None}
    figure.savefig(buffer, format=kind, dpi=dpi, bbox_inches="tight", metadata=metadata)
    plt.close(figure)
    return buffer.getvalue()


def grouped_bars(values: dict[str, dict[str, list[float]]], ylabel: str) -> bytes:
    """PNG of grouped bars: groups (outer keys) x bars (inner keys), mean with the spread of the list as error bars."""
    groups = list(values)
    bars = list(dict.fromkeys(b for row in values.values() for b in row))
    width = 0.8 / max(len(bars), 1)
    figure, axes = plt.subplots(figsize=(2 + 1.6 * len(groups), 4.5))
    for i, bar in enumerate(bars):
        series = [values[g].get(bar, [np.nan]) for g in groups]
        axes.bar(np.arange(len(groups)) + i * width, [np.mean(v) for v in series], width, yerr=[np.std(v) for v in series], label=bar)
    axes.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, [g.replace(" ", "\n", 1) for g in groups], fontsize=7)
    axes.set_ylabel(ylabel)
    axes.set_ylim(0, 1)
    axes.legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure_bytes(figure, "png")


def training_curves(runs: list[dict], panels: tuple[tuple[str, str], ...], *, baseline: float | None, title: str) -> dict[str, bytes]:
    """{"png": ..., "svg": ...}: one panel per (key, label), one colour per run.

    runs: dicts with ``label``, ``steps`` [S], ``curves`` {key: [seeds, S]} and ``phase`` (a step or None):
    the mean over seeds is drawn, the seeds' range shaded, the phase change dotted.
    """
    figure, grid = plt.subplots(2, (len(panels) + 1) // 2, figsize=(11, 6.4), constrained_layout=True)
    axes = grid.ravel()
    for index, run in enumerate(runs):
        colour = f"C{index}"
        for axis, (key, label) in zip(axes, panels):
            curve = np.asarray(run["curves"][key])
            axis.plot(run["steps"], curve.mean(0), color=colour, label=run["label"], linewidth=1.4)
            if len(curve) > 1:
                axis.fill_between(run["steps"], curve.min(0), curve.max(0), color=colour, alpha=0.15, linewidth=0)
            if run["phase"] is not None:
                axis.axvline(run["phase"], color=colour, linestyle=":", linewidth=1)
            axis.set_title(label, fontsize=9)
            axis.set_xlabel("step", fontsize=8)
            axis.tick_params(labelsize=7)
    if baseline is not None:
        axes[0].axhline(baseline, color="grey", linestyle="--", linewidth=0.8, label="no-induction baseline")
    axes[0].legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=130, metadata={"Software": None})
    svg = io.BytesIO()
    figure.savefig(svg, format="svg", metadata={"Date": None})
    plt.close(figure)
    return {"png": png.getvalue(), "svg": svg.getvalue()}
