"""The report's figures as hand-built SVG text: every cell, point, node and edge carries a ``<title>`` (its head
and scores on hover) and a ``data-head`` attribute (so a browser test can find it), labels are placed so that
they never overprint, and the same data always gives the same bytes.

Colour scales come from matplotlib's colour maps; nothing here draws with matplotlib itself.
"""

from __future__ import annotations

import dataclasses
import html
import math

import matplotlib.colors
import numpy as np

from circuits.utils import head_label

FONT_PX = 10
CHAR_PX = 7.0
"""A generous width of one label character at ``FONT_PX`` (digits and capitals of a sans-serif face are narrower),
so that boxes kept apart here stay apart as the browser draws them."""


def _colour(cmap: str, share: float) -> str:
    return matplotlib.colors.to_hex(matplotlib.colormaps[cmap](float(np.clip(share, 0.0, 1.0))))


@dataclasses.dataclass(frozen=True)
class ColourScale:
    """Maps values to [0, 1] for a colour map: ``linear`` between ``low`` and ``high``, or ``log`` (values at or
    below ``low`` > 0 take the bottom colour), for scores that span orders of magnitude."""

    low: float
    high: float
    kind: str = "linear"

    @classmethod
    def fit(cls, values: np.ndarray, *, kind: str = "linear", low: float | None = None, high: float | None = None,
            decades: float = 4.0) -> "ColourScale":
        """The scale of ``values``; a log scale spans at most ``decades`` below the largest value."""
        finite = values[np.isfinite(values)]
        if kind == "log":
            positive = finite[finite > 0]
            top = float(positive.max()) if positive.size else 1.0
            bottom = max(float(positive.min()) if positive.size else top / 10, top / 10**decades)
            return cls(bottom if bottom < top else top / 10, top, "log")
        return cls(float(low if low is not None else (finite.min() if finite.size else 0.0)),
                   float(high if high is not None else (finite.max() if finite.size else 1.0)))

    @staticmethod
    def suited(values: np.ndarray, ratio: float = 100.0) -> str:
        """``"log"`` for non-negative values whose positive ones span more than ``ratio``, else ``"linear"``."""
        values = np.asarray(values, np.float64)
        positive = values[values > 0]
        spans = positive.size > 1 and positive.max() / positive.min() > ratio and bool((values[np.isfinite(values)] >= 0).all())
        return "log" if spans else "linear"

    def share(self, value: float) -> float:
        if not np.isfinite(value) or self.high == self.low:
            return 0.0
        if self.kind == "log":
            return float(np.clip(math.log10(max(value, self.low) / self.low) / math.log10(self.high / self.low), 0, 1))
        return float(np.clip((value - self.low) / (self.high - self.low), 0, 1))

    def value_at(self, share: float) -> float:
        if self.kind == "log":
            return self.low * (self.high / self.low) ** share
        return self.low + share * (self.high - self.low)


def _svg_open(width: float, height: float, label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
            f'font-family="sans-serif" font-size="{FONT_PX}" role="img" aria-label="{html.escape(label)}">')


def _text(x: float, y: float, text: str, **attributes) -> str:
    extra = "".join(f' {name.rstrip("_").replace("_", "-")}="{html.escape(str(value))}"' for name, value in attributes.items())
    return f'<text x="{x:.1f}" y="{y:.1f}"{extra}>{html.escape(text)}</text>'


