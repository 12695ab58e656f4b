"""Result containers: arrays plus the preprocessing that produced them."""

from __future__ import annotations

import dataclasses

import numpy as np

from circuits.analysis.weights import Preprocessing
from circuits.utils import head_label


@dataclasses.dataclass(frozen=True)
class HeadScores:
    """Per-head scores f32[L, N] (flat head h = k * G + g); ``np.asarray(result)`` gives ``scores``.

    ``preprocessing``: the weight preprocessing of a weight-only score (None for measured ones);
    ``source``: where the numbers come from (``"weights"``, or the forward-pass data used).
    """

    name: str
    scores: np.ndarray
    preprocessing: Preprocessing | None
    eigenvalues: np.ndarray | None = None  # complex[L, N, D] when requested
    source: str = "weights"

    def __array__(self, dtype=None, copy=None):
        return self.scores if dtype is None else self.scores.astype(dtype)

    def __repr__(self) -> str:
        layers, heads = self.scores.shape
        top = ", ".join(f"{head_label(l, h)} {score:.3g}" for l, h, score in self.top(3))
        return f"HeadScores({self.name!r}, {layers} layers x {heads} heads, top {top}; from {self.source})"

    def _repr_html_(self) -> str:
        """The scores as a layer x head heatmap (log colour scale where they span orders of magnitude)."""
        from circuits.svg_figures import ColourScale, head_heatmap

        scale = ColourScale.fit(self.scores, kind=ColourScale.suited(self.scores))
        return head_heatmap(self.scores, f"{self.name} ({self.source})", scale=scale)

    def top(self, k: int) -> list[tuple[int, int, float]]:
        """The k highest-scoring heads as (layer, head, score)."""
        flat = np.argsort(-self.scores, axis=None)[:k]
        layers, heads = np.unravel_index(flat, self.scores.shape)
        return [(int(l), int(h), float(self.scores[l, h])) for l, h in zip(layers, heads)]


@dataclasses.dataclass(frozen=True)
class CompositionScores:
    """Composition scores f32[L, N, L, N]: ``scores[l1, j, l2, i]`` for earlier head (l1, j) into later head (l2, i);
    zero unless l1 < l2. ``baseline_mean`` / ``baseline_std``: the same score for Gaussian weights of the same shapes."""

    kind: str
    scores: np.ndarray
    baseline_mean: float
    baseline_std: float
    preprocessing: Preprocessing

    def __array__(self, dtype=None, copy=None):
        return self.scores if dtype is None else self.scores.astype(dtype)

    def ratio(self) -> np.ndarray:
        """Scores in units of the random baseline ("x times baseline")."""
        return self.scores / self.baseline_mean
