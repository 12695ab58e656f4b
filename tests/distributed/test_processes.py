"""Multi-process runs with real processes: 2 processes x 2 fake CPU devices, gloo collectives, started by
``python -m circuits.launch``; each result is compared with the same program in one process."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

PROGRAM = Path(__file__).with_name("program.py")


def _env(devices: int | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CIRCUITS_") or key == "CIRCUITS_CACHE"}
    flags = [flag for flag in env.get("XLA_FLAGS", "").split() if "device_count" not in flag]
    if devices is not None:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    return env


def launch(*command: str, processes: int = 2, timeout: float = 300, grace: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "circuits.launch", "-n", str(processes), "--devices-per-process", "2", "--grace", str(grace), "--", *command],
        env=_env(), capture_output=True, text=True, timeout=timeout,
    )


def alone(*command: str, devices: int = 4) -> subprocess.CompletedProcess:
    return subprocess.run(list(command), env=_env(devices), capture_output=True, text=True, timeout=300)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error:" in line]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 4-layer Llama (8 query heads, 4 KV heads) saved as one safetensors file."""
    import torch
    import transformers
    from helpers import randomize_torch_model, tiny_llama_config

    torch.manual_seed(0)
    config = tiny_llama_config(vocab_size=4096, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                               num_attention_heads=8, num_key_value_heads=4)
    model = transformers.LlamaForCausalLM(config).eval()
    randomize_torch_model(model, 0)
    directory = tmp_path_factory.mktemp("distributed") / "llama"
    model.save_pretrained(directory)
    return directory


def test_two_processes_give_the_one_process_results_and_each_reads_its_share(checkpoint, tmp_path):
    run = launch(sys.executable, str(PROGRAM), str(checkpoint), str(tmp_path / "two"), "data=1,model=4")
    assert run.returncode == 0, run.stderr[-3000:]
    single = alone(sys.executable, str(PROGRAM), str(checkpoint), str(tmp_path / "one"), "data=1,model=4")
    assert single.returncode == 0, single.stderr[-3000:]
    two, one = np.load(tmp_path / "two" / "results.npz"), np.load(tmp_path / "one" / "results.npz")
    for name in ("logits", "losses", "predicted", "k_composition", "sources", "share_predicted", "share_sources", "icl_accuracy",
                 "icl_pattern_matching"):
        np.testing.assert_allclose(two[name], one[name], rtol=0, atol=1e-5 * max(1.0, np.abs(one[name]).max()), err_msg=name)
    assert np.isfinite(two["losses"]).all() and two["losses"].std() > 0  # single heads change the loss differently
    assert (tmp_path / "two" / "writer.txt").read_text() == "0"  # the atomic writer wrote in process 0 only
    reads = [json.loads((tmp_path / "two" / f"read-{p}.json").read_text()) for p in (0, 1)]
    whole = json.loads((tmp_path / "one" / "read-0.json").read_text())
    assert whole["processes"] == 1 and whole["blocks"] == whole["parameters"]
    norms = 4 * 2 * 128 * 4 + 128 * 4  # replicated: two norm gains per layer and the final norm, float32
    for read in reads:
        assert read["processes"] == 2 and read["devices"] == 4
        assert read["whole"] == 0  # no whole tensor was read for a sharded load
        assert read["blocks"] <= (read["parameters"] - norms) / 2 + norms  # its half of the model axis, plus replicas


def test_report_validate_across_processes_equals_one_process(tmp_path):
    run = launch("circuits", "report", "demo-induction", "--validate", "--mesh", "data=2,model=2", "--out", str(tmp_path / "two"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("wrote ") == 1  # process 0 speaks for the run
    single = alone(sys.executable, "-m", "circuits.cli", "report", "demo-induction", "--validate", "--out", str(tmp_path / "one"), devices=1)
    assert single.returncode == 0, single.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "report.json").read_text())
    one = json.loads((tmp_path / "one" / "report.json").read_text())
    assert two["predicted_induction"] == one["predicted_induction"]
    for name in ("prefix_matching", "previous_token", "copying"):
        np.testing.assert_allclose(two["validation"][name], one["validation"][name], atol=1e-5)
    assert two["validation"]["confirmed"] == one["validation"]["confirmed"] == [[1, 0]]
    for name in ("spearman", "precision_at_k", "knockout_loss"):
        assert two["validation"][name] == pytest.approx(one["validation"][name], abs=1e-5)
    np.testing.assert_allclose(two["validation"]["head_effects"]["estimated"], one["validation"]["head_effects"]["estimated"], atol=1e-5)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["one", "two"]  # nothing partial beside the report


