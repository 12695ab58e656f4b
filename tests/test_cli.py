"""The command line: `circuits analyze`, flags, output directories, interrupts and file modes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from circuits.cli import main


def test_analyze_demo_writes_json_with_planted_edge(tmp_path, capsys):
    out = tmp_path / "prediction.json"
    assert main(["analyze", "demo-induction", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "L0H0" in printed and "L1H0" in printed
    data = json.loads(out.read_text())
    assert data["schema_version"] == 3
    assert data["preprocessing"]["fold_norms"] is True
    assert data["method"] == "prefix-share" and data["settings"]["rope_offsets"] == [8, 512]
    assert data["settings"]["n_tokens"] == 1024 and data["settings"]["token_seed"] == 0
    assert data["source_heads"][1][0] == [0, 0]  # the planted induction head reads the planted previous-token head
    edge = data["edges"][0]
    assert (edge["prev_layer"], edge["prev_head"], edge["layer"], edge["head"]) == (0, 0, 1, 0)
    assert sorted(p.name for p in out.parent.iterdir()) == ["prediction.json"]


def test_analyze_with_bounded_pairs_reports_the_same_and_records_it(tmp_path):
    outputs = {pairs: tmp_path / f"{pairs}.json" for pairs in ("all", "bounded")}
    for pairs, out in outputs.items():
        assert main(["analyze", "demo-induction", "--pairs", pairs, "--out", str(out)]) == 0
    full, bounded = (json.loads(out.read_text()) for out in outputs.values())
    assert full["settings"]["pairs"] == "all" and bounded["settings"]["pairs"] == "bounded"
    np.testing.assert_allclose(bounded["predicted_induction"], full["predicted_induction"], atol=1e-4)
    assert [[e[key] for key in ("prev_layer", "prev_head", "layer", "head")] for e in bounded["edges"]] == \
        [[e[key] for key in ("prev_layer", "prev_head", "layer", "head")] for e in full["edges"]]
    np.testing.assert_allclose([e["score"] for e in bounded["edges"]], [e["score"] for e in full["edges"]], rtol=1e-4)
    assert bounded["source_heads"][1][0] == [0, 0]


def test_an_output_in_a_missing_folder_is_refused_before_the_work(tmp_path, capsys):
    for args in (["analyze", "demo-induction", "--out", str(tmp_path / "typo" / "p.json")],
                 ["report", "demo-induction", "--out", str(tmp_path / "typo" / "report")],
                 ["convert", "demo-induction", str(tmp_path / "typo" / "cache")]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"the folder {tmp_path / 'typo'} does not exist" in err and "mkdir -p" in err
    assert list(tmp_path.iterdir()) == []


def _run_cold(*args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """(the finished ``circuits ARGS`` in a fresh interpreter, the heavy libraries it imported)."""
    code = ("import sys, runpy; sys.argv = ['circuits', *sys.argv[1:]]\n"
            "try: runpy.run_module('circuits.cli', run_name='__main__')\n"
            "except SystemExit: pass\n"
            "heavy = ('jax', 'flax', 'optax', 'orbax', 'matplotlib', 'scipy', 'ml_dtypes')\n"
            "print('imported:', ' '.join(m for m in heavy if m in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    return done, done.stderr.rsplit("imported:", 1)[1].split()


@pytest.mark.parametrize("args", [("--help",), ("--version",), ("analyze", "--help"), ("report", "--help")])
def test_help_and_version_import_no_heavy_library(args):
    done, imported = _run_cold(*args)
    assert "circuits" in done.stdout and imported == []


def test_info_reads_metadata_without_jax(make_llama, tmp_path):
    directory, _ = make_llama("hf")
    done, imported = _run_cold("info", str(directory))
    assert "parameters" in done.stdout and "loads as" in done.stdout, done.stderr
    assert imported == []


@pytest.mark.parametrize("args, cause", [
    (["analyze", "--top", "0"], "argument --top: 0 is not a positive integer"),
    (["anlyze"], "invalid choice: 'anlyze'"),
    ([], "the following arguments are required: COMMAND"),
    (["report", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_usage_mistakes_are_one_line_with_the_hint(args, cause, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and cause in err and "--help" in err


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


@pytest.mark.parametrize("args, message", [
    (["info", "demo-induction", "--dtype", "int8"], "invalid choice: 'int8'"),
    (["report", "demo-induction", "--dtype", "float64"], "invalid choice: 'float64'"),
    (["analyze", "demo-induction", "--top", "-1"], "-1 is not a positive integer"),
    (["analyze", "demo-induction", "--top", "0"], "0 is not a positive integer"),
    (["analyze", "demo-induction", "--max-pairs", "-5"], "-5 is not a positive integer"),
    (["report", "demo-induction", "--top", "x"], "invalid _positive value"),
])
def test_bad_flags_are_refused_at_parse_time(args, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_top_above_the_head_count_is_one_clear_error(tmp_path, capsys):
    assert main(["analyze", "demo-induction", "--top", "9999"]) == 2
    assert "more than the model's" in capsys.readouterr().err
    assert main(["report", "demo-induction", "--top", "9999", "--out", str(tmp_path / "r")]) == 2
    assert "fix: choose 1 to" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_out_is_checked_before_the_work(tmp_path, capsys, monkeypatch):
    import circuits.report.experiment

    monkeypatch.setattr(circuits.report.experiment, "predict_induction", lambda *a, **k: pytest.fail("work started"))
    (tmp_path / "file").write_text("x")
    assert main(["report", "demo-induction", "--out", str(tmp_path / "file")]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert main(["report", "demo-induction", "--out", str(tmp_path / "mine")]) == 2
    assert "already holds other files (notes.txt)" in capsys.readouterr().err
    assert main(["report", "demo-induction", "--out", str(tmp_path / "file" / "out")]) == 2  # under a file: never writable
    assert "not a writable directory" in capsys.readouterr().err
    assert main(["analyze", "demo-induction", "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path, capsys, monkeypatch):
    import circuits.analysis.induction

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(circuits.analysis.induction, "predict_induction", interrupted)
    assert main(["analyze", "demo-induction", "--out", str(tmp_path / "p.json")]) == 130
    assert capsys.readouterr().err.strip() == "interrupted; nothing was written"
    assert list(tmp_path.iterdir()) == []


def test_written_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        assert main(["analyze", "demo-induction", "--out", str(tmp_path / "p.json")]) == 0
        assert main(["report", "demo-induction", "--validate", "--out", str(tmp_path / "rep")]) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "p.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "rep").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "rep" / "report.json").stat().st_mode & 0o777 == 0o644


def test_report_into_an_existing_report_swaps_the_set_as_a_whole(tmp_path, monkeypatch):
    out = tmp_path / "rep"
    assert main(["report", "demo-induction", "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import circuits.utils

    real_replace = os.replace

    calls = []

    def interrupted(source, destination):
        calls.append(destination)
        if str(destination) == str(out) and len([c for c in calls if str(c) == str(out)]) == 1:
            raise KeyboardInterrupt  # killed just before the new set is renamed in
        return real_replace(source, destination)

    monkeypatch.setattr(circuits.utils.os, "replace", interrupted)
    assert main(["report", "demo-induction", "--validate", "--out", str(out)]) == 130
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old set, whole, back in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]  # nothing left beside it


def test_json_is_strict_and_non_finite_scores_are_null():
    import numpy as np

    from circuits.utils import json_text, rounded_list

    assert rounded_list(np.array([[0.1234567, np.nan], [np.inf, -np.inf]])) == [[0.123457, None], [None, None]]
    text = json_text({"scores": np.array([1.0, np.nan]), "value": np.float32(0.5)})
    assert json.loads(text) == {"scores": [1.0, None], "value": 0.5} and "NaN" not in text
    assert json.loads(json_text({"undefined": float("nan"), "nested": [float("inf")]})) == {"undefined": None, "nested": [None]}
