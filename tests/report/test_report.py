"""`circuits report` / `circuits.report`: schema, renderings, CLI errors, and the real model."""

import json

import numpy as np
import pytest
from helpers import arange_llama, write_hf_checkpoint

from circuits.cli import main
from circuits.report.experiment import CircuitReport, report


@pytest.fixture(scope="module")
def demo_report():
    return report("demo-induction", show_progress=False)


def test_schema_round_trip(demo_report):
    text = demo_report.to_json()
    again = CircuitReport.from_json(text)
    assert again.to_json() == text
    assert again.validation.confirmed == [(1, 0)] and again.top_predicted()[0][:2] == (1, 0)
    np.testing.assert_allclose(again.validation.prefix_matching, demo_report.validation.prefix_matching, atol=1e-6)
    data = json.loads(text)
    data["schema_version"] = 99
    with pytest.raises(ValueError, match="schema version 99"):
        CircuitReport.from_dict(data)


def test_html_is_self_contained_with_heatmaps_and_graph(demo_report):
    page = demo_report.to_html()
    for figure in ("heatmap-predicted", "heatmap-ov", "heatmap-prefix", "heatmap-previous", "heatmap-copying", "circuit-graph"):
        assert f'id="{figure}"><svg' in page, figure
    assert "<script" not in page and "<link" not in page and "src=" not in page  # nothing fetched from a network
    assert "L1H0" in page and "L0H0" in page
    weight_only = report("demo-induction", validate=False, show_progress=False)
    assert weight_only.validation is None and "heatmap-prefix" not in weight_only.to_html()


def test_html_renders_markdown_and_is_deterministic(demo_report):
    page = demo_report.to_html()
    assert "**" not in page and "<strong>predicted induction</strong>" in page  # no literal Markdown
    assert "<li><strong>single-head ablation</strong>" in page and "lation losses" not in page.replace("Ablation losses", "")
    assert '<figure id="scatter"><svg' in page and page.count("<table>") == 5
    assert "<title>L1H0: " in page  # heat-map cells name their head and score on hover
    assert report("demo-induction", show_progress=False).to_html() == page  # same bytes every run


def test_report_names_measured_heads_provenance_and_all_ablations(demo_report):
    text = demo_report.to_markdown()
    assert "## Top 1 measured induction heads (prefix matching)" in text and "| 1 | L1H0 | " in text
    assert demo_report.provenance["source"] == "demo-induction" and "planted demo" in demo_report.provenance["format"]
    assert "Weights: demo-induction; planted demo model" in text
    v = demo_report.validation
    assert v.measured_top_ablated_loss > v.ablation.clean_loss + 1.0  # the planted head carries the task
    assert "the 1 heads of highest measured prefix matching" in text


def test_markdown_lists_heads_with_both_scores(demo_report):
    text = demo_report.to_markdown()
    assert "| 1 | L1H0 | " in text and "| yes |" in text
    assert "induction edges knocked out" in text


def test_cli_writes_three_files_and_summarises(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", "demo-induction", "--validate", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md"]
    printed = capsys.readouterr().out
    assert "confirmed 1 of the top 1" in printed and "Zero-ablating all 1 predicted heads" in printed
    assert main(["report", "demo-induction", "--out", str(out)]) == 0  # rewriting an existing report
    assert json.loads((out / "report.json").read_text())["validation"] is None
    assert not list(tmp_path.glob(".*partial*"))


def run_failing(args, capsys) -> str:
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "fix" in error.lower()
    return error


