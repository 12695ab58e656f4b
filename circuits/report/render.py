"""Markdown and self-contained HTML renderings of a :class:`~circuits.report.CircuitReport`."""

from __future__ import annotations

import html

from circuits.plots import circuit_graph, head_heatmap

READING_GUIDE = """\
* **predicted induction** (weights only, method kcomp-token-z): the strongest edge from an earlier head j,
  K-composition of j's OV into this head's RoPE-averaged QK circuit (in units of the random baseline) x the
  positive part of the token-level prefix-matching z-score (do query tokens match keys whose previous token,
  moved by j, is the same token? computed on token stand-ins: embeddings through the MLP blocks alone);
  0 = no induction circuit predicted.
* **source head** (weights only): the earlier head j of that strongest edge, the predicted previous-token head.
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


def _head(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def head_rows(report) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the top-k predicted heads, with their measured scores when validated."""
    v = report.validation
    header = ["rank", "head", "predicted induction", "source head", "OV copying"]
    if v is not None:
        header += ["prefix matching", "previous token", "copying", "confirmed"]
    rows = []
    for rank, (layer, head, score) in enumerate(report.top_predicted(), 1):
        row = [str(rank), _head(layer, head), f"{score:.3f}", _head(*report.source_of(layer, head)),
               f"{report.ov_copying[layer, head]:+.3f}"]
        if v is not None:
            row += [f"{v.prefix_matching[layer, head]:.3f}", f"{v.previous_token[layer, head]:.3f}",
                    f"{v.copying[layer, head]:.3f}", "yes" if (layer, head) in v.confirmed else "no"]
        rows.append(row)
    return header, rows


def edge_rows(report) -> tuple[list[str], list[list[str]]]:
    v = report.validation
    header = ["previous-token head", "induction head", "strength", "K-composition / baseline", "token term"]
    if v is not None:
        header += ["measured previous token (of the first head)"]
    rows = []
    for e in report.edges[: max(10, report.k)]:
        row = [_head(e.prev_layer, e.prev_head), _head(e.layer, e.head), f"{e.score:.3f}",
               f"{e.k_composition_ratio:.2f}x", f"{e.token_term:+.3f}"]
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
    rows = [[_head(layer, head), f"{v.head_effects.estimated[layer, head]:+.3f}", f"{increase:+.3f}",
             f"{v.prefix_matching[layer, head]:.3f}", str(ranks.get((layer, head), "-"))]
            for layer, head, increase in v.head_effects.exact]
    return header, rows


def _summary_lines(report) -> list[str]:
    c = report.config
    p = report.preprocessing
    settings = report.settings
    lines = [
        f"Prediction method {report.method}: RoPE offsets {settings['rope_offsets']}, {settings['n_tokens']} token "
        f"stand-ins (seed {settings['token_seed']}; {settings['standins']}).",
        f"{c['architecture']}: {c['n_layers']} layers x {c['n_heads']} query heads ({c['n_kv_heads']} KV heads), "
        f"d_model {c['d_model']}, vocabulary {c['vocab_size']}.",
        f"Weights: {p['weights_dtype']}, {p['accumulation_dtype']} accumulation; RMSNorm gains "
        f"{'folded' if p['fold_norms'] else 'not folded'}; unembedding {'centred' if p['center_unembed'] else 'not centred'}; "
        f"K-composition random baseline {report.k_composition_baseline['mean']:.4f} +- {report.k_composition_baseline['std']:.4f}.",
    ]
    v = report.validation
    if v is not None:
        lines += [
            f"Measured: {v.data}.",
            f"{len(v.confirmed)} of the top {report.k} predicted heads confirmed (prefix matching >= {v.confirm_threshold}); "
            f"Spearman correlation of predicted induction with prefix matching over all heads {v.spearman:.3f}; "
            f"precision@{report.k} {v.precision_at_k:.2f}.",
            f"{v.previous_token_sources} of the top {report.k} predicted heads read from a predicted source head that is a "
            f"measured previous-token head (previous token >= {v.previous_token_threshold}).",
        ]
    return lines


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def report_markdown(report) -> str:
    parts = [f"# Induction circuits in {report.model}", "\n".join(f"- {line}" for line in _summary_lines(report))]
    parts += [f"## Top {report.k} predicted induction heads", _markdown_table(*head_rows(report))]
    parts += ["## Predicted previous-token head -> induction head edges", _markdown_table(*edge_rows(report))]
    if report.validation is not None:
        parts += ["## Ablation and knockout", _markdown_table(*ablation_rows(report))]
        parts += ["## Single-head ablation (ordered by the gradient estimate, checked exactly)", _markdown_table(*single_head_rows(report))]
    parts += ["## How to read the scores", READING_GUIDE]
    return "\n\n".join(parts) + "\n"


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f4f4f4}.figures{display:flex;flex-wrap:wrap;gap:1em}.figures figure{margin:0}
li{margin:.2em 0}"""


def report_html(report) -> str:
    """One HTML file with inline CSS and inline SVG figures: viewable offline."""
    n_layers, n_heads = report.predicted_induction.shape
    maps = [("heatmap-predicted", head_heatmap(report.predicted_induction, "predicted induction (weights)", vmin=0)),
            ("heatmap-ov", head_heatmap(report.ov_copying, "OV copying (weights)", vmin=-1, vmax=1))]
    v = report.validation
    if v is not None:
        maps += [("heatmap-prefix", head_heatmap(v.prefix_matching, "prefix matching (measured)", vmin=0, vmax=1)),
                 ("heatmap-previous", head_heatmap(v.previous_token, "previous token (measured)", vmin=0, vmax=1)),
                 ("heatmap-copying", head_heatmap(v.copying, "copying (measured)", vmin=0, vmax=1)),
                 ("heatmap-ablation", head_heatmap(v.head_effects.estimated, "single-head ablation, nats (gradient estimate)"))]
    edges = [(e.prev_layer, e.prev_head, e.layer, e.head, e.score) for e in report.edges[: max(10, report.k)]]
    graph = circuit_graph(edges, n_layers, n_heads, "predicted previous-token -> induction edges")
    figures = "".join(f'<figure id="{key}">{svg}</figure>' for key, svg in maps)
    sections = [
        f"<h1>Induction circuits in {html.escape(report.model)}</h1>",
        "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in _summary_lines(report)) + "</ul>",
        f'<h2>Layer x head maps</h2><div class="figures">{figures}</div>',
        f'<h2>Circuit graph</h2><figure id="circuit-graph">{graph}</figure>',
        f"<h2>Top {report.k} predicted induction heads</h2>" + _html_table(*head_rows(report)),
        "<h2>Predicted edges</h2>" + _html_table(*edge_rows(report)),
    ]
    if v is not None:
        sections.append("<h2>Ablation and knockout</h2>" + _html_table(*ablation_rows(report)))
        sections.append("<h2>Single-head ablation (ordered by the gradient estimate, checked exactly)</h2>"
                        + _html_table(*single_head_rows(report)))
    guide = "".join(f"<li>{html.escape(line[2:].strip())}</li>" for line in READING_GUIDE.split("\n* "))
    sections.append(f"<h2>How to read the scores</h2><ul>{guide}</ul>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Induction circuits: {html.escape(report.model)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>")
