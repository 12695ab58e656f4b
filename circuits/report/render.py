"""Markdown and self-contained HTML renderings of a :class:`~circuits.report.CircuitReport`.

The report is written once, as Markdown sections; the HTML page renders those sections with
markdown-it-py and places them, with inline SVG figures, in a Jinja2 template.
"""

from __future__ import annotations

import jinja2
import numpy as np
from markdown_it import MarkdownIt
from markupsafe import Markup

from circuits.analysis.methods import METHOD_HELP, SCORE_AXES, SCORE_UNITS, SHARE_METHODS
from circuits.svg_figures import ColourScale, ScatterPoint, head_heatmap, head_ranks, induction_graph, prediction_scatter
from circuits.utils import head_label

PREDICTED_GUIDE = {
    "kcomp-token-zgain": """\
* **predicted induction** (weights only, method kcomp-token-zgain): the strongest edge from an earlier head j,
  K-composition of j's OV into this head's RoPE-averaged QK circuit (in units of the random baseline) x the
  token-level prefix-matching z-score x its logit gain (does a query token attend to keys whose previous token,
  moved there by j, is the same token, how reliably (z) and by how many nats (gain)? computed on token
  stand-ins: embeddings through the MLP blocks alone); 0 = no induction circuit predicted.
* **source head** (weights only): the earlier head j of that strongest edge, the predicted previous-token head.
""",
    "prefix-share": """\
* **predicted induction** (weights only, method prefix-share): the predicted prefix-matching score itself, on the
  measured scale: the expected share of attention on the matching key in the measured context (BOS + 50 random
  tokens x 2), where that key gains, from every earlier head j, j's predicted previous-token share x its logit
  gain in nats, and from the query side what earlier induction heads copy into the query (computed on token
  stand-ins that receive mean-field attention outputs; BOS exact).
* **source head** (weights only): the earlier head j that adds the most to that gain, the predicted previous-token head.
""",
}
"""The first bullets of the reading guide, for the methods that have their own; others get their METHOD_HELP line."""

READING_GUIDE = """\
* **OV copying** (weights only, a diagnostic): Re(sum of eigenvalues) / sum |eigenvalues| of the embed -> unembed
  OV circuit, in [-1, 1]. Not part of the prediction: in deep models induction heads write into later layers,
  and this score is anti-correlated with induction.
* **prefix matching** (measured): share of attention from each later-repeat token to the token after its earlier
  occurrence; uniform attention scores about 1/position, a clean induction head close to 1.
* **previous token** (measured): share of attention on the position just before.
* **copying** (measured): share of the head's positive direct logits (over the tokens in context) that lands on
  the token it attends to most.
* **confirmed**: a top predicted head whose measured prefix-matching score reaches the threshold.
* Ablation losses are mean next-token losses (nats) on the later repeats; random heads: mean +- std over seeds.
* **single-head ablation**: the loss increase of zero-ablating one head, estimated for every head from one
  forward and one backward (attribution patching), then computed exactly for the 2k heads it ranks highest."""


def _number(value, spec: str) -> str:
    """A statistic for the page, or why it has no value (a correlation of constant scores is undefined)."""
    if value is None or not np.isfinite(value):
        return "undefined (measured scores are constant)"
    return format(value, spec)


