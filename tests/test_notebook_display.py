"""Rich display in notebooks: every result a researcher looks at has a one-line ``repr`` and an HTML view."""

import html

import pytest

import circuits
from circuits.analysis.attention import prefix_matching_scores
from circuits.analysis.induction import predict_induction


@pytest.fixture(scope="module")
def demo():
    return circuits.load("demo-induction", show_progress=False)


def _one_line(text: str) -> bool:
    return "\n" not in text and len(text) < 240


def test_a_model_has_a_short_repr(demo):
    assert _one_line(repr(demo)) and repr(demo).startswith("Transformer(llama: 2 layers x 2 heads (2 KV)")


def test_head_scores_show_as_a_heatmap_naming_each_head(demo):
    scores = prefix_matching_scores(demo)
    assert _one_line(repr(scores)) and "top L1H0" in repr(scores)
    page = scores._repr_html_()
    assert page.startswith("<svg") and page.count("<title>") == 4 and 'data-head="L1H0"' in page


def test_a_prediction_shows_its_top_table_and_graph(demo):
    prediction = predict_induction(demo)
    assert _one_line(repr(prediction)) and "L1H0 <- L0H0" in repr(prediction)
    page = prediction._repr_html_()
    assert "<table>" in page and 'class="node target" data-head="L1H0"' in page and 'data-source="L0H0" data-target="L1H0"' in page


def test_a_report_shows_its_own_page():
    result = circuits.report("demo-induction", show_progress=False)
    assert _one_line(repr(result)) and "1 of 1 confirmed" in repr(result)
    page = result._repr_html_()
    assert page.startswith("<iframe srcdoc=") and html.escape(result.to_html()) in page
