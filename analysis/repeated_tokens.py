"""Repeated random tokens: the standard probe for induction (BOS, then a random block repeated)."""

from __future__ import annotations

import dataclasses

import numpy as np

from circuits.models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class RepeatedTokens:
    """tokens int32[B, 1 + repeats * length]: BOS, then the same random ``length``-token block ``repeats`` times."""

    tokens: np.ndarray
    length: int
    repeats: int
    seed: int

    @property
    def later_repeats(self) -> np.ndarray:
        """bool[T - 1] over next-token losses: True where the predicted token is in a repeat after the first."""
        predicted = np.arange(1, self.tokens.shape[1])
        return predicted > self.length

    @property
    def first_repeat(self) -> np.ndarray:
        """bool[T - 1]: True where the predicted token is in the first block (after its first token)."""
        predicted = np.arange(1, self.tokens.shape[1])
        return (predicted >= 2) & (predicted <= self.length)

    def describe(self) -> str:
        batch = self.tokens.shape[0]
        return f"{batch} sequences of BOS + {self.length} random tokens x {self.repeats}, seed {self.seed}"


def repeated_random_tokens(
    config: ModelConfig, batch: int = 16, length: int = 50, repeats: int = 2, seed: int = 0, bos: int | None = None
) -> RepeatedTokens:
    """``batch`` sequences of BOS (the model's, else 0) + ``length`` random non-BOS ids repeated ``repeats`` times."""
    bos = (config.bos_token_id if config.bos_token_id is not None else 0) if bos is None else bos
    rng = np.random.default_rng(seed)
    block = rng.integers(0, config.vocab_size - 1, (batch, length))
    block = block + (block >= bos)  # every id but BOS
    tokens = np.concatenate([np.full((batch, 1), bos), np.tile(block, repeats)], axis=1).astype(np.int32)
    return RepeatedTokens(tokens, length, repeats, seed)