def head_rows(report) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the top-k predicted heads, with their measured scores when validated."""
    v = report.validation
    header = ["rank", "head", "predicted induction", "source head", "OV copying"]
    if v is not None:
        header += ["prefix matching", "previous token", "copying", "confirmed"]
    rows = []
    for rank, (layer, head, score) in enumerate(report.top_predicted(), 1):
        row = [str(rank), head_label(layer, head), f"{score:.3f}", head_label(*report.source_of(layer, head)),
               f"{report.ov_copying[layer, head]:+.3f}"]
        if v is not None:
            row += [f"{v.prefix_matching[layer, head]:.3f}", f"{v.previous_token[layer, head]:.3f}",
                    f"{v.copying[layer, head]:.3f}", "yes" if (layer, head) in v.confirmed else "no"]
        rows.append(row)
    return header, rows


def edge_rows(report) -> tuple[list[str], list[list[str]]]:
    v = report.validation
    header = ["previous-token head", "induction head", "strength", "K-composition / baseline", "token z", "logit gain (nats)"]
    if v is not None:
        header += ["measured previous token (of the first head)"]
    rows = []
    for e in report.edges[: max(10, report.k)]:
        row = [head_label(e.prev_layer, e.prev_head), head_label(e.layer, e.head), f"{e.score:.3f}",
               f"{e.k_composition_ratio:.2f}x", f"{e.token_term:+.3f}", f"{e.token_gain:+.3f}"]
        if v is not None:
            row.append(f"{v.previous_token[e.prev_layer, e.prev_head]:.3f}")
        rows.append(row)
    return header, rows


def ablation_rows(report) -> tuple[list[str], list[list[str]]]:
    a = report.validation.ablation
    header = ["condition", "loss on later repeats (nats)", "increase"]
    rows = [
        ["nothing ablated", f"{a.clean_loss:.3f}", "-"],
        [f"top {a.k} predicted heads zero-ablated", f"{a.ablated_loss:.3f}", f"{a.increase:+.3f}"],
        [f"{a.k} random heads zero-ablated ({len(a.random_seeds)} seeds)",
         f"{a.clean_loss + a.random_increase:.3f} +- {a.random_increase_std:.3f}", f"{a.random_increase:+.3f}"],
        [f"induction edges knocked out in the top {a.k} predicted heads", f"{report.validation.knockout_loss:.3f}",
         f"{report.validation.knockout_loss - a.clean_loss:+.3f}"],
    ]
    return header, rows


def single_head_rows(report) -> tuple[list[str], list[list[str]]]:
    """(header, rows): the heads whose single-head ablation the gradient estimate ranks highest, checked exactly."""
    v = report.validation
    header = ["head", "estimated increase (gradient)", "exact increase", "prefix matching", "predicted rank"]
    ranks = {(layer, head): rank for rank, (layer, head, _) in enumerate(report.top_predicted(), 1)}
    rows = [[head_label(layer, head), f"{v.head_effects.estimated[layer, head]:+.3f}", f"{increase:+.3f}",
             f"{v.prefix_matching[layer, head]:.3f}", str(ranks.get((layer, head), "-"))]
            for layer, head, increase in v.head_effects.exact]
    return header, rows


def measured_rows(report) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the k heads with the highest measured prefix matching, with their predicted rank."""
    v = report.validation
    order = {(layer, head): rank for rank, (layer, head, _) in enumerate(report.all_predicted(), 1)}
    header = ["rank", "head", "prefix matching", "previous token", "copying", "predicted induction", "predicted rank"]
    rows = [[str(rank), head_label(layer, head), f"{score:.3f}", f"{v.previous_token[layer, head]:.3f}",
             f"{v.copying[layer, head]:.3f}", f"{report.predicted_induction[layer, head]:.3f}", str(order[(layer, head)])]
            for rank, (layer, head, score) in enumerate(v.measured_top(report.k), 1)]
    return header, rows


def _largest_exact_ablations(report, shown: int = 3) -> str:
    """The heads whose exact single-head ablation costs the most, named whether or not they were predicted."""
    v = report.validation
    ranks = head_ranks(report.predicted_induction)
    largest = sorted(v.head_effects.exact, key=lambda effect: -effect[2])[:shown]
    named = [f"{head_label(layer, head)} {increase:+.2f} nats (predicted rank {ranks[layer, head]}, prefix matching "
             f"{v.prefix_matching[layer, head]:.2f})" for layer, head, increase in largest]
    unpredicted = [head_label(layer, head) for layer, head, _ in largest if ranks[layer, head] > report.k]
    return (f"Largest exact single-head ablation effects (of the {len(v.head_effects.exact)} heads the gradient estimate ranks "
            f"highest): {'; '.join(named)}" + (f"; not among the top {report.k} predicted: {', '.join(unpredicted)}." if unpredicted else "."))