def head_heatmap(scores: np.ndarray, title: str, *, scale: ColourScale | None = None, cmap: str = "viridis",
                 unit: str = "", outlined: dict[tuple[int, int], str] | None = None) -> str:
    """SVG heatmap of per-head scores [L, N] (layers down, heads across) with a colour bar; hovering a cell shows
    ``L3H5: 0.812``. ``outlined``: cells drawn with a black border, with that text added to their hover title
    (e.g. an exact value beside an estimate)."""
    scores = np.asarray(scores, np.float64)
    n_layers, n_heads = scores.shape
    scale = scale or ColourScale.fit(scores)
    outlined = outlined or {}
    cell = max(6, min(22, 440 // max(n_heads, 1)))
    height = max(4, min(16, 480 // max(n_layers, 1)))
    left, top = 34, 26
    width_px, height_px = max(left + n_heads * cell + 86, left + 6.6 * len(title)), top + n_layers * height + 30
    parts = [_svg_open(width_px, height_px, title), _text(left, 14, title, font_size=11)]
    for layer in range(n_layers):
        for head in range(n_heads):
            value = scores[layer, head]
            fill = _colour(cmap, scale.share(value)) if np.isfinite(value) else "#ffffff"
            note = outlined.get((layer, head))
            border = ' stroke="#000" stroke-width="1.2"' if note else ""
            hover = f"{head_label(layer, head)}: {value:.3f}{unit}" + (f"; {note}" if note else "")
            parts.append(f'<rect x="{left + head * cell}" y="{top + layer * height}" width="{cell}" height="{height}" fill="{fill}"'
                         f'{border} data-head="{head_label(layer, head)}"><title>{html.escape(hover)}</title></rect>')
    step = max(1, n_layers // 10)
    parts += [_text(left - 4, top + layer * height + height - 1, str(layer), text_anchor="end") for layer in range(0, n_layers, step)]
    step = max(1, n_heads // 12)
    parts += [_text(left + head * cell + cell / 2, top + n_layers * height + 12, str(head), text_anchor="middle")
              for head in range(0, n_heads, step)]
    parts.append(_text(left + n_heads * cell / 2, top + n_layers * height + 25, "head (rows: layer)", text_anchor="middle"))
    parts.append(_colour_bar(scale, cmap, left + n_heads * cell + 12, top, n_layers * height))
    parts.append("</svg>")
    return "".join(parts)


def _colour_bar(scale: ColourScale, cmap: str, x: float, top: float, height: float) -> str:
    """A vertical colour bar, high at the top, with three tick values (and the scale kind when it is a log scale)."""
    parts = [f'<rect x="{x}" y="{top + height * i / 20:.1f}" width="10" height="{height / 20 + 0.5:.1f}" '
             f'fill="{_colour(cmap, 1 - (i + 0.5) / 20)}"/>' for i in range(20)]
    for share in (1.0, 0.5, 0.0):
        parts.append(_text(x + 14, top + height * (1 - share) + (8 if share == 1.0 else 0 if share == 0.0 else 3),
                           f"{'<= ' if share == 0.0 and scale.kind == 'log' else ''}{scale.value_at(share):.3g}"))
    if scale.kind == "log":
        parts.append(_text(x, top + height + 12, "log scale"))
    return "".join(parts)


@dataclasses.dataclass
class _Placed:
    boxes: list[tuple[float, float, float, float]] = dataclasses.field(default_factory=list)

    def free(self, box: tuple[float, float, float, float]) -> bool:
        x0, y0, x1, y1 = box
        return all(x1 <= a or x0 >= c or y1 <= b or y0 >= d for a, b, c, d in self.boxes)


def _label_box(x: float, y: float, text: str) -> tuple[float, float, float, float]:
    """The box (x0, y0, x1, y1) of ``text`` drawn with its baseline-left corner at (x, y), with a pixel of margin."""
    return (x - 1, y - FONT_PX - 1, x + CHAR_PX * len(text) + 1, y + 3)


def place_labels(points: list[tuple[float, float, str]], obstacles: list[tuple[float, float, float, float]],
                 bounds: tuple[float, float, float, float]) -> list[tuple[float, float]]:
    """Baseline-left positions for the labels of ``points`` (x, y, text), in order, such that no two label boxes
    overlap, none covers an obstacle box (the labelled points themselves) and all stay inside ``bounds``: each
    label takes the first free spot on rings of growing radius around its point (a leader line joins far ones)."""
    placed = _Placed(list(obstacles))
    positions = []
    x_min, y_min, x_max, y_max = bounds
    for px, py, text in points:
        width = CHAR_PX * len(text)
        chosen = None
        for radius in (5, 9, 14, 20, 28, 38, 50, 64, 80, 100, 125, 150):
            for angle in range(0, 360, 15):
                dx, dy = radius * math.cos(math.radians(angle)), -radius * math.sin(math.radians(angle))
                x = px + dx - (width if dx < -1e-6 else 0 if dx > 1e-6 else width / 2)
                y = py + dy + (FONT_PX if dy > 1e-6 else 0 if dy < -1e-6 else FONT_PX / 2 - 1)
                box = _label_box(x, y, text)
                if box[0] >= x_min and box[1] >= y_min and box[2] <= x_max and box[3] <= y_max and placed.free(box):
                    chosen = (x, y)
                    break
            if chosen:
                break
        if chosen is None:  # crowded beyond every ring: stack it below the plot's last label
            y = max((b[3] for b in placed.boxes), default=y_min) + FONT_PX + 2
            chosen = (x_min + 2, y)
        placed.boxes.append(_label_box(*chosen, text))
        positions.append(chosen)
    return positions


@dataclasses.dataclass(frozen=True)
class ScatterPoint:
    """One head of the scatter plot: its predicted (x) and measured (y) score and what its hover title says."""

    layer: int
    head: int
    predicted: float
    measured: float
    title: str
    highlighted: bool = False


def prediction_scatter(points: list[ScatterPoint], *, title: str, x_label: str, y_label: str, log_x: bool,
                       on_measured_scale: bool = False) -> str:
    """SVG scatter of every head's predicted score (x; log scale with ``log_x``, values at or below its floor on the
    left edge) against its measured score (y, 0 to 1). With ``on_measured_scale`` (a prediction of the measured score
    itself) x runs 0 to 1 as y does, with the diagonal predicted = measured: a calibration plot. Highlighted heads are
    red and labelled, labels placed so that none overprints another or a highlighted point."""
    width, height, left, right, top, bottom = 640.0, 430.0, 52.0, 16.0, 26.0, 40.0
    plot_w, plot_h = width - left - right, height - top - bottom
    if on_measured_scale:
        scale = ColourScale(0.0, 1.0)
    else:
        scale = ColourScale.fit(np.array([p.predicted for p in points]), kind="log" if log_x else "linear",
                                low=0.0 if not log_x else None)
        highest = max([p.predicted for p in points] + [1e-30])
        scale = dataclasses.replace(scale, high=highest) if not log_x else scale

    def x_of(value: float) -> float:
        return left + plot_w * scale.share(value)

    def y_of(value: float) -> float:
        return top + plot_h * (1 - float(np.clip(value, 0.0, 1.0)))

    parts = [_svg_open(width, height, title), _text(left, 15, title, font_size=11),
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>']
    for share in np.linspace(0, 1, 5):
        parts.append(_text(left - 6, y_of(share) + 3, f"{share:.2f}", text_anchor="end"))
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y_of(share):.1f}" y2="{y_of(share):.1f}" stroke="#eee"/>')
    for share in np.linspace(0, 1, 5):
        value = scale.value_at(share)
        prefix = "<= " if log_x and share == 0 else ""
        anchor = "start" if share == 0 else "end" if share == 1 else "middle"
        parts.append(_text(left + plot_w * share, top + plot_h + 13, f"{prefix}{value:.3g}", text_anchor=anchor))
    if on_measured_scale:
        parts.append(f'<line class="diagonal" x1="{x_of(0.0):.1f}" y1="{y_of(0.0):.1f}" x2="{x_of(1.0):.1f}" y2="{y_of(1.0):.1f}" '
                     f'stroke="#999" stroke-dasharray="4 3"><title>predicted = measured</title></line>')
    parts.append(_text(left + plot_w / 2, height - 6, x_label + (" (log scale)" if log_x else ""), text_anchor="middle"))
    parts.append(f'<text x="12" y="{top + plot_h / 2:.1f}" transform="rotate(-90 12 {top + plot_h / 2:.1f})" '
                 f'text-anchor="middle">{html.escape(y_label)}</text>')
    ordered = sorted(points, key=lambda p: p.highlighted)  # highlighted points drawn last, on top
    for p in ordered:
        colour, radius = ("#c0392b", 4.0) if p.highlighted else ("#7f8c8d", 2.6)
        parts.append(f'<circle class="head{" highlighted" if p.highlighted else ""}" data-head="{head_label(p.layer, p.head)}" '
                     f'cx="{x_of(p.predicted):.1f}" cy="{y_of(p.measured):.1f}" r="{radius}" fill="{colour}" fill-opacity="0.8">'
                     f"<title>{html.escape(p.title)}</title></circle>")
    labelled = [p for p in points if p.highlighted]
    anchors = [(x_of(p.predicted), y_of(p.measured), head_label(p.layer, p.head)) for p in labelled]
    obstacles = [(x - 4.5, y - 4.5, x + 4.5, y + 4.5) for x, y, _ in anchors]
    for (px, py, text), (x, y) in zip(anchors, place_labels(anchors, obstacles, (left, top, width - 2, top + plot_h))):
        centre_x, centre_y = min(max(px, x), x + CHAR_PX * len(text)), min(max(py, y - FONT_PX), y)
        if math.hypot(centre_x - px, centre_y - py) > 8:
            parts.append(f'<line class="leader" x1="{px:.1f}" y1="{py:.1f}" x2="{centre_x:.1f}" y2="{centre_y:.1f}" stroke="#c0392b" '
                         'stroke-width="0.6"/>')
        parts.append(_text(x, y, text, class_="label", data_head=text, fill="#822"))
    parts.append("</svg>")
    return "".join(parts)


@dataclasses.dataclass(frozen=True)
class GraphNode:
    """A head in the circuit graph: ``role`` "source" (a predicted previous-token head) or "target" (a top
    predicted induction head); ``confirmed``: whether forward passes measured it as such (None: not validated)."""

    layer: int
    head: int
    role: str
    title: str
    confirmed: bool | None


def circuit_graph(sources: list[GraphNode], targets: list[GraphNode], edges: list[tuple[int, int, float, str]], *,
                  title: str) -> str:
    """SVG of predicted previous-token head -> induction head edges as a two-column graph: sources on the left,
    targets on the right, each column ordered by layer then head, edges (source index, target index, strength,
    hover title) straight between the columns, so that no edge passes through a node. Filled nodes were
    measured to be what they are predicted to be, hollow ones were not, grey ones were not measured."""
    row, top, column_gap = 22.0, 46.0, 260.0
    n_rows = max(len(sources), len(targets), 1)
    width, height = 180 + column_gap + 180, top + n_rows * row + 46
    x_source, x_target = 180.0, 180.0 + column_gap
    colours = {"source": "#2980b9", "target": "#c0392b"}

    def y_of(index: int, count: int) -> float:
        return top + (n_rows - count) * row / 2 + index * row + row / 2

    parts = [_svg_open(width, height, title), _text(8, 15, title, font_size=11),
             _text(x_source, top - 14, "previous-token heads (predicted)", text_anchor="middle", font_weight="bold"),
             _text(x_target, top - 14, "induction heads (top predicted)", text_anchor="middle", font_weight="bold")]
    strongest = max((strength for *_, strength, _ in edges), default=1.0) or 1.0
    for source, target, strength, hover in edges:
        y0, y1 = y_of(source, len(sources)), y_of(target, len(targets))
        parts.append(f'<line class="edge" data-source="{head_label(sources[source].layer, sources[source].head)}" '
                     f'data-target="{head_label(targets[target].layer, targets[target].head)}" x1="{x_source + 7}" y1="{y0:.1f}" '
                     f'x2="{x_target - 7}" y2="{y1:.1f}" stroke="#555" stroke-opacity="0.7" '
                     f'stroke-width="{0.8 + 3.2 * max(strength, 0.0) / strongest:.2f}"><title>{html.escape(hover)}</title></line>')
    for nodes, x, anchor, dx in ((sources, x_source, "end", -11), (targets, x_target, "start", 11)):
        for index, node in enumerate(nodes):
            y = y_of(index, len(nodes))
            colour = colours[node.role]
            fill = "#bbbbbb" if node.confirmed is None else colour if node.confirmed else "#ffffff"
            stroke = "#999999" if node.confirmed is None else colour
            label = head_label(node.layer, node.head)
            parts.append(f'<g class="node {node.role}" data-head="{label}"><title>{html.escape(node.title)}</title>'
                         f'<circle cx="{x}" cy="{y:.1f}" r="6" fill="{fill}" stroke="{stroke}" stroke-width="2"/>'
                         f"{_text(x + dx, y + 3.5, label, text_anchor=anchor, fill=colour)}</g>")
    legend_y = height - 16
    parts += [f'<circle cx="14" cy="{legend_y - 3}" r="5" fill="#555" stroke="#555" stroke-width="2"/>',
              _text(24, legend_y, "filled: confirmed by forward passes"),
              f'<circle cx="234" cy="{legend_y - 3}" r="5" fill="#fff" stroke="#555" stroke-width="2"/>',
              _text(244, legend_y, "hollow: measured, not confirmed (a miss)"),
              f'<circle cx="484" cy="{legend_y - 3}" r="5" fill="#bbb" stroke="#999" stroke-width="2"/>',
              _text(494, legend_y, "grey: not measured"), "</svg>"]
    return "".join(parts)


def head_ranks(scores: np.ndarray) -> np.ndarray:
    """int[L, N]: each head's rank (1 = highest) by ``scores`` [L, N]."""
    order = np.argsort(-scores, axis=None, kind="stable")
    ranks = np.empty(order.size, int)
    ranks[order] = np.arange(1, order.size + 1)
    return ranks.reshape(scores.shape)


def induction_graph(predicted: np.ndarray, source_heads: np.ndarray, k: int, *, validation=None) -> str:
    """The circuit graph of the ``k`` heads with the highest ``predicted`` [L, N] score, each with the source head
    ``source_heads`` int[L, N, 2] that maximises it. ``validation`` (a report's
    :class:`~circuits.report.experiment.Validation`, or None) adds each node's measured status."""
    ranks = head_ranks(predicted)
    targets = sorted((int(layer), int(head)) for layer, head in zip(*np.nonzero(ranks <= k)))
    source_of = {t: (int(source_heads[t][0]), int(source_heads[t][1])) for t in targets}
    with_source = [(t, source_of[t]) for t in targets if source_of[t][0] >= 0]
    sources = sorted({source for _, source in with_source})
    v = validation
    target_nodes, source_nodes = [], []
    for layer, head in targets:
        source = source_of[(layer, head)]
        title = (f"{head_label(layer, head)}: predicted induction {predicted[layer, head]:.4g} (rank {ranks[layer, head]}), "
                 f"source {head_label(*source) if source[0] >= 0 else 'none'}")
        confirmed = None
        if v is not None:
            confirmed = (layer, head) in v.confirmed
            title += f"; measured prefix matching {v.prefix_matching[layer, head]:.3f} ({'confirmed' if confirmed else 'a miss'})"
        target_nodes.append(GraphNode(layer, head, "target", title, confirmed))
    for layer, head in sources:
        fed = ", ".join(head_label(*t) for t, s in with_source if s == (layer, head))
        title = f"{head_label(layer, head)}: predicted previous-token head of {fed}"
        confirmed = None
        if v is not None:
            confirmed = bool(v.previous_token[layer, head] >= v.previous_token_threshold)
            title += (f"; measured previous token {v.previous_token[layer, head]:.3f} ("
                      + ("a previous-token head)" if confirmed else f"below {v.previous_token_threshold}: not a previous-token head)"))
        source_nodes.append(GraphNode(layer, head, "source", title, confirmed))
    edges = [(sources.index(source), targets.index(target), float(predicted[target]),
              f"{head_label(*source)} -> {head_label(*target)}: strength {predicted[target]:.4g}") for target, source in with_source]
    return circuit_graph(source_nodes, target_nodes, edges, title=f"the top {k} predicted induction heads and the source head of each")
