"""ICL experiment pieces on tiny models: task generators, label scoring, condition wiring."""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_transformer

from circuits.analysis.ablation import heads_mask
from circuits.analysis.losses import token_losses
from circuits.analysis.targets import induction_targets
from circuits.icl.scoring import (
    accuracy,
    category_map,
    encode_prompts,
    label_log_likelihoods,
    pattern_matching_batch,
)
from circuits.icl.tasks import CATEGORIES, LABELS, TASKS, Prompt, few_shot_prompts
from circuits.models import Interventions


def encode(text: str) -> list[int]:
    """Character-level ASCII encoding: token id = code point."""
    return [ord(ch) for ch in text]


@pytest.fixture(scope="module")
def model():
    return random_transformer(seed=2, vocab_size=128, n_layers=2, n_heads=4, n_kv_heads=2)


def test_pattern_tasks_follow_their_patterns():
    rng = np.random.default_rng(0)
    for name, patterns in [("repetition ABAB", ("ABAB", "AABB")), ("centre-embedding ABCBA", ("ABCBA", "ABCAB"))]:
        for c, pattern in enumerate(patterns):
            letters = TASKS[name].example(rng, c).split(" ")
            assert len(letters) == len(pattern)
            for i in range(len(pattern)):
                for j in range(len(pattern)):
                    assert (letters[i] == letters[j]) == (pattern[i] == pattern[j])


def test_category_examples_and_prompt_format():
    task = TASKS["4-way categories"]
    prompts = few_shot_prompts(task, 8, shots=5, seed=3)
    assert [p.answer for p in prompts] == [0, 1, 2, 3, 0, 1, 2, 3]
    for prompt in prompts:
        blocks = prompt.text.split("\n\n")
        assert len(blocks) == 6 and blocks[-1].endswith(":")
        for block in blocks[:-1]:
            sequence, label = block.split(":")
            c = LABELS.index(label)
            first, second = (("fruit", "animal"), ("furniture", "profession"), ("color", "vehicle"), ("instrument", "country"))[c]
            word1, word2 = sequence.split(" ")
            assert word1 in CATEGORIES[first] and word2 in CATEGORIES[second]
    assert few_shot_prompts(task, 2, shots=0)[0].text.count(":") == 1  # zero-shot: only the query


def test_label_tokens_are_masked_exactly():
    batch = encode_prompts(encode, [Prompt("ab:", 1)], ("Foo", "Barr"), bos=1)
    assert batch.tokens.shape == (2, 8)
    assert batch.tokens[1].tolist() == [1] + encode("ab:Barr")
    # loss position i predicts token i + 1: the label starts after BOS + 3 prompt tokens
    np.testing.assert_array_equal(batch.label_mask[0], [False, False, False, True, True, True, False])
    np.testing.assert_array_equal(batch.label_mask[1], [False, False, False, True, True, True, True])


def test_label_log_likelihood_matches_brute_force(model):
    prompts = [Prompt("AB AB:", 0), Prompt("CD DC:", 1), Prompt("x:", 1)]
    batch = encode_prompts(encode, prompts, ("Foo", "Bar"), bos=0)
    scores = label_log_likelihoods(model, batch, chunk=4)
    losses = np.asarray(token_losses(model(batch.tokens), jnp.asarray(batch.tokens)))
    expected = -(losses * batch.label_mask).sum(-1).reshape(3, 2)
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    assert accuracy(np.array([[0.0, -1.0], [-2.0, -1.0], [-1.0, 0.0]]), np.array([0, 1, 0])) == pytest.approx(2 / 3)


def test_knockout_condition_uses_each_chunks_own_edges(model):
    batch = encode_prompts(encode, [Prompt("K Q K Q:", 0), Prompt("A B B A:", 1)], ("Foo", "Bar"), bos=0)
    heads = heads_mask(model.config, [(1, 0), (1, 3)])
    knocked = label_log_likelihoods(model, batch, knock_out=heads, edges=induction_targets, chunk=2)
    for p in range(2):
        rows = batch.tokens[2 * p : 2 * p + 2]
        interventions = Interventions.none(model.config).knock_out(induction_targets(rows), heads)
        losses = np.asarray(token_losses(model(rows, interventions), jnp.asarray(rows)))
        np.testing.assert_allclose(knocked[p], -(losses * batch.label_mask[2 * p : 2 * p + 2]).sum(-1), rtol=1e-5)
    assert not np.allclose(knocked, label_log_likelihoods(model, batch, chunk=2))


def test_category_map_and_pattern_matching_targets():
    mapping = category_map(encode, 128, ("fruit", "animal"))
    assert mapping[ord("a")] == 0 or mapping[ord("a")] == 1  # letters of words are mapped
    assert mapping[ord(":")] == -1 and mapping[ord("\n")] == -1
    tokens, targets = pattern_matching_batch(encode, bos=0, n_lines=6, seeds=(0,))
    text = "".join(chr(t) for t in tokens[0][1:] if t)
    lines = text.split("\n")
    queries, keys = np.nonzero(targets[0])
    assert len(queries) > 0
    for query, key in zip(queries, keys):
        assert chr(tokens[0, query]) == ":" and key <= query
        assert chr(tokens[0, key]) in "FBQ"  # first letter of Foo / Bar / Baz / Qux
    assert all(":" in line for line in lines)


def test_run_icl_wires_every_condition(model, tmp_path):
    from tokenizers import Tokenizer, models

    from circuits.icl.experiment import ICLSettings, run_icl

    tokenizer = Tokenizer(models.BPE(vocab={chr(i): i for i in range(128)}, merges=[]))
    settings = ICLSettings(fractions=(0.25,), prompts_per_task=4, random_seeds=(0, 1), selection_seeds=(0,))
    result = run_icl(model, tokenizer, "tiny", settings, show_progress=False)
    assert set(result.accuracy) == set(TASKS)
    assert len(result.heads["25%"]) == 2
    for task, row in result.accuracy.items():
        expected = {"zero-shot", "no ablation", "top 25% zero-ablated", "top 25% mean-ablated", "random 25% zero-ablated",
                    "top 25% exact induction edges knocked out"}
        if TASKS[task].kind == "category":
            expected.add("top 25% category edges knocked out")
        assert set(row) == expected
        assert len(row["random 25% zero-ablated"]) == 2
        assert all(0.0 <= value <= 1.0 for values in row.values() for value in values)
    assert len(result.pattern_matching_heads) == 5
    result.write(tmp_path)
    assert (tmp_path / "icl.png").stat().st_size > 1000
    assert "\n" not in repr(result) and "<table>" in result._repr_html_() and "data:image/png;base64," in result._repr_html_()
    assert "| repetition ABAB | no ablation |" in result.to_markdown()


def test_cli_refuses_a_model_without_tokenizer(capsys):
    from circuits.cli import main

    assert main(["icl", "demo-induction", "--quick"]) == 2
    error = capsys.readouterr().err
    assert "has no tokenizer" in error and "fix: use a real checkpoint" in error and "into ." not in error


def test_a_tokenizer_larger_than_the_vocabulary_is_refused_before_the_work(model):
    from tokenizers import Tokenizer, models

    from circuits.icl.experiment import run_icl

    tokenizer = Tokenizer(models.WordLevel({f"w{i}": i for i in range(model.config.vocab_size + 5)}, unk_token="w0"))
    with pytest.raises(ValueError, match=f"{model.config.vocab_size + 5} tokens but the model's vocabulary has {model.config.vocab_size}"):
        run_icl(model, tokenizer, "tiny", show_progress=False)
