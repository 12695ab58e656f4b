"""Scoring in-context-learning prompts under interventions: label log-likelihoods and accuracy.

A prompt with C candidate labels becomes C token sequences (BOS + prompt + label), padded on
the right (causal attention never reads the padding); the label whose tokens get the highest
total log-probability is the model's answer. Every condition (ablation, knockout) is an
:class:`Interventions` value for the same jitted forward.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from circuits.analysis.losses import token_losses
from circuits.analysis.targets import attention_share
from circuits.icl.tasks import CATEGORIES, LABELS, Prompt, pattern_matching_lines
from circuits.models.interventions import Interventions
from circuits.models.sharding import host_array
from circuits.models.transformer import Transformer, reading_jit

Encode = Callable[[str], list[int]]
"""text -> token ids (no BOS), e.g. ``lambda s: tokenizer.encode(s).ids``."""


@dataclasses.dataclass(frozen=True)
class LabelBatch:
    """tokens int32[P * C, T] (prompt p, candidate c at row p * C + c); label_mask bool[P * C, T - 1] marks the
    losses that predict label tokens; answers int[P]."""

    tokens: np.ndarray
    label_mask: np.ndarray
    answers: np.ndarray
    n_candidates: int


def encode_prompts(encode: Encode, prompts: list[Prompt], labels: tuple[str, ...], bos: int) -> LabelBatch:
    """Tokenise every (prompt, candidate label) pair; prompt and label are encoded apart so that the label's
    tokens are the same in every prompt."""
    label_ids = [encode(label) for label in labels]
    rows, masks = [], []
    for prompt in prompts:
        prompt_ids = [bos] + encode(prompt.text)
        for ids in label_ids:
            rows.append(prompt_ids + ids)
            masks.append((len(prompt_ids) - 1, len(ids)))
    length = max(len(row) for row in rows)
    tokens = np.zeros((len(rows), length), np.int32)
    label_mask = np.zeros((len(rows), length - 1), bool)
    for i, (row, (start, count)) in enumerate(zip(rows, masks)):
        tokens[i, : len(row)] = row
        label_mask[i, start : start + count] = True
    return LabelBatch(tokens, label_mask, np.array([p.answer for p in prompts]), len(labels))


@reading_jit
def _label_log_likelihood(model: Transformer, tokens, label_mask, interventions) -> jax.Array:
    logits, _ = model.forward(tokens, interventions)
    return -(token_losses(logits, tokens) * label_mask).sum(-1)


def label_log_likelihoods(
    model: Transformer, batch: LabelBatch, interventions: Interventions | None = None, *,
    knock_out: np.ndarray | None = None, edges: Callable[[jax.Array], jax.Array] | None = None, chunk: int = 16,
) -> np.ndarray:
    """f32[P, C]: total log-probability of each candidate label after its prompt.

    knock_out: bool[L, K, G] heads in which the edges that ``edges`` (tokens -> bool[B, T, S], e.g.
    ``induction_targets``) builds from each chunk's tokens are knocked out. Rows are scored ``chunk`` at a
    time (the last chunk padded), so one program serves every condition.
    """
    interventions = interventions if interventions is not None else Interventions.none(model.config)
    n = batch.tokens.shape[0]
    padded = -(-n // chunk) * chunk
    tokens = np.concatenate([batch.tokens, np.zeros((padded - n,) + batch.tokens.shape[1:], np.int32)])
    mask = np.concatenate([batch.label_mask, np.zeros((padded - n,) + batch.label_mask.shape[1:], bool)])
    scores = []
    for start in range(0, padded, chunk):
        rows = jnp.asarray(tokens[start : start + chunk])
        chunk_interventions = interventions
        if knock_out is not None:
            chunk_interventions = interventions.knock_out(edges(rows), jnp.asarray(knock_out))
        scores.append(host_array(_label_log_likelihood(model, rows, jnp.asarray(mask[start : start + chunk]), chunk_interventions)))
    return np.concatenate(scores)[:n].reshape(-1, batch.n_candidates)


def accuracy(log_likelihoods: np.ndarray, answers: np.ndarray) -> float:
    """Share of prompts whose most likely label is the correct one."""
    return float((np.argmax(log_likelihoods, -1) == answers).mean())


def category_map(encode: Encode, vocab_size: int, categories: tuple[str, ...]) -> np.ndarray:
    """int[V]: category index of every token of every word of ``categories`` (with and without a leading
    space), -1 for all other tokens; the token -> category map of the category ("fuzzy") knockout."""
    mapping = -np.ones(vocab_size, np.int32)
    for index, name in enumerate(categories):
        for word in CATEGORIES[name]:
            for form in (word, " " + word):
                mapping[encode(form)] = index
    return mapping


def pattern_matching_batch(encode: Encode, bos: int, n_lines: int = 24, seeds: tuple[int, ...] = (0, 1, 2, 3)):
    """(tokens int32[B, T], targets bool[B, T, S]) for Olsson et al.'s pattern-matching task: from the last
    token of each ``"{word} {word}:"`` line to the label tokens of earlier lines of the same template."""
    sequences, target_lists = [], []
    for seed in seeds:
        ids, colons, label_starts = [bos], [], []
        for text, template in pattern_matching_lines(n_lines, seed):
            ids += encode(text if not colons else "\n" + text)
            colons.append((len(ids) - 1, template))
            label_starts.append((len(ids), template))
            ids += encode(LABELS[template])
        sequences.append(ids)
        target_lists.append((colons, label_starts))
    length = max(len(s) for s in sequences)
    tokens = np.zeros((len(seeds), length), np.int32)
    targets = np.zeros((len(seeds), length, length), bool)
    for b, (ids, (colons, label_starts)) in enumerate(zip(sequences, target_lists)):
        tokens[b, : len(ids)] = ids
        for query, template in colons:
            for key, other in label_starts:
                if key <= query and other == template:
                    targets[b, query, key] = True
    return tokens, targets


@reading_jit
def _pattern_shares(model: Transformer, tokens, targets) -> jax.Array:
    _, captured = model.forward(tokens, capture=("attn_pattern",))
    return attention_share(captured["attn_pattern"], targets)


def pattern_matching_heads(model: Transformer, encode: Encode, bos: int, top: int = 5) -> list[tuple[int, int, float]]:
    """The ``top`` heads by share of attention from each line's ":" to earlier labels of the same template
    (Olsson et al.'s pattern-matching heads), as (layer, head, share)."""
    tokens, targets = pattern_matching_batch(encode, bos)
    shares = host_array(_pattern_shares(model, jnp.asarray(tokens), jnp.asarray(targets))).reshape(model.config.n_layers, -1)
    order = np.argsort(-shares, axis=None)[:top]
    return [(int(i) // shares.shape[1], int(i) % shares.shape[1], float(shares.ravel()[i])) for i in order]