SCRIPT = """
import os, signal, sys
from circuits import distributed
distributed.initialize()
import jax
from jax.experimental import multihost_utils
multihost_utils.sync_global_devices("started")
if jax.process_index() == 1:
    {action}
multihost_utils.sync_global_devices("never reached by process 1")
"""


@pytest.mark.parametrize("action, status, message", [
    ("os.kill(os.getpid(), signal.SIGKILL)", 128 + 9, "process 1 was killed by SIGKILL"),
    ("raise ValueError('a failure in one process')", 1, "ValueError: a failure in one process"),
    # a process that reported its failure, then aborted on the way out (as XLA aborts one whose coordinator left first)
    ("distributed.fail(3, 'reported'); os.kill(os.getpid(), signal.SIGABRT)", 3, None),
])
def test_one_process_failing_ends_the_others_soon(tmp_path, action, status, message):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(action=action))
    began = time.monotonic()
    run = launch(sys.executable, str(script), grace=10, timeout=120)
    assert time.monotonic() - began < 60
    assert run.returncode == status, run.stderr[-2000:]
    assert message is None or message in run.stderr


def test_the_launcher_names_the_process_that_failed_first():
    from circuits.launch import _cause

    abort, kill = -signal.SIGABRT, -signal.SIGKILL
    # process 1 raised and reported; process 0 (the coordinator) followed it and left, and XLA aborted process 1's exit
    assert _cause([(0, 1), (1, abort)], reported=[(1, 1)]) == (1, 1)
    # process 1 was killed; process 0 failed in a collective with its lost peer, and reported that
    assert _cause([(0, 1), (1, kill)], reported=[(0, 1)]) == (1, kill)
    assert _cause([(0, 2), (1, 1)], reported=[(1, 1), (0, 2)]) == (1, 1)  # the first report
    assert _cause([(0, 1), (1, abort)], reported=[]) == (1, abort)  # an abort no one explained
    assert _cause([(2, 3), (0, 1)], reported=[]) == (2, 3)  # else the first seen


def test_bad_settings_are_one_clear_error(tmp_path):
    cli = [sys.executable, "-m", "circuits.cli", "info", "demo-induction"]
    out_of_range = alone(*cli, "--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2", devices=1)
    assert out_of_range.returncode == 2 and error_lines(out_of_range.stderr) == [
        "error: --process-id 2 is out of range for 2 processes; fix: number the processes 0 to 1"]
    partial = alone(*cli, "--coordinator", "127.0.0.1:1", devices=1)
    assert partial.returncode == 2 and "--num-processes, --process-id missing" in partial.stderr
    assert len(error_lines(partial.stderr)) == 1
    unreachable = alone(sys.executable, "-c", "from circuits import distributed; distributed.initialize('127.0.0.1:9', 2, 1, timeout_s=3)", devices=1)
    assert unreachable.returncode == 2 and error_lines(unreachable.stderr) == [
        "error: process 1 of 2 could not join the run at 127.0.0.1:9 within 3 s; fix: start every process within 3 s of "
        "the others, with the same coordinator address (process 0's HOST:PORT, reachable from every host) and the same "
        "process count"]
    alone_coordinator = alone(sys.executable, "-c", "from circuits import distributed; distributed.initialize('127.0.0.1:0', 2, 0, timeout_s=3)", devices=1)
    assert alone_coordinator.returncode == 2 and "error: process 0 of 2 could not join the run" in alone_coordinator.stderr
    too_large = launch("circuits", "report", "demo-induction", "--validate", "--mesh", "data=4,model=2", "--out", str(tmp_path / "r"))
    assert too_large.returncode == 2
    assert "needs 8 devices, but 4 are available over 2 processes" in too_large.stderr
    assert not (tmp_path / "r").exists()
