"""Training data for induction-head formation (Singh et al. 2024), generated in jnp from a PRNG key.

Two tasks, both returned as a :class:`TaskBatch` that says where the loss is taken, which key
a perfect induction head attends to, and which keys are wrong, so training, clamps and
progress measures read one structure:

- ``fewshot``: in-context classification. Exemplars are noisy vectors around random class
  centres (a stand-in for Omniglot embeddings), fed as input vectors; each sequence is
  ``x_1 l_1 ... x_P l_P x_q`` with P distinct classes, P distinct labels drawn afresh per
  sequence (so only in-context learning solves it), and the query from one context class.
  The loss is on the query position only.
- ``repeat``: BOS, random filler, then a random block of varying length repeated twice;
  next-token loss on the second repeat.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TaskBatch:
    """One batch of a formation task.

    tokens int32[B, T]: input token ids (0 where the input is an exemplar vector).
    exemplars f32[B, T, M] or None: input vectors, used where ``is_exemplar`` is True.
    is_exemplar bool[T]: positions that take an exemplar vector instead of a token embedding.
    targets int32[B, T]: the token to predict at each position.
    loss_mask bool[B, T]: positions whose prediction counts.
    correct_keys bool[B, T, S]: for loss positions, the key a perfect induction head attends to.
    wrong_keys bool[B, T, S]: for loss positions, the keys that would give a wrong answer.
    copy_tokens int32[B, S]: what an ideal copy of each key writes (-1: nothing).
    previous_token_rows bool[T]: query positions where the previous-token score is measured.
    """

    tokens: jax.Array
    exemplars: jax.Array | None
    is_exemplar: jax.Array
    targets: jax.Array
    loss_mask: jax.Array
    correct_keys: jax.Array
    wrong_keys: jax.Array
    copy_tokens: jax.Array
    previous_token_rows: jax.Array

    def embeddings(self, embed: jax.Array) -> jax.Array | None:
        """Input residual stream [B, T, M] from the token embedding table ``embed`` [V, M] (None: tokens only)."""
        if self.exemplars is None:
            return None
        token_vectors = jnp.take(embed, self.tokens, axis=0)
        return jnp.where(self.is_exemplar[None, :, None], self.exemplars.astype(embed.dtype), token_vectors)

    def induction_pattern(self) -> jax.Array:
        """f32[B, T, S]: the perfect layer-2 pattern, each loss row on its correct key, other rows on themselves."""
        seq_len = self.tokens.shape[1]
        itself = jnp.eye(seq_len, dtype=bool)[None]
        rows = self.loss_mask[:, :, None]
        return jnp.where(rows, self.correct_keys, itself).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class FewShotTask:
    """In-context classification with ``n_pairs`` exemplar-label pairs and a query.

    ``n_classes`` class centres (unit RMS in ``dim`` dimensions, fixed by ``seed``); an exemplar is
    ``centre + noise * N(0, 1)`` per coordinate. Labels are tokens 0 .. n_labels - 1.
    """

    n_classes: int = 256
    n_labels: int = 16
    n_pairs: int = 2
    noise: float = 0.3
    seed: int = 0
    name: str = "fewshot"

    @property
    def seq_len(self) -> int:
        return 2 * self.n_pairs + 1

    @property
    def vocab_size(self) -> int:
        return self.n_labels

    @property
    def context_baseline(self) -> float:
        """Loss (nats) of the best answer without induction: uniform over the labels in context."""
        return math.log(self.n_pairs)

    def __post_init__(self):
        if self.n_pairs < 2:
            raise ValueError(f"n_pairs={self.n_pairs}: at least 2 pairs are needed for a wrong label to exist")
        if self.n_pairs > min(self.n_classes, self.n_labels):
            raise ValueError(f"n_pairs={self.n_pairs} needs as many distinct classes and labels (have {self.n_classes}, {self.n_labels})")

    def class_centres(self, dim: int) -> jax.Array:
        """f32[n_classes, dim], unit RMS per centre."""
        return jax.random.normal(jax.random.key(self.seed), (self.n_classes, dim), jnp.float32)

    def batch(self, key: jax.Array, batch_size: int, centres: jax.Array) -> TaskBatch:
        """A fresh batch; traceable (``key`` may be traced, shapes are static)."""
        p, t = self.n_pairs, self.seq_len
        class_key, label_key, query_key, noise_key = jax.random.split(key, 4)
        keys = jax.random.split(class_key, batch_size)
        classes = jax.vmap(lambda k: jax.random.choice(k, self.n_classes, (p,), replace=False))(keys)  # [B, P]
        keys = jax.random.split(label_key, batch_size)
        labels = jax.vmap(lambda k: jax.random.choice(k, self.n_labels, (p,), replace=False))(keys)  # [B, P]
        answer = jax.random.randint(query_key, (batch_size,), 0, p)  # which pair the query matches
        exemplar_classes = jnp.concatenate([classes, jnp.take_along_axis(classes, answer[:, None], 1)], axis=1)  # [B, P+1]
        noise = self.noise * jax.random.normal(noise_key, exemplar_classes.shape + (centres.shape[1],))
        vectors = centres[exemplar_classes] + noise  # [B, P+1, M]

        positions = jnp.arange(t)
        is_exemplar = positions % 2 == 0
        exemplars = jnp.zeros((batch_size, t, centres.shape[1]), jnp.float32).at[:, 0::2].set(vectors)
        tokens = jnp.zeros((batch_size, t), jnp.int32).at[:, 1::2].set(labels)
        target = jnp.take_along_axis(labels, answer[:, None], 1)[:, 0]
        targets = jnp.zeros((batch_size, t), jnp.int32).at[:, -1].set(target)
        loss_mask = jnp.broadcast_to(positions == t - 1, (batch_size, t))
        label_keys = (positions % 2 == 1)[None, :]
        correct_key = 2 * answer + 1  # [B]
        is_correct = positions[None, :] == correct_key[:, None]  # [B, S]
        query_row = loss_mask[:, :, None]
        return TaskBatch(
            tokens=tokens,
            exemplars=exemplars,
            is_exemplar=is_exemplar,
            targets=targets,
            loss_mask=loss_mask,
            correct_keys=query_row & is_correct[:, None, :],
            wrong_keys=query_row & (label_keys & ~is_correct)[:, None, :],
            copy_tokens=jnp.where(is_exemplar[None, :], -1, tokens),
            previous_token_rows=~is_exemplar,
        )


@dataclasses.dataclass(frozen=True)
class RepeatTask:
    """BOS (token 0), random filler, then a random block of ``min_length`` .. ``max_length`` tokens
    (1 .. vocab_size - 1) repeated twice; every sequence is ``1 + 2 * max_length`` long.

    The block length varies per sequence so that the induction target is at no fixed offset:
    a purely positional head cannot solve the task.
    """

    vocab_size: int = 64
    min_length: int = 8
    max_length: int = 16
    name: str = "repeat"

    def __post_init__(self):
        if not 2 <= self.min_length <= self.max_length:
            raise ValueError(f"need 2 <= min_length <= max_length, got {self.min_length}, {self.max_length}")

    @property
    def seq_len(self) -> int:
        return 1 + 2 * self.max_length

    @property
    def context_baseline(self) -> float:
        """Loss (nats) of the best answer without induction: uniform over the non-BOS tokens."""
        return math.log(self.vocab_size - 1)

    def class_centres(self, dim: int) -> None:
        return None

    def batch(self, key: jax.Array, batch_size: int, centres: None = None) -> TaskBatch:
        """A fresh batch; traceable. Loss on the predictions of the second repeat's tokens 2 .. n."""
        t = self.seq_len
        length_key, block_key, filler_key = jax.random.split(key, 3)
        n = jax.random.randint(length_key, (batch_size, 1), self.min_length, self.max_length + 1)  # [B, 1]
        start = 1 + 2 * (self.max_length - n)  # first position of the first block
        block = jax.random.randint(block_key, (batch_size, self.max_length), 1, self.vocab_size)
        filler = jax.random.randint(filler_key, (batch_size, t), 1, self.vocab_size)
        positions = jnp.arange(t)[None, :]
        in_blocks = positions >= start
        repeated = jnp.take_along_axis(block, jnp.where(in_blocks, (positions - start) % n, 0), axis=1)
        tokens = jnp.where(positions == 0, 0, jnp.where(in_blocks, repeated, filler)).astype(jnp.int32)
        targets = jnp.concatenate([tokens[:, 1:], jnp.zeros((batch_size, 1), jnp.int32)], axis=1)
        loss_mask = (positions >= start + n) & (positions < t - 1)
        correct = jnp.arange(t)[None, None, :] == (positions - n + 1)[:, :, None]  # key after the earlier occurrence
        first_block = (positions >= start) & (positions < start + n)  # [B, S]
        rows = loss_mask[:, :, None]
        return TaskBatch(
            tokens=tokens,
            exemplars=None,
            is_exemplar=jnp.zeros((t,), bool),
            targets=targets,
            loss_mask=loss_mask,
            correct_keys=rows & correct,
            wrong_keys=rows & (first_block[:, None, :] & ~correct),
            copy_tokens=tokens,
            previous_token_rows=jnp.arange(t) >= 1,
        )
