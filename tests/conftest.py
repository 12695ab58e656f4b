"""Shared fixtures. Eight fake CPU devices are requested before JAX starts, for the sharding tests.

Tests that need the real SmolLM2-135M (a 93 MB download on first use) are marked ``network``:
``python -m pytest -m "not network"`` runs everything else offline.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
# The suite keeps its compiled programs apart from the user's (~/.cache/circuits/xla); model downloads stay shared.
os.environ.setdefault("CIRCUITS_XLA_CACHE", __import__("tempfile").mkdtemp(prefix="circuits-test-xla-"))

import pytest  # noqa: E402
from helpers import randomize_torch_model, tiny_gemma3_config, tiny_llama_config, tiny_qwen2_config  # noqa: E402

FAMILIES = {"llama": ("LlamaForCausalLM", tiny_llama_config), "qwen2": ("Qwen2ForCausalLM", tiny_qwen2_config),
            "gemma3": ("Gemma3ForCausalLM", tiny_gemma3_config)}
"""Family name -> (transformers class name, tiny random config maker) of the reference models."""


@pytest.fixture
def make_hf(tmp_path):
    """make_hf(family, name, dtype=torch.float32, max_shard_size=None, **config) -> (directory, torch model in eval
    mode): a tiny transformers model of ``family`` with every parameter (biases and norm gains too) random."""
    import torch
    import transformers

    def make(family: str, name: str | None = None, dtype=torch.float32, max_shard_size=None, seed: int = 0, **overrides):
        class_name, make_config = FAMILIES[family]
        torch.manual_seed(seed)
        model = getattr(transformers, class_name)(make_config(**overrides)).eval()
        randomize_torch_model(model, seed)
        model = model.to(dtype)
        directory = tmp_path / (name or family)
        kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
        model.save_pretrained(directory, **kwargs)
        return directory, model

    return make


@pytest.fixture
def make_llama(make_hf):
    """make_llama(name, dtype=torch.float32, max_shard_size=None, **config) -> (directory, torch model in eval mode)."""
    return lambda name="llama", **kwargs: make_hf("llama", name, **kwargs)



@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to float32), fetched into the cache once."""
    import circuits

    return circuits.load("smollm2-135m", show_progress=False)


@pytest.fixture(scope="session")
def smollm2_report(tmp_path_factory):
    """The README's main job, once per session: ``circuits report --validate`` on the default model, written to a
    temporary directory (its report.json, report.md and report.html)."""
    from circuits.cli import main

    out = tmp_path_factory.mktemp("smollm2-report") / "report"
    assert main(["report", "--validate", "--out", str(out)]) == 0
    return out