def test_cli_errors_name_cause_and_fix_and_write_nothing(tmp_path, capsys, monkeypatch):
    out = tmp_path / "never"
    tensors, config = arange_llama(n_heads=4, n_kv_heads=2, head_dim=4, d_model=16)
    write_hf_checkpoint(tmp_path / "llama", tensors, config)
    write_hf_checkpoint(tmp_path / "gpt2", tensors, {**config, "architectures": ["GPT2LMHeadModel"]})

    assert "unknown architecture ['GPT2LMHeadModel']" in run_failing(["report", str(tmp_path / "gpt2"), "--out", str(out)], capsys)
    assert "no such file" in run_failing(["report", str(tmp_path / "missing"), "--out", str(out)], capsys)
    mesh_error = run_failing(["report", str(tmp_path / "llama"), "--validate", "--mesh", "data=1,model=8", "--out", str(out)], capsys)
    assert "2 KV heads" in mesh_error or "kv heads" in mesh_error.lower()

    import circuits.world_errors

    monkeypatch.setattr(circuits.world_errors, "available_memory_bytes", lambda: (1000, "available"))
    memory_error = run_failing(["report", str(tmp_path / "llama"), "--validate", "--out", str(out)], capsys)
    assert "needs about" in memory_error and "without --validate" in memory_error
    assert not out.exists() and not list(tmp_path.glob(".never*"))


@pytest.mark.network
def test_real_model_report_contains_the_confirmed_heads(smollm2_report):
    out = smollm2_report  # the README's main job, on the default model
    data = json.loads((out / "report.json").read_text())
    validation = data["validation"]
    assert data["config"]["n_layers"] == 30 and validation["confirmed"]
    prefix = np.asarray(validation["prefix_matching"])
    markdown = (out / "report.md").read_text()
    for layer, head in validation["confirmed"]:
        assert prefix[layer, head] >= validation["confirm_threshold"]
        assert f"L{layer}H{head}" in markdown
    assert validation["ablation"]["ablated_loss"] - validation["ablation"]["clean_loss"] > 1.0


def test_circuits_report_is_callable_and_still_a_package():
    import circuits
    import circuits.report.render  # the package's modules stay importable

    result = circuits.report("demo-induction", validate=False, show_progress=False)
    assert isinstance(result, CircuitReport) and result.top_predicted()[0][:2] == (1, 0)
    assert callable(circuits.report) and circuits.report.render.report_markdown(result).startswith("# Induction circuits")


def test_prefix_share_report_puts_predicted_on_the_measured_scale_and_names_misses(tmp_path):
    """``circuits report --method prefix-share``: predicted scores are shares in [0, 1], the figures say so, and the
    summary names the misses (here none: the demo's one induction head is predicted and measured first)."""
    out = tmp_path / "report"
    assert main(["report", "demo-induction", "--validate", "--method", "prefix-share", "--out", str(out)]) == 0
    data = json.loads((out / "report.json").read_text())
    predicted = np.asarray(data["predicted_induction"], np.float64)
    assert data["method"] == "prefix-share" and ((predicted >= 0) & (predicted <= 1)).all()
    markdown, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "predicted and measured share one scale" in markdown
    assert "Misses: predicted but not measured as induction heads: none; measured among the top 1 but not predicted there: none." in markdown
    assert "predicted induction (weights only, predicted attention share)" in page
    scatter = page[page.index("predicted induction vs measured prefix matching"):]
    assert 'class="diagonal"' in scatter and ">1</text>" in scatter  # a calibration plot: x runs 0 to 1 as y does
    assert "(weights only, method prefix-share): the predicted prefix-matching score itself" in markdown
    assert "method kcomp-token-zgain" not in markdown and "log colour scale" not in page and "linear scale, 0 to 1" in page


def test_a_relative_score_report_says_its_scale_is_relative(tmp_path):
    """``--method kcomp-token-zgain`` (the default before ``prefix-share``): the report records the method, explains its
    score as relative (order and ratios, not size) and colours it on a log scale, never on the measured 0-1 scale."""
    out = tmp_path / "report"
    assert main(["report", "demo-induction", "--method", "kcomp-token-zgain", "--out", str(out)]) == 0
    data = json.loads((out / "report.json").read_text())
    assert data["method"] == "kcomp-token-zgain" and np.asarray(data["predicted_induction"]).max() > 1.0
    markdown, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "its order and ratios carry the prediction, not its size" in markdown
    assert "(weights only, method kcomp-token-zgain): the strongest edge from an earlier head j" in markdown
    assert "log colour scale" in page and "linear scale, 0 to 1" not in page and "predicted and measured share one scale" not in markdown
    assert 'class="diagonal"' not in page  # no predicted = measured line for a relative score