def summary_lines(report) -> list[str]:
    """The report's opening lines: what was analysed and how, and (validated) the headline figures."""
    c, p, settings, origin = report.config, report.preprocessing, report.settings, report.provenance
    described = f" ({origin['description']})" if "description" in origin else ""
    lines = [
        f"Weights: {origin['source']}{described}; {origin['format']}; analysed in {origin['analysed_in']}.",
        f"{c['architecture']}: {c['n_layers']} layers x {c['n_heads']} query heads ({c['n_kv_heads']} KV heads), "
        f"d_model {c['d_model']}, vocabulary {c['vocab_size']}.",
        f"Prediction method {report.method}: RoPE offsets {settings['rope_offsets']}, {settings['n_tokens']} token "
        f"stand-ins (seed {settings['token_seed']}; {settings['standins']}).",
        f"Products in {p['accumulation_dtype']}; RMSNorm gains {'folded' if p['fold_norms'] else 'not folded'}; unembedding "
        f"{'centred' if p['center_unembed'] else 'not centred'}; K-composition random baseline "
        f"{report.k_composition_baseline['mean']:.4f} +- {report.k_composition_baseline['std']:.4f}.",
        f"Predicted induction is {SCORE_UNITS.get(report.method, 'a relative score')}"
        + (": predicted and measured share one scale." if report.method in SHARE_METHODS else
           ": its order and ratios carry the prediction, not its size; 0 means no induction circuit is predicted."),
    ]
    v = report.validation
    if v is not None:
        a = v.ablation
        lines += [
            f"Measured on {v.data}.",
            f"{len(v.confirmed)} of the top {report.k} predicted heads are confirmed induction heads (prefix matching >= "
            f"{v.confirm_threshold}); precision@{report.k} {_number(v.precision_at_k, '.2f')}; Spearman correlation of predicted "
            f"induction with prefix matching over all heads {_number(v.spearman, '.3f')}.",
            f"Zero-ablating all {report.k} top predicted heads (confirmed or not) raises the loss on the repeats by "
            f"{a.increase:+.2f} nats; {report.k} random heads: {a.random_increase:+.2f}; the {report.k} heads of highest "
            f"measured prefix matching: {v.measured_top_ablated_loss - a.clean_loss:+.2f}.",
            f"{v.previous_token_sources} of the top {report.k} predicted heads read from a predicted source head that is a "
            f"measured previous-token head (previous token >= {v.previous_token_threshold}).",
            _largest_exact_ablations(report),
            _misses(report),
        ]
    return lines


def _misses(report) -> str:
    """The top-k predicted heads that do not measure as induction heads, and the top-k measured heads the prediction
    ranks below k, by name."""
    v = report.validation
    predicted_rank = head_ranks(report.predicted_induction)
    wrong = [head_label(layer, head) for layer, head, _ in report.top_predicted() if (layer, head) not in v.confirmed]
    missed = [f"{head_label(layer, head)} (predicted rank {predicted_rank[layer, head]})" for layer, head, _ in v.measured_top(report.k)
              if predicted_rank[layer, head] > report.k]
    return (f"Misses: predicted but not measured as induction heads: {', '.join(wrong) or 'none'}; measured among the top "
            f"{report.k} but not predicted there: {', '.join(missed) or 'none'}.")


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_sections(report) -> list[tuple[str, str]]:
    """(title, Markdown body) of every section after the summary, in order."""
    sections = [(f"Top {report.k} predicted induction heads (weights only)", _markdown_table(*head_rows(report)))]
    if report.validation is not None:
        sections.append((f"Top {report.k} measured induction heads (prefix matching)", _markdown_table(*measured_rows(report))))
    sections.append(("Predicted previous-token head -> induction head edges", _markdown_table(*edge_rows(report))))
    if report.validation is not None:
        sections.append(("Ablation and knockout", _markdown_table(*ablation_rows(report))))
        sections.append(("Single-head ablation (ordered by the gradient estimate, checked exactly)",
                         _markdown_table(*single_head_rows(report))))
    sections.append(("How to read the scores", _predicted_guide(report.method) + READING_GUIDE))
    return sections


def _predicted_guide(method: str) -> str:
    """The reading guide's bullets on the predicted score and the source head, for ``method``."""
    return PREDICTED_GUIDE.get(method, f"* **predicted induction** (weights only, method {method}): {METHOD_HELP[method]}.\n"
                                       "* **source head** (weights only): the earlier head of this head's strongest edge.\n")


def report_markdown(report) -> str:
    parts = [f"# Induction circuits in {report.model}", "\n".join(f"- {line}" for line in summary_lines(report))]
    for title, body in markdown_sections(report):
        parts += [f"## {title}", body]
    return "\n\n".join(parts) + "\n"


STYLE = """body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f4f4f4}tbody tr:nth-child(even){background:#fafafa}.figures{display:flex;flex-wrap:wrap;gap:1.2em;align-items:flex-start}
.figures figure{margin:0}svg{max-width:100%;height:auto}figcaption{font-size:13px;color:#555}li{margin:.2em 0}rect:hover{stroke:#000;stroke-width:1.5}"""

