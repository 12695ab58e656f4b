"""`circuits convert` never destroys what it did not write, swaps caches atomically, cleans up after killed
runs, loads from relative paths, and refuses damaged data (issue: hostile and broken inputs)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import circuits
from circuits.cli import main
from circuits.convert import CheckpointError
from circuits.convert.orbax_cache import save_cache


@pytest.fixture
def demo_cache(tmp_path):
    return save_cache(circuits.load("demo-induction"), tmp_path / "cache")


def test_force_never_deletes_user_files_or_the_source(make_llama, tmp_path, capsys):
    directory, _ = make_llama("src")
    files = tmp_path / "documents"
    files.mkdir()
    (files / "thesis.tex").write_text("years of work")
    assert main(["convert", str(directory), str(files), "--force"]) == 2
    assert "not a cache written by circuits convert" in capsys.readouterr().err
    assert (files / "thesis.tex").read_text() == "years of work"
    assert main(["convert", str(directory), str(directory), "--force"]) == 2
    assert "source checkpoint" in capsys.readouterr().err
    assert main(["convert", str(directory), str(tmp_path), "--force"]) == 2  # a directory that holds the source
    assert (directory / "config.json").exists()


def test_force_replaces_a_cache_by_an_atomic_swap(demo_cache, monkeypatch):
    before = json.loads((demo_cache / "circuits_cache.json").read_text())
    import circuits.convert.orbax_cache as orbax_cache

    real_replace = os.replace
    calls = []

    def crash_on_second_rename(source, destination):
        calls.append((str(source), str(destination)))
        if len(calls) == 2:
            raise KeyboardInterrupt  # interrupted between renaming the old cache aside and the new one in
        return real_replace(source, destination)

    monkeypatch.setattr(orbax_cache.os, "replace", crash_on_second_rename)
    with pytest.raises(KeyboardInterrupt):
        save_cache(circuits.load("demo-induction", dtype="bfloat16"), demo_cache, overwrite=True)
    monkeypatch.undo()
    assert ".cache.old-" in calls[0][1]  # the old cache was moved aside whole, never deleted in place
    assert calls[2] == (calls[0][1], calls[0][0])  # and put back when the swap was interrupted
    assert json.loads((demo_cache / "circuits_cache.json").read_text()) == before and circuits.load(demo_cache).dtype == "float32"
    assert sorted(p.name for p in demo_cache.parent.iterdir()) == ["cache"]  # the unfinished new one is removed
    save_cache(circuits.load("demo-induction", dtype="bfloat16"), demo_cache, overwrite=True)
    assert json.loads((demo_cache / "circuits_cache.json").read_text())["dtype"] == "bfloat16" != before["dtype"]
    assert circuits.load(demo_cache).dtype == "bfloat16"


def test_stale_partials_of_dead_processes_are_cleaned_up(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (tmp_path / f".cache.partial-{dead}").mkdir()
    (tmp_path / f".cache.old-{dead}").mkdir()
    (tmp_path / f".out.json.partial-{dead}-x1y2").write_text("half")
    (tmp_path / f".cache.partial-{os.getppid()}").mkdir()  # a live process's: left alone
    save_cache(circuits.load("demo-induction"), tmp_path / "cache")
    from circuits.utils import atomic_write_text

    atomic_write_text(tmp_path / "out.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [f".cache.partial-{os.getppid()}"]


def test_a_cache_moved_aside_by_a_killed_swap_is_put_back(demo_cache):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    aside = demo_cache.with_name(f".cache.old-{dead}")
    os.replace(demo_cache, aside)  # killed after moving the old cache aside, before the new one came in
    (demo_cache.parent / f".cache.partial-{dead}").mkdir()
    save_cache(circuits.load("demo-induction"), demo_cache.parent / "other")  # any later run tidies its own target only
    assert not demo_cache.exists()
    assert circuits.load(demo_cache).config.n_layers == 2 and sorted(p.name for p in demo_cache.parent.iterdir()) == ["cache", "other"]


def test_a_cache_given_by_a_relative_path_loads(demo_cache, monkeypatch, capsys):
    monkeypatch.chdir(demo_cache.parent)
    assert main(["info", "cache"]) == 0
    assert "Orbax cache" in capsys.readouterr().out


def test_damaged_cache_data_is_refused(demo_cache):
    marker = demo_cache / "circuits_cache.json"
    meta = json.loads(marker.read_text())
    name = sorted(meta["checksums"])[0]
    meta["checksums"][name] ^= 1  # the data no longer matches what was written
    marker.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="checksum mismatch in " + name.replace("[", r"\[").replace("]", r"\]")):
        circuits.load(demo_cache)
    meta["checksums"][name] ^= 1
    marker.write_text(json.dumps(meta))
    circuits.load(demo_cache)
    original = circuits.load(demo_cache)
    data = [p for p in (demo_cache / "params").rglob("*") if p.is_file() and p.stat().st_size > 1000]
    assert data, "no array data files found"
    refused = 0
    for path in data:  # one flipped bit at a time, at several places: never silently different weights
        clean = path.read_bytes()
        for fraction in (0.25, 0.5, 0.75):
            blob = bytearray(clean)
            blob[int(len(blob) * fraction)] ^= 0x40
            path.write_bytes(bytes(blob))
            try:
                loaded = circuits.load(demo_cache)
            except CheckpointError as err:
                assert "circuits convert" in str(err) and "--force" in str(err)
                refused += 1
                continue
            for name in ("embed", "final_norm", "unembed"):
                np.testing.assert_array_equal(np.asarray(loaded.tensor(name)), np.asarray(original.tensor(name)))
            for name in ("wq", "wk", "wv", "wo", "attn_norm"):
                for layer in range(loaded.config.n_layers):
                    np.testing.assert_array_equal(np.asarray(loaded.tensor(name, layer)), np.asarray(original.tensor(name, layer)))
        path.write_bytes(clean)
    assert refused > 0
    for path in data:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])  # truncated files
    with pytest.raises(CheckpointError, match="is damaged or missing.*rebuild it with: circuits convert"):
        circuits.load(demo_cache)


def test_checksums_ignore_sharding(make_llama, tmp_path):
    from circuits.models import make_mesh

    directory, _ = make_llama("src", num_attention_heads=8, num_key_value_heads=4)
    cache = save_cache(circuits.load(directory, show_progress=False), tmp_path / "cache")
    sharded = circuits.load(cache, mesh=make_mesh(data=2, model=4))  # checksums verified on the sharded arrays
    np.testing.assert_array_equal(np.asarray(sharded.tensor("wq", 0)), np.asarray(circuits.load(cache).tensor("wq", 0)))


@pytest.mark.parametrize("marker", ["[1]", "null", '{"format_version": 2, "config": "x", "dtype": "float32"}',
                                    '{"format_version": 2, "config": {"vocab_size": "8"}, "dtype": "float32"}',
                                    '{"format_version": 2, "config": {}, "dtype": ["float32"]}', "{oops"])
def test_a_marker_of_the_wrong_type_is_named(demo_cache, marker):
    (demo_cache / "circuits_cache.json").write_text(marker)
    with pytest.raises(CheckpointError, match="circuits_cache.json|cache format") as info:
        circuits.load(demo_cache)
    assert "\n" not in str(info.value)


def test_a_flipped_sign_bit_anywhere_changes_the_checksum():
    """With even weights, 2^31 * w vanishes mod 2^32: a sign flip at half the positions went unnoticed."""
    import jax.numpy as jnp

    from circuits.convert.orbax_cache import _checksum

    values = jnp.linspace(-1.0, 1.0, 64, dtype=jnp.float32)
    clean = int(_checksum(values))
    for index in range(64):
        assert int(_checksum(values.at[index].set(-values[index]))) != clean, index


def test_a_failed_write_is_removed_even_while_background_writers_recreate_it(tmp_path):
    """After a failed Orbax write, TensorStore's threads can still be creating files (and their parent directories)
    under the staging directory; one ``rmtree`` then leaves it behind."""
    import threading
    import time

    from circuits.utils import remove_written_tree

    staging = tmp_path / ".cache.partial-1"
    stop = time.monotonic() + 0.4

    def late_writer():
        while time.monotonic() < stop:
            (staging / "params" / "d").mkdir(parents=True, exist_ok=True)
            (staging / "params" / "d" / f"{time.monotonic_ns()}").write_bytes(b"x" * 100)
            time.sleep(0.02)

    writer = threading.Thread(target=late_writer)
    writer.start()
    time.sleep(0.05)
    remove_written_tree(staging, settle_s=0.2)
    writer.join()
    assert not staging.exists()
