"""Shared fixtures. Eight fake CPU devices are requested before JAX starts, for the sharding tests.

Tests that need the real SmolLM2-135M (a 93 MB download on first use) are marked ``network``:
``python -m pytest -m "not network"`` runs everything else offline.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import pytest  # noqa: E402
from helpers import randomize_torch_model, tiny_llama_config  # noqa: E402


@pytest.fixture
def make_llama(tmp_path):
    """make_llama(name, dtype=torch.float32, max_shard_size=None, **config) -> (directory, torch model in eval mode)."""
    import torch
    from transformers import LlamaForCausalLM

    def make(name: str = "llama", dtype=torch.float32, max_shard_size=None, seed: int = 0, **overrides):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(tiny_llama_config(**overrides)).eval()
        randomize_torch_model(model, seed)
        model = model.to(dtype)
        directory = tmp_path / name
        kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
        model.save_pretrained(directory, **kwargs)
        return directory, model

    return make



@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to float32), fetched into the cache once."""
    import circuits

    return circuits.load("smollm2-135m", show_progress=False)