TEMPLATE = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True).from_string("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Induction circuits: {{ model }}</title><style>{{ style }}</style></head>
<body>
<h1>Induction circuits in {{ model }}</h1>
{{ summary }}
{% if scatter %}
<h2>Predicted against measured</h2>
<figure id="scatter">{{ scatter }}<figcaption>Every head. Red and labelled: the top {{ k }} predicted and the top {{ k }} measured heads.
Hover a point for its head, both scores and both ranks.</figcaption></figure>
{% endif %}
<h2>Layer x head maps</h2>
<p>Hover a cell for its head and score. Predicted induction uses {{ predicted_scale }}; the ablation map shows the
gradient estimate for every head, and outlines the heads whose ablation was
also computed exactly (hover one for both values).</p>
<div class="figures">
{% for id, svg in heatmaps %}<figure id="{{ id }}">{{ svg }}</figure>
{% endfor %}
</div>
<h2>Circuit graph</h2>
<figure id="circuit-graph">{{ graph }}<figcaption>Each of the top {{ k }} predicted induction heads with the
earlier head its score comes from; line width follows the score. Hover a node or an edge for its scores.</figcaption></figure>
{% for title, body in sections %}
<h2>{{ title }}</h2>
{{ body }}
{% endfor %}
</body></html>
""")


def _scatter(report) -> str:
    """Every head, predicted against measured; the top-k of each ranking highlighted and labelled."""
    v, predicted = report.validation, report.predicted_induction
    predicted_rank, measured_rank = head_ranks(predicted), head_ranks(v.prefix_matching)
    highlighted = {(l, h) for l, h, _ in report.top_predicted()} | {(l, h) for l, h, _ in v.measured_top(report.k)}
    points = []
    for layer in range(predicted.shape[0]):
        for head in range(predicted.shape[1]):
            status = ("confirmed" if (layer, head) in v.confirmed else "a miss") if predicted_rank[layer, head] <= report.k else (
                "missed by the prediction" if measured_rank[layer, head] <= report.k else "")
            title = (f"{head_label(layer, head)}: predicted induction {predicted[layer, head]:.4g} (rank {predicted_rank[layer, head]} "
                     f"of {predicted.size}); prefix matching {v.prefix_matching[layer, head]:.3f} (rank {measured_rank[layer, head]})"
                     + (f"; {status}" if status else ""))
            points.append(ScatterPoint(layer, head, float(predicted[layer, head]), float(v.prefix_matching[layer, head]), title,
                                       (layer, head) in highlighted))
    return prediction_scatter(points, title="predicted induction vs measured prefix matching, every head",
                              x_label=f"predicted induction (weights only, {SCORE_AXES[report.method]})", y_label="prefix matching (measured)",
                              log_x=report.method not in SHARE_METHODS and ColourScale.suited(predicted) == "log",
                              on_measured_scale=report.method in SHARE_METHODS)


def report_html(report) -> str:
    """One HTML file with inline CSS and inline SVG figures: viewable offline, the same bytes for the same report."""
    markdown = MarkdownIt("commonmark", {"html": False}).enable("table")
    maps = [("heatmap-predicted", head_heatmap(report.predicted_induction, f"predicted induction (weights, {SCORE_AXES[report.method]})",
                                               scale=ColourScale(0.0, 1.0) if report.method in SHARE_METHODS
                                               else ColourScale.fit(report.predicted_induction, kind="log"))),
            ("heatmap-ov", head_heatmap(report.ov_copying, "OV copying (weights)", scale=ColourScale(-1.0, 1.0), cmap="RdBu_r"))]
    v = report.validation
    scatter = None
    if v is not None:
        unit = ColourScale(0.0, 1.0)
        exact = {(layer, head): f"exact {increase:+.3f} nats" for layer, head, increase in v.head_effects.exact}
        maps += [("heatmap-prefix", head_heatmap(v.prefix_matching, "prefix matching (measured)", scale=unit)),
                 ("heatmap-previous", head_heatmap(v.previous_token, "previous token (measured)", scale=unit)),
                 ("heatmap-copying", head_heatmap(v.copying, "copying (measured)", scale=unit)),
                 ("heatmap-ablation", head_heatmap(v.head_effects.estimated, "single-head ablation: gradient estimate, nats",
                                                   cmap="magma", unit=" (estimate)", outlined=exact))]
        scatter = Markup(_scatter(report))
    summary = "\n".join(f"- {line}" for line in summary_lines(report))
    return TEMPLATE.render(
        model=report.model,
        k=report.k,
        style=Markup(STYLE),
        summary=Markup(markdown.render(summary)),
        scatter=scatter,
        heatmaps=[(key, Markup(svg)) for key, svg in maps],
        predicted_scale=("the measured scores' linear scale, 0 to 1 (it predicts them)" if report.method in SHARE_METHODS
                         else "a log colour scale (its scores span orders of magnitude)"),
        graph=Markup(induction_graph(report.predicted_induction, report.source_heads, report.k, validation=v)),
        sections=[(title, Markup(markdown.render(body))) for title, body in markdown_sections(report)],
    )
