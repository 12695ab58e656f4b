"""Everything downstream of loading works on Qwen2 and Gemma 3 checkpoints: sharding, capture, the materialised and
fused attention paths across sliding windows, ablation and knockout sweeps, Orbax caches with their tokenizer, ICL
and the report."""

import jax
import numpy as np
import pytest
from helpers import random_tokens

import circuits
from circuits.analysis import induction_targets, one_head_each, sweep_losses
from circuits.models import Interventions, make_mesh, shard_tokens

FAMILIES = ["qwen2", "gemma3"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{family: (directory, loaded model)} of tiny random checkpoints (Gemma 3: 6 layers, 5 sliding with window 16)."""
    import torch
    import transformers
    from conftest import FAMILIES as REFERENCES
    from helpers import randomize_torch_model

    made = {}
    for family in FAMILIES:
        class_name, make_config = REFERENCES[family]
        torch.manual_seed(0)
        reference = getattr(transformers, class_name)(make_config()).eval()
        randomize_torch_model(reference, 0)
        directory = tmp_path_factory.mktemp(family)
        reference.save_pretrained(directory)
        made[family] = (directory, circuits.load(directory, show_progress=False))
    return made


@pytest.mark.parametrize("family", FAMILIES)
def test_sharded_forward_equals_unsharded(checkpoints, family):
    directory, model = checkpoints[family]
    kv = model.config.n_kv_heads
    mesh = make_mesh(data=8 // kv, model=kv, devices=jax.devices()[:8])
    tokens = random_tokens(8, 40, 256)
    sharded = circuits.load(directory, mesh=mesh, show_progress=False)
    expected = np.asarray(model(tokens))
    # float32 sums split over 8 shards add in another order: Gemma 3's block (QK-norm, post-norms) reached 1.07e-5 of
    # the largest logit with jax 0.10.2 on 2 CPU cores; a wrong sharding rule is off by orders of magnitude more
    np.testing.assert_allclose(np.asarray(sharded(shard_tokens(tokens, mesh))), expected, atol=3e-5 * np.abs(expected).max(), rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_materialised_pattern_path_equals_fused_path(checkpoints, family):
    """Capturing the pattern runs the materialised path; it must give the fused path's logits, windows included."""
    _, model = checkpoints[family]
    tokens = random_tokens(2, 40, 256)
    logits, captured = model.run_with_capture(tokens, ("attn_pattern",))
    expected = np.asarray(model(tokens))
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-5 * np.abs(expected).max(), rtol=0)
    pattern = np.asarray(captured["attn_pattern"])  # [L, B, K, G, T, S]
    np.testing.assert_allclose(pattern.sum(-1), 1.0, atol=1e-5)
    for layer, kind in enumerate(model.config.layer_kinds):
        outside = np.tril(np.ones((40, 40), bool), -model.config.sliding_window) if kind == "sliding_attention" else np.zeros((40, 40), bool)
        assert pattern[layer][..., outside].max(initial=0.0) == 0.0
        if kind == "full_attention":
            assert pattern[layer][..., np.tril(np.ones((40, 40), bool), -20)].max() > 0.0


def test_knocking_out_an_edge_outside_the_window_changes_nothing(checkpoints):
    _, model = checkpoints["gemma3"]
    config = model.config
    tokens = random_tokens(1, 40, 256)
    sliding = np.array([kind == "sliding_attention" for kind in config.layer_kinds])
    heads = np.broadcast_to(sliding[:, None, None], (config.n_layers, config.n_kv_heads, config.q_per_kv))
    far, near = np.zeros((1, 40, 40), bool), np.zeros((1, 40, 40), bool)
    far[0, 39, 0] = True  # 39 keys back: outside the window of 16
    near[0, 39, 30] = True
    clean = np.asarray(model(tokens))
    knocked_far = np.asarray(model(tokens, Interventions.none(config).knock_out(far, heads)))
    knocked_near = np.asarray(model(tokens, Interventions.none(config).knock_out(near, heads)))
    np.testing.assert_allclose(knocked_far, clean, atol=1e-5 * np.abs(clean).max(), rtol=0)
    assert np.abs(knocked_near[0, 39] - clean[0, 39]).max() > 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_sweeps_equal_one_forward_per_set(checkpoints, family):
    """Ablation and knockout sweeps (clean prefix reused, layers run from the first touched one) against plain forwards."""
    _, model = checkpoints[family]
    config = model.config
    half = 20
    sequence = random_tokens(1, half, 256, seed=3)
    tokens = np.concatenate([sequence, sequence], axis=1)
    mask = np.zeros(2 * half - 1, bool)
    mask[half:] = True
    every = one_head_each(config)
    sets = every[[1, len(every) // 2 + 1, len(every) - 2]]
    edges = induction_targets(tokens)

    def loss(interventions):
        logits = np.asarray(model(tokens, interventions), np.float64)[0, :-1]
        log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
        return -log_probs[np.arange(2 * half - 1), tokens[0, 1:]][mask].mean()

    ablated = sweep_losses(model, tokens, mask, ablate=sets, show_progress=False)
    knocked = sweep_losses(model, tokens, mask, knock_out=sets, edges=edges, show_progress=False)
    for i, heads in enumerate(sets):
        assert ablated[i] == pytest.approx(loss(Interventions.none(config).ablate(heads)), abs=1e-4)
        assert knocked[i] == pytest.approx(loss(Interventions.none(config).knock_out(edges, heads)), abs=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_cache_keeps_model_and_tokenizer_and_icl_runs_on_it(checkpoints, family, tmp_path):
    from tokenizers import Tokenizer, models

    from circuits.cli import main
    from circuits.icl.experiment import ICLSettings, run_icl

    directory, model = checkpoints[family]
    Tokenizer(models.BPE(vocab={chr(i): i for i in range(128)}, merges=[])).save(str(directory / "tokenizer.json"))
    assert main(["convert", str(directory), str(tmp_path / "cache")]) == 0
    checkpoint = circuits.open_checkpoint(tmp_path / "cache")
    assert checkpoint.config == model.config
    cached = checkpoint.load()
    tokens = random_tokens(2, 40, 256)
    np.testing.assert_array_equal(np.asarray(cached(tokens)), np.asarray(model(tokens)))
    tokenizer = checkpoint.tokenizer()
    assert tokenizer.encode("Foo:").ids == [ord(c) for c in "Foo:"]
    settings = ICLSettings(fractions=(0.25,), prompts_per_task=2, random_seeds=(0,), selection_seeds=(0,))
    result = run_icl(cached, tokenizer, family, settings, show_progress=False)
    assert all(0.0 <= v <= 1.0 for row in result.accuracy.values() for values in row.values() for v in values)


def test_report_validates_a_gemma3_checkpoint(checkpoints, tmp_path):
    directory, _ = checkpoints["gemma3"]
    report = circuits.report(directory, k=3, show_progress=False)
    assert report.config["architecture"] == "gemma3" and report.validation is not None
    assert np.isfinite(np.asarray(report.predicted_induction)).all()
    report.write(tmp_path / "report")
    assert "gemma3" in (tmp_path / "report" / "report.md").read_text()
