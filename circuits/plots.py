"""Every figure the project draws (matplotlib without a display), as deterministic bytes or SVG text.

Head maps are hand-built SVG so each cell carries a ``<title>`` (its head and score on hover);
the rest are matplotlib figures saved with fixed ids and no timestamp, so the same result
always renders to the same bytes.
"""

from __future__ import annotations

import html
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from circuits.utils import head_label  # noqa: E402

plt.rcParams["svg.hashsalt"] = "circuits"  # stable element ids


def figure_bytes(figure, kind: str, dpi: int = 130) -> bytes:
    """``figure`` saved as ``kind`` (png | svg) without metadata that changes between runs; closes it."""
    buffer = io.BytesIO()
    metadata = {"Date": None} if kind == "svg" else {"Software": None}
    figure.savefig(buffer, format=kind, dpi=dpi, bbox_inches="tight", metadata=metadata)
    plt.close(figure)
    return buffer.getvalue()


def _inline_svg(figure) -> str:
    text = figure_bytes(figure, "svg").decode()
    return text[text.index("<svg"):]  # drop the XML prologue so the SVG can sit inside HTML


def head_heatmap(scores: np.ndarray, title: str, *, vmin: float | None = None, vmax: float | None = None,
                 cmap: str = "viridis") -> str:
    """SVG heatmap of per-head scores [L, N] (layers down, heads across); hovering a cell shows ``L3H5: 0.812``."""
    scores = np.asarray(scores, np.float64)
    n_layers, n_heads = scores.shape
    finite = scores[np.isfinite(scores)]
    low = float(vmin if vmin is not None else (finite.min() if finite.size else 0.0))
    high = float(vmax if vmax is not None else (finite.max() if finite.size else 1.0))
    colours = matplotlib.colormaps[cmap]
    cell = max(6, min(22, 440 // max(n_heads, 1)))
    height = max(4, min(16, 480 // max(n_layers, 1)))
    left, top = 34, 26
    width_px, height_px = left + n_heads * cell + 70, top + n_layers * height + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width_px}" height="{height_px}" font-family="sans-serif" font-size="10">',
             f'<text x="{left}" y="14" font-size="11">{html.escape(title)}</text>']
    for layer in range(n_layers):
        for head in range(n_heads):
            value = scores[layer, head]
            share = 0.0 if high == low or not np.isfinite(value) else float(np.clip((value - low) / (high - low), 0, 1))
            fill = matplotlib.colors.to_hex(colours(share)) if np.isfinite(value) else "#ffffff"
            parts.append(f'<rect x="{left + head * cell}" y="{top + layer * height}" width="{cell}" height="{height}" fill="{fill}">'
                         f"<title>{head_label(layer, head)}: {value:.3f}</title></rect>")
    step = max(1, n_layers // 10)
    parts += [f'<text x="{left - 4}" y="{top + layer * height + height - 1}" text-anchor="end">{layer}</text>'
              for layer in range(0, n_layers, step)]
    step = max(1, n_heads // 12)
    parts += [f'<text x="{left + head * cell + cell / 2}" y="{top + n_layers * height + 12}" text-anchor="middle">{head}</text>'
              for head in range(0, n_heads, step)]
    parts.append(f'<text x="{left + n_heads * cell / 2}" y="{top + n_layers * height + 25}" text-anchor="middle">head (rows: layer)</text>')
    bar_x, bar_height = left + n_heads * cell + 12, n_layers * height
    for i in range(20):  # colour bar, high at the top
        parts.append(f'<rect x="{bar_x}" y="{top + bar_height * i / 20:.1f}" width="10" height="{bar_height / 20 + 0.5:.1f}" '
                     f'fill="{matplotlib.colors.to_hex(colours(1 - (i + 0.5) / 20))}"/>')
    parts += [f'<text x="{bar_x + 14}" y="{top + 8}">{high:.2g}</text>', f'<text x="{bar_x + 14}" y="{top + bar_height}">{low:.2g}</text>',
              "</svg>"]
    return "".join(parts)


def prediction_scatter(predicted: np.ndarray, measured: np.ndarray, *, label_top: int, title: str) -> str:
    """SVG scatter of every head's predicted score (x) against its measured prefix matching (y); the
    ``label_top`` heads of each ranking are labelled."""
    predicted, measured = np.asarray(predicted, np.float64), np.asarray(measured, np.float64)
    n_heads = predicted.shape[1]
    figure, axes = plt.subplots(figsize=(6.2, 4.4))
    axes.scatter(predicted.ravel(), measured.ravel(), s=10, c="#7f8c8d", alpha=0.6, linewidths=0)
    top = set(np.argsort(-predicted, axis=None)[:label_top]) | set(np.argsort(-measured, axis=None)[:label_top])
    for index in sorted(int(i) for i in top):
        x, y = predicted.ravel()[index], measured.ravel()[index]
        axes.scatter([x], [y], s=22, c="#c0392b", zorder=3)
        axes.annotate(head_label(index // n_heads, index % n_heads), (x, y), xytext=(3, 3), textcoords="offset points", fontsize=7)
    axes.set_xlabel("predicted induction (weights only)")
    axes.set_ylabel("prefix matching (measured)")
    axes.set_title(title, fontsize=10)
    return _inline_svg(figure)


def circuit_graph(edges: list[tuple[int, int, int, int, float]], n_layers: int, n_heads: int, title: str) -> str:
    """SVG of previous-token head -> induction head edges (prev_layer, prev_head, layer, head, strength) on the
    layer x head grid, zoomed to the layers the edges span; line width follows the strength, and every head on
    an edge is labelled."""
    layers = [e[0] for e in edges] + [e[2] for e in edges]
    top, bottom = (max(0, min(layers) - 1), min(n_layers - 1, max(layers) + 1)) if edges else (0, n_layers - 1)
    shown = bottom - top + 1
    figure, axes = plt.subplots(figsize=(2.5 + 0.6 * n_heads, 1.6 + 0.42 * shown))
    grid_heads, grid_layers = np.meshgrid(range(n_heads), range(top, bottom + 1))
    axes.scatter(grid_heads, grid_layers, s=6, c="#dddddd")
    strongest = max((edge[4] for edge in edges), default=1.0) or 1.0
    for prev_layer, prev_head, layer, head, strength in edges:
        axes.annotate("", xy=(head, layer), xytext=(prev_head, prev_layer),
                      arrowprops=dict(arrowstyle="-|>", color="#c0392b", lw=0.6 + 2.4 * strength / strongest, alpha=0.75,
                                      shrinkA=4, shrinkB=4, connectionstyle="arc3,rad=0.15"))
    sources = sorted({(e[0], e[1]) for e in edges})
    targets = sorted({(e[2], e[3]) for e in edges})
    for nodes, colour, label in ((sources, "#2980b9", "previous-token head"), (targets, "#c0392b", "induction head")):
        if nodes:
            axes.scatter([h for _, h in nodes], [l for l, _ in nodes], s=46, c=colour, label=label, zorder=3)
            for layer, head in nodes:
                axes.annotate(head_label(layer, head), (head, layer), xytext=(5, -9), textcoords="offset points", fontsize=7,
                              color=colour, zorder=4)
    axes.set_xlim(-0.7, n_heads + 0.2)
    axes.set_ylim(bottom + 0.5, top - 0.5)
    axes.set_yticks(range(top, bottom + 1))
    axes.set_xticks(range(n_heads))
    axes.set_xlabel("head")
    axes.set_ylabel("layer")
    axes.set_title(title, fontsize=10)
    if edges:
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1 - 1.0 / shown), ncol=2, fontsize=8, frameon=False)
    return _inline_svg(figure)


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
