"""`circuits analyze`: weight-only prediction from the command line."""

import json

from circuits.cli import main


def test_analyze_demo_writes_json_with_planted_edge(tmp_path, capsys):
    out = tmp_path / "nested" / "prediction.json"
    assert main(["analyze", "demo-induction", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "L0H0" in printed and "L1H0" in printed
    data = json.loads(out.read_text())
    assert data["schema_version"] == 2
    assert data["preprocessing"]["fold_norms"] is True
    assert data["method"] == "kcomp-token-z" and data["settings"]["rope_offsets"] == [8, 512]
    assert data["settings"]["n_tokens"] == 1024 and data["settings"]["token_seed"] == 0
    assert data["source_heads"][1][0] == [0, 0]  # the planted induction head reads the planted previous-token head
    edge = data["edges"][0]
    assert (edge["prev_layer"], edge["prev_head"], edge["layer"], edge["head"]) == (0, 0, 1, 0)
    assert not list(out.parent.glob(".*partial"))


def test_analyze_streams_an_hf_checkpoint(make_llama, tmp_path):
    directory, _ = make_llama("hf")
    out = tmp_path / "p.json"
    assert main(["analyze", str(directory), "--out", str(out), "--no-fold-norms", "--method", "ov-kcomp-eigen"]) == 0
    data = json.loads(out.read_text())
    assert data["method"] == "ov-kcomp-eigen"
    assert len(data["ov_copying"]) == 2 and len(data["ov_copying"][0]) == 8
    assert data["preprocessing"]["fold_norms"] is False


def test_analyze_missing_model_is_one_clear_error(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "no such file" in err
