"""Formation dynamics: clamps as intervention data, the formation tasks, training, resumption, measures, CLI."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import random_tokens, random_transformer

from circuits.analysis.attention import prefix_matching_scores, previous_token_scores
from circuits.analysis.induction import predict_induction
from circuits.analysis.repeated_tokens import repeated_random_tokens
from circuits.cli import main
from circuits.formation.clamps import Clamp, ClampError
from circuits.formation.experiment import FormationResult
from circuits.formation.measures import phase_change_step, query_losses
from circuits.formation.tasks import FewShotTask, RepeatTask
from circuits.formation.training import Trainer, TrainingError, TrainSettings, adam_step
from circuits.models.interventions import Interventions

FEWSHOT = TrainSettings(steps=200, batch_size=32, eval_every=100, checkpoint_every=100)
REPEAT = dataclasses.replace(FEWSHOT, task="repeat")


def _causal_rows(key, batch, seq_len):
    """A random row-stochastic causal pattern f32[B, T, S]."""
    logits = jax.random.normal(key, (batch, seq_len, seq_len))
    logits = jnp.where(jnp.tril(jnp.ones((seq_len, seq_len), bool)), logits, -jnp.inf)
    return jax.nn.softmax(logits, -1)


# --- interventions: pattern clamps and ideal copies -------------------------------------------


def test_pattern_clamp_fixes_the_pattern_and_stops_its_gradient():
    model = random_transformer()
    config = model.config
    tokens = jnp.asarray(random_tokens(3, 9, config.vocab_size))
    shape = (config.n_layers, config.n_kv_heads, config.q_per_kv)
    heads = np.zeros(shape, bool)
    heads[0] = True  # every first-layer head
    heads[2, 1, 0] = True  # and one head of the last layer
    override = jnp.zeros((config.n_layers, 3, 9, 9)).at[0].set(jnp.eye(9, k=-1).at[0, 0].set(1.0))
    override = override.at[2].set(_causal_rows(jax.random.key(0), 3, 9))
    clamped = Interventions.none(config).clamp_pattern(override, jnp.asarray(heads))

    _, plain = model.run_with_capture(tokens, ("attn_pattern",))
    _, captured = model.run_with_capture(tokens, ("attn_pattern",), clamped)
    got, free = np.asarray(captured["attn_pattern"]), np.asarray(plain["attn_pattern"])
    for layer, k, g in zip(*np.nonzero(heads)):
        np.testing.assert_array_equal(got[layer, :, k, g], np.asarray(override[layer]))
    # an unclamped head of the last layer keeps computing its own pattern (on a changed residual)
    assert not np.allclose(got[2, :, 1, 0], free[2, :, 1, 0])
    assert np.allclose(got[2, :, 1, 0].sum(-1), 1.0, atol=1e-5)

    graphdef, state = nnx.split(model)

    def loss(state, interventions):
        logits, _ = nnx.merge(graphdef, state).forward(tokens, interventions)
        return jax.nn.logsumexp(logits, -1).mean()

    with_clamp = jax.grad(loss)(state, clamped)["blocks"]["attn"]
    without = jax.grad(loss)(state, None)["blocks"]["attn"]
    assert float(jnp.abs(with_clamp["wq"][...][0]).max()) == 0.0
    assert float(jnp.abs(with_clamp["wk"][...][0]).max()) == 0.0
    assert float(jnp.abs(without["wq"][...][0]).max()) > 0.0
    assert float(jnp.abs(with_clamp["wq"][...][1]).max()) > 0.0  # later layers still learn their queries


def test_ideal_copy_matches_a_brute_force_sum():
    model = random_transformer(seed=2)
    config = model.config
    tokens = jnp.asarray(random_tokens(2, 7, config.vocab_size, seed=3))
    written = np.asarray(tokens).copy()
    written[:, ::3] = -1  # these keys write nothing
    heads = np.zeros((config.n_layers, config.n_kv_heads, config.q_per_kv), bool)
    heads[1, 0, 2] = heads[2, 1, 1] = heads[2, 0, 0] = True
    gain = 3.5
    copied = Interventions.none(config).ideal_copy(jnp.asarray(written), jnp.asarray(heads), gain)
    logits, captured = model.run_with_capture(tokens, ("attn_pattern",), copied)
    ablated = model(tokens, Interventions.none(config).ablate(jnp.asarray(heads)))

    patterns = np.asarray(captured["attn_pattern"], np.float64)
    expected = np.asarray(ablated, np.float64).copy()
    for layer, k, g in zip(*np.nonzero(heads)):
        for b in range(2):
            for t in range(7):
                for s in range(t + 1):
                    if written[b, s] >= 0:
                        expected[b, t, written[b, s]] += gain / heads.sum() * patterns[layer, b, k, g, t, s]
    np.testing.assert_allclose(np.asarray(logits), expected, atol=2e-5)
    assert not np.allclose(np.asarray(logits), np.asarray(ablated), atol=1e-3)


def test_bad_clamp_interventions_are_named():
    config = random_transformer().config
    base = Interventions.none(config)
    with pytest.raises(ValueError, match="pattern_override and pattern_heads must be given together"):
        dataclasses.replace(base, pattern_override=jnp.zeros((3, 1, 4, 4))).check(config)
    with pytest.raises(ValueError, match="copy_heads has shape"):
        dataclasses.replace(base, copy_tokens=jnp.zeros((1, 4), jnp.int32), copy_heads=jnp.zeros((3, 6), bool)).check(config)
    with pytest.raises(ValueError, match=r"pattern_override has shape \(2, 1, 4, 4\)"):
        base.clamp_pattern(jnp.zeros((2, 1, 4, 4)), jnp.zeros((3, 2, 3), bool)).check(config)


def test_clamp_specs_parse_and_bad_ones_say_how_to_fix():
    assert Clamp.parse("none") == Clamp()
    clamp = Clamp.parse("previous-token+copy+ablate:L1H0,L1H7")
    assert (clamp.previous_token, clamp.induction, clamp.copy, clamp.ablated) == (True, False, True, ((1, 0), (1, 7)))
    assert Clamp.parse(clamp.name) == clamp
    with pytest.raises(ClampError, match="known: none, previous-token"):
        Clamp.parse("prev")
    with pytest.raises(ClampError, match="L<layer>H<head>"):
        Clamp.parse("ablate:1.0")
    with pytest.raises(ClampError, match="no head L2H0"):
        Clamp.parse("ablate:L2H0").check(FEWSHOT.model_config())


# --- tasks -------------------------------------------------------------------------------------


def test_fewshot_batches_need_in_context_learning():
    task = FewShotTask(n_classes=64, n_labels=16, n_pairs=3, noise=0.3)
    centres = task.class_centres(32)
    batch = task.batch(jax.random.key(0), 256, centres)
    tokens, targets = np.asarray(batch.tokens), np.asarray(batch.targets)
    correct, wrong = np.asarray(batch.correct_keys)[:, -1], np.asarray(batch.wrong_keys)[:, -1]
    assert correct.sum(-1).tolist() == [1] * 256 and wrong.sum(-1).tolist() == [2] * 256
    key = correct.argmax(-1)
    np.testing.assert_array_equal(tokens[np.arange(256), key], targets[:, -1])  # the correct key holds the answer
    labels = tokens[:, 1::2]
    assert all(len(set(row)) == 3 for row in labels.tolist())  # distinct labels in a sequence
    # the exemplar just before the correct label is the query's class: nearest centre agrees
    exemplars = np.asarray(batch.exemplars)
    nearest = lambda v: np.argmin(((np.asarray(centres)[None] - v[:, None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(nearest(exemplars[np.arange(256), key - 1]), nearest(exemplars[:, -1]))
    # labels are drawn afresh per sequence: one class gets different labels in different sequences
    classes = np.stack([nearest(exemplars[:, i]) for i in (0, 2, 4)], 1)
    pairs = {(c, l) for c, l in zip(classes.ravel().tolist(), labels.ravel().tolist())}
    assert len(pairs) > 3 * len({c for c, _ in pairs})
    assert np.asarray(batch.loss_mask).sum() == 256 and np.asarray(batch.loss_mask)[:, -1].all()


def test_repeat_batches_have_no_fixed_induction_offset():
    task = RepeatTask(vocab_size=50, min_length=4, max_length=10)
    batch = task.batch(jax.random.key(1), 64)
    tokens, targets, rows = np.asarray(batch.tokens), np.asarray(batch.targets), np.asarray(batch.loss_mask)
    correct = np.asarray(batch.correct_keys)
    offsets = set()
    for b, t in zip(*np.nonzero(rows)):
        (s,) = np.nonzero(correct[b, t])[0]
        assert tokens[b, s - 1] == tokens[b, t] and tokens[b, s] == targets[b, t] == tokens[b, t + 1]
        offsets.add(t - s)
    assert len(offsets) == 7  # one per block length 4..10
    assert (tokens[:, 0] == 0).all() and (tokens[:, 1:] > 0).all()


# --- training ----------------------------------------------------------------------------------


@pytest.mark.parametrize("clamp", ["none", "copy", "previous-token+induction"])
def test_one_adam_step_lowers_the_loss_on_a_fixed_batch(clamp):
    clamp = Clamp.parse(clamp)
    trainer = Trainer(FEWSHOT, clamp)
    batch = trainer.task.batch(jax.random.key(5), 64, trainer.centres)
    step = jax.jit(adam_step(trainer.graphdef, optax.adam(1e-2), clamp))
    state = nnx.split(trainer.model)[1]
    opt_state = optax.adam(1e-2).init(state)
    _, _, before, _ = step(state, opt_state, batch)
    state, _, _, _ = step(state, opt_state, batch)
    after, _, _ = query_losses(nnx.merge(trainer.graphdef, state), batch, clamp)
    assert float(after) < float(before) - 1e-3


def test_clamped_patterns_stay_fixed_through_training():
    clamp = Clamp.parse("previous-token+induction")
    trainer = Trainer(FEWSHOT, clamp)
    last = trainer.train().history[-1]
    np.testing.assert_allclose(last.previous_token, 1.0, atol=1e-6)
    np.testing.assert_allclose(last.induction_strength, 1.0, atol=1e-6)
    batch = trainer.eval_batch
    _, _, captured = query_losses(trainer.model, batch, clamp, ("attn_pattern",))
    patterns = np.asarray(captured["attn_pattern"])
    np.testing.assert_array_equal(patterns[-1, :, :, :, -1], np.asarray(batch.correct_keys[:, None, None, -1], np.float32).repeat(8, 1))
    free = Trainer(FEWSHOT, Clamp()).train().history[-1]
    assert free.previous_token.max() < 0.9 and free.induction_strength.max() < 0.9


def test_checkpoints_resume_to_the_same_run(tmp_path):
    settings = dataclasses.replace(REPEAT, steps=400)
    uninterrupted = Trainer(settings, Clamp()).train()
    Trainer(dataclasses.replace(settings, steps=200), Clamp(), tmp_path).train()
    resumed_trainer = Trainer(settings, Clamp(), tmp_path)
    assert resumed_trainer.step == 200
    resumed = resumed_trainer.train()
    assert [m.step for m in resumed.history] == [0, 100, 200, 300, 400]
    np.testing.assert_allclose([m.loss for m in resumed.history], [m.loss for m in uninterrupted.history], rtol=1e-5)
    with pytest.raises(TrainingError, match="other settings"):
        Trainer(dataclasses.replace(settings, learning_rate=1e-4), Clamp(), tmp_path)


def test_a_run_started_from_another_goes_on_as_one_run():
    """Clamps can change part-way: a run started from another carries on its params, Adam state and PRNG keys, so
    200 steps then 100 more equal 300 steps in one run; another model or a run that already trained is refused."""
    first = Trainer(dataclasses.replace(REPEAT, steps=200), Clamp())
    first.train()
    then = Trainer(dataclasses.replace(REPEAT, steps=100), Clamp())
    then.start_from(first)
    went_on = then.train().history
    whole = Trainer(dataclasses.replace(REPEAT, steps=300), Clamp()).train().history
    assert [m.step for m in went_on] == [0, 100]
    np.testing.assert_allclose([went_on[0].loss, went_on[1].loss], [whole[2].loss, whole[3].loss], rtol=1e-5)
    with pytest.raises(TrainingError, match="same model settings"):
        Trainer(dataclasses.replace(REPEAT, n_layers=3), Clamp()).start_from(first)
    with pytest.raises(TrainingError, match="already trained"):
        then.start_from(first)


def test_short_run_forms_an_induction_head_found_by_weights_and_by_prefix_matching():
    settings = dataclasses.replace(REPEAT, steps=400)
    trainer = Trainer(settings, Clamp())
    data = repeated_random_tokens(trainer.config, batch=16, length=16, seed=3)  # in-distribution length
    untrained = prefix_matching_scores(trainer.model, data).scores
    history = trainer.train().history
    model = trainer.model
    assert "\n" not in repr(trainer.models()) and repr(trainer.models()).startswith("[Transformer(")  # short in a notebook
    measured = prefix_matching_scores(model, data).scores
    previous = previous_token_scores(model, data).scores
    prediction = predict_induction(model, method="kcomp-token-zgain")
    predicted = prediction.predicted_induction.scores

    assert untrained.max() < 0.3
    top_layer, top_head = np.unravel_index(np.argmax(predicted), predicted.shape)
    assert top_layer == 1 and measured[top_layer, top_head] > 0.5
    assert predicted[1].min() > predicted[0].max()  # every induction candidate is in the second layer
    assert measured[1].min() > measured[0].max()
    strongest = prediction.edges[0]  # the weights' previous-token head is the measured one
    assert (strongest.prev_layer, strongest.prev_head) == (0, int(np.argmax(previous[0])))
    assert previous[0].max() > 0.5
    # the weight-only progress measure sees the circuit form: K-composition well above its start
    assert history[-1].k_composition > 2 * history[0].k_composition


def test_phase_change_is_the_steepest_drop_below_the_baseline():
    steps = np.arange(0, 3001, 100)
    early = 2.0 * np.exp(-steps / 60.0)  # fast drop to the plateau, above the baseline
    loss = 1.2 + early - 1.1 / (1 + np.exp(-(steps - 1800) / 120.0))
    assert phase_change_step(steps, loss) < 300  # without a baseline the early drop wins
    assert abs(phase_change_step(steps, loss, below=1.1) - 1800) <= 150
    assert phase_change_step(steps, np.full(steps.shape, 2.0), below=1.1) is None


# --- command line ------------------------------------------------------------------------------


def test_train_cli_writes_curves_json_and_checkpoints(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--quick", "--steps", "200", "--clamp", "none", "--clamp", "copy", "--out", str(out)])
    assert code == 0
    result = FormationResult.from_json((out / "formation.json").read_text())
    assert [run.clamp for run in result.runs] == ["none", "copy"]
    assert [len(run.histories) for run in result.runs] == [3, 3]  # --quick trains 3 seeds
    assert [m.step for m in result.runs[0].histories[2]] == [0, 100, 200]
    assert (out / "formation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (out / "formation.svg").read_text()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["copy", "none"]
    assert (out / "checkpoints" / "copy" / "200").is_dir()  # the final step is saved although checkpoint_every is 500
    assert "Induction-head formation (fewshot task, 200 steps)" in capsys.readouterr().out
    data = json.loads((out / "formation.json").read_text())
    assert data["settings"]["steps"] == 200 and data["model_config"]["d_mlp"] == 0
    assert "\n" not in repr(result) and repr(result).startswith("FormationResult(fewshot task, 200 steps, 2 runs; none: phase change")
    assert result._repr_html_().startswith("<svg")  # the curves, in a notebook


@pytest.mark.parametrize(
    "args, message",
    [
        (["--clamp", "previous"], "unknown clamp 'previous'"),
        (["--steps", "150"], "steps=150 must be a positive multiple of eval_every=100"),
        (["--clamp", "ablate:L5H0"], "no head L5H0"),
    ],
)
def test_train_cli_bad_settings_exit_2_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert main(["train", "--quick", "--out", str(out)] + args) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_seeds_train_together_as_one_vmapped_program():
    trainer = Trainer(dataclasses.replace(REPEAT, seeds=2), Clamp())
    alone = Trainer(dataclasses.replace(REPEAT, seed=1), Clamp())  # what the second seed is, trained by itself
    np.testing.assert_array_equal(trainer.models()[1].embed[...], alone.model.embed[...])
    result = trainer.train()
    alone.train()
    assert len(result.histories) == 2 and result.histories[0][-1].loss != result.histories[1][-1].loss
    for ours, reference in zip(jax.tree.leaves(nnx.state(trainer.models()[1])), jax.tree.leaves(nnx.state(alone.model))):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(reference), atol=2e-4)
    assert all(history[-1].loss < history[0].loss - 0.1 for history in result.histories)
