"""Figures as self-contained SVG text (matplotlib, no display needed): head heatmaps and the circuit graph."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _svg(figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prologue so the SVG can sit inside HTML


def head_heatmap(scores: np.ndarray, title: str, *, vmin: float | None = None, vmax: float | None = None) -> str:
    """SVG heatmap of per-head scores [L, N]: layers down, heads across."""
    scores = np.asarray(scores, np.float64)
    n_layers, n_heads = scores.shape
    figure, axes = plt.subplots(figsize=(1.2 + 0.38 * n_heads, 1.0 + 0.2 * n_layers))
    image = axes.imshow(scores, aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
    axes.set_xlabel("head")
    axes.set_ylabel("layer")
    axes.set_xticks(range(n_heads))
    axes.set_yticks(range(0, n_layers, max(1, n_layers // 15)))
    axes.set_title(title, fontsize=10)
    figure.colorbar(image, ax=axes, fraction=0.05)
    return _svg(figure)


def circuit_graph(edges: list[tuple[int, int, int, int, float]], n_layers: int, n_heads: int, title: str) -> str:
    """SVG of previous-token head -> induction head edges (prev_layer, prev_head, layer, head, strength)
    drawn on the layer x head grid; line width follows the strength."""
    figure, axes = plt.subplots(figsize=(1.5 + 0.45 * n_heads, 1.0 + 0.22 * n_layers))
    axes.scatter(*np.meshgrid(range(n_heads), range(n_layers)), s=6, c="#cccccc")
    strongest = max((edge[4] for edge in edges), default=1.0) or 1.0
    for prev_layer, prev_head, layer, head, strength in edges:
        axes.annotate(
            "", xy=(head, layer), xytext=(prev_head, prev_layer),
            arrowprops=dict(arrowstyle="->", color="#c0392b", lw=0.5 + 2.5 * strength / strongest, alpha=0.8),
        )
    sources = {(e[0], e[1]) for e in edges}
    targets = {(e[2], e[3]) for e in edges}
    if sources:
        axes.scatter([h for _, h in sources], [l for l, _ in sources], s=40, c="#2980b9", label="previous-token head", zorder=3)
    if targets:
        axes.scatter([h for _, h in targets], [l for l, _ in targets], s=40, c="#c0392b", label="induction head", zorder=3)
    axes.set_xlim(-0.7, n_heads - 0.3)
    axes.set_ylim(n_layers - 0.5, -0.5)
    axes.set_xlabel("head")
    axes.set_ylabel("layer")
    axes.set_title(title, fontsize=10)
    if edges:
        axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return _svg(figure)
