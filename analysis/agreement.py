"""Do weight-only predictions agree with forward passes? Rank correlation, precision@k, ablation effects."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats

from circuits.analysis.ablation import estimate_sweep_losses, heads_mask, mean_head_outputs, one_head_each, sweep_losses
from circuits.analysis.repeated_tokens import RepeatedTokens
from circuits.analysis.results import HeadScores
from circuits.models.transformer import Transformer


def top_heads(scores: HeadScores | np.ndarray, k: int) -> list[tuple[int, int]]:
    """The k highest-scoring (layer, head) pairs."""
    return [(layer, head) for layer, head, _ in HeadScores("", np.asarray(scores), None).top(k)]


def heads_for_fraction(n_layers: int, n_heads: int, fraction: float) -> int:
    """ceil(fraction * L * N): the head count of "the top p% of heads"."""
    return max(1, math.ceil(fraction * n_layers * n_heads - 1e-9))


def random_heads(n_layers: int, n_heads: int, k: int, seed: int, like: list[tuple[int, int]] | None = None) -> list[tuple[int, int]]:
    """k distinct random heads; with ``like``, as many per layer as ``like`` has (a layer-matched baseline)."""
    rng = np.random.default_rng(seed)
    if like is None:
        flat = rng.choice(n_layers * n_heads, size=k, replace=False)
        return [(int(i) // n_heads, int(i) % n_heads) for i in flat]
    chosen = []
    for layer in sorted({layer for layer, _ in like}):
        count = sum(1 for other, _ in like if other == layer)
        chosen += [(layer, int(h)) for h in rng.choice(n_heads, size=count, replace=False)]
    return chosen


def _undefined(predicted, measured) -> bool:
    """Rankings of constant or non-finite scores mean nothing: statistics over them are undefined."""
    predicted, measured = np.ravel(predicted), np.ravel(measured)
    return not (np.isfinite(predicted).all() and np.isfinite(measured).all()) or np.ptp(predicted) == 0 or np.ptp(measured) == 0


def precision_at_k(predicted, measured, k: int) -> float:
    """Share of the k top predicted heads that are among the k top measured heads; NaN (undefined) when either
    side is constant or not finite (its top k would be an arbitrary tie-break)."""
    if _undefined(predicted, measured):
        return float("nan")
    return len(set(top_heads(predicted, k)) & set(top_heads(measured, k))) / k


def spearman(predicted, measured) -> float:
    """Spearman rank correlation over all heads; NaN (undefined) when either side is constant or not finite."""
    if _undefined(predicted, measured):
        return float("nan")
    return float(stats.spearmanr(np.ravel(predicted), np.ravel(measured)).statistic)


@dataclasses.dataclass(frozen=True)
class AblationEffect:
    """Loss (nats) on the later repeats with nothing ablated, with the k ranked heads ablated, and with
    k random heads ablated (one entry per seed)."""

    k: int
    heads: list[tuple[int, int]]
    mode: str
    clean_loss: float
    ablated_loss: float
    random_losses: list[float]
    random_seeds: list[int]

    @property
    def increase(self) -> float:
        return self.ablated_loss - self.clean_loss

    @property
    def random_increase(self) -> float:
        """Mean increase over the random-head seeds."""
        return float(np.mean(self.random_losses)) - self.clean_loss

    @property
    def random_increase_std(self) -> float:
        return float(np.std(self.random_losses))


def ablation_effect(
    model: Transformer,
    data: RepeatedTokens,
    ranking,
    k: int,
    *,
    seeds: tuple[int, ...] = (0, 1, 2),
    mode: str = "zero",
    layer_matched: bool = False,
    show_progress: bool | None = None,
) -> AblationEffect:
    """Ablate the top-k heads of ``ranking`` [L, N] and, per seed, k random heads; one sweep program for all.

    mode: ``"zero"`` or ``"mean"`` (each head's mean output over ``data``).
    layer_matched: draw the random heads with the same number per layer as the top-k.
    show_progress: the sweep's bar (see :func:`~circuits.analysis.ablation.sweep_losses`).
    """
    if mode not in ("zero", "mean"):
        raise ValueError(f"unknown ablation mode {mode!r}; use 'zero' or 'mean'")
    config = model.config
    heads = top_heads(ranking, k)
    random_sets = [random_heads(config.n_layers, config.n_heads, k, seed, heads if layer_matched else None) for seed in seeds]
    sets = np.stack([heads_mask(config, [])] + [heads_mask(config, heads)] + [heads_mask(config, r) for r in random_sets])
    replacement = mean_head_outputs(model, data.tokens) if mode == "mean" else None
    losses = sweep_losses(model, data.tokens, data.later_repeats, ablate=sets, replacement=replacement, show_progress=show_progress)
    return AblationEffect(k, heads, mode, float(losses[0]), float(losses[1]), [float(x) for x in losses[2:]], list(seeds))


@dataclasses.dataclass(frozen=True)
class HeadEffects:
    """Loss increase (nats) of ablating each head alone: ``estimated`` f32[L, N] for every head (gradient
    estimate, one forward and one backward), ``exact`` [(layer, head, increase)] for the ``n_exact`` heads
    the estimate ranks highest, checked by an exact sweep."""

    estimated: np.ndarray
    exact: list[tuple[int, int, float]]


def single_head_effects(model: Transformer, data: RepeatedTokens, n_exact: int, *, show_progress: bool = False) -> HeadEffects:
    """Every head's ablation effect estimated at once; the strongest ``n_exact`` by that estimate checked exactly.

    This is how to afford per-head evidence on a large model: the estimate orders the heads, and the
    exact sweep is spent only where it matters.
    """
    config = model.config
    sets = one_head_each(config)
    nothing = np.zeros((1,) + sets.shape[1:], bool)
    clean = float(sweep_losses(model, data.tokens, data.later_repeats, ablate=nothing, show_progress=False)[0])
    estimated = estimate_sweep_losses(model, data.tokens, data.later_repeats, ablate=sets, show_progress=show_progress) - clean
    order = np.argsort(-estimated, kind="stable")[:n_exact]
    exact = sweep_losses(model, data.tokens, data.later_repeats, ablate=sets[order], show_progress=show_progress) - clean
    heads = [divmod(int(i), config.n_heads) for i in order]
    return HeadEffects(
        estimated.reshape(config.n_layers, config.n_heads).astype(np.float32),
        [(layer, head, float(increase)) for (layer, head), increase in zip(heads, exact)],
    )


@dataclasses.dataclass(frozen=True)
class Agreement:
    """How well a weight-only ranking predicts a measured one, and what ablating its top heads does."""

    predicted: str
    measured: str
    spearman: float
    k: int
    precision_at_k: float
    ablation: AblationEffect


def agreement(
    model: Transformer, predicted: HeadScores, measured: HeadScores, data: RepeatedTokens, k: int, *, seeds=(0, 1, 2)
) -> Agreement:
    """Compare ``predicted`` with ``measured`` over all heads, and ablate the k top predicted heads vs k random."""
    return Agreement(
        predicted.name,
        measured.name,
        spearman(predicted, measured),
        k,
        precision_at_k(predicted, measured, k),
        ablation_effect(model, data, predicted, k, seeds=seeds),
    )
