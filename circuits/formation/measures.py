"""Progress measures of induction-head formation (Singh et al. 2024) and phase-change detection.

At each checkpoint, on a fixed evaluation batch and under the run's own clamp:
- loss (nats) and accuracy at the loss positions;
- previous-token score [N] of each first-layer head: its attention from the measured rows
  (labels after an exemplar; every position for ``repeat``) to the previous position;
- induction strength [N] of each last-layer head: attention from the loss positions to the
  correct key minus the mean attention per wrong key (0 for a uniform head, 1 for a perfect one);
- copy score [N] of each last-layer head: the direct-logit margin (nats) of the target over the mean
  token that its output would give if it attended only to the correct key: the key's value through
  W_O, the final norm (gain, and the query's actual residual RMS) and W_U. Measured on the actual
  residual stream, so a label that reaches layer 2 through layer 1 (V-composition) counts;
- K-composition, from the weights alone: the largest K-composition score of a (first-layer head,
  last-layer head) pair, in units of the random-weights baseline (``composition_scores``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from circuits.analysis.composition import composition_scores
from circuits.analysis.targets import attention_share, previous_token_targets
from circuits.formation.clamps import Clamp
from circuits.formation.tasks import TaskBatch
from circuits.models.layers import einsum, rms_norm
from circuits.models.transformer import Transformer, reading_jit


def query_losses(model: Transformer, batch: TaskBatch, clamp: Clamp, capture: tuple[str, ...] = ()):
    """(mean loss f32[] over the loss positions, correct f32[B, T], captured activations); traceable."""
    logits, captured = model.forward(
        batch.tokens, clamp.interventions(model.config, batch), capture, batch.embeddings(model.embed[...])
    )
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    losses = -jnp.take_along_axis(log_probs, batch.targets[..., None], axis=-1)[..., 0]
    mask = batch.loss_mask.astype(jnp.float32)
    loss = (losses * mask).sum() / jnp.maximum(mask.sum(), 1.0)
    correct = (logits.argmax(-1) == batch.targets).astype(jnp.float32) * mask
    return loss, correct, captured


def _per_key_share(patterns: jax.Array, keys: jax.Array, rows: jax.Array) -> jax.Array:
    """f32[K, G]: mean over ``rows`` bool[B, T] of the attention per key in ``keys`` bool[B, T, S].

    patterns f32[B, K, G, T, S] of one layer.
    """
    on_keys = einsum("bkgts,bts->bkgt", patterns, keys.astype(patterns.dtype))
    per_key = on_keys / jnp.maximum(keys.sum(-1), 1)[:, None, None, :]
    weights = rows.astype(patterns.dtype)
    return einsum("bkgt,bt->kg", per_key, weights) / jnp.maximum(weights.sum(), 1.0)


def attention_measures(patterns: jax.Array, batch: TaskBatch) -> dict[str, jax.Array]:
    """{"previous_token": f32[N] (first layer), "induction_strength": f32[N] (last layer)} from
    patterns f32[L, B, K, G, T, S]."""
    rows = jnp.broadcast_to(batch.previous_token_rows, batch.tokens.shape)
    previous = previous_token_targets(batch.tokens) & rows[:, :, None]
    previous_token = attention_share(patterns[:1], previous)[0]
    loss_rows = batch.loss_mask
    strength = _per_key_share(patterns[-1], batch.correct_keys, loss_rows) - _per_key_share(
        patterns[-1], batch.wrong_keys, loss_rows
    )
    return {"previous_token": previous_token.reshape(-1), "induction_strength": strength.reshape(-1)}


def copy_scores(model: Transformer, captured: dict[str, jax.Array], batch: TaskBatch) -> jax.Array:
    """f32[N]: each last-layer head's direct-logit margin (nats) for the target when attending to the correct key.

    captured: ``resid_pre`` and ``resid_post`` [L, B, T, M] of the same forward.
    """
    config = model.config
    last = config.n_layers - 1
    normed = rms_norm(captured["resid_pre"][-1], model.tensor("attn_norm", last), config.rms_norm_eps)
    correct_key = jnp.argmax(batch.correct_keys, axis=-1)  # [B, T]
    at_key = jnp.take_along_axis(normed, correct_key[..., None], axis=1)  # [B, T, M]
    values = einsum("btm,mkd->btkd", at_key, model.tensor("wv", last))
    outputs = einsum("btkd,kgdm->btkgm", values, model.tensor("wo", last)).astype(jnp.float32)
    final = captured["resid_post"][-1].astype(jnp.float32)
    inverse_rms = jax.lax.rsqrt(jnp.mean(final * final, axis=-1) + config.rms_norm_eps)  # [B, T]
    unembed = (model.tensor("final_norm")[:, None] * model.tensor("unembed")).astype(jnp.float32)  # [M, V]
    target_direction = jnp.take(unembed, batch.targets, axis=1) - unembed.mean(axis=1)[:, None, None]  # [M, B, T]
    margins = einsum("btkgm,mbt->btkg", outputs, target_direction) * inverse_rms[:, :, None, None]
    rows = batch.loss_mask.astype(jnp.float32)
    return (einsum("btkg,bt->kg", margins, rows) / jnp.maximum(rows.sum(), 1.0)).reshape(-1)


@dataclasses.dataclass(frozen=True)
class Measures:
    """Progress measures at one step (see the module docstring); per-head arrays are [N]."""

    step: int
    loss: float
    accuracy: float
    previous_token: np.ndarray
    induction_strength: np.ndarray
    copy: np.ndarray
    k_composition: float

    def summary(self) -> dict[str, float]:
        """Scalars for curves: loss, accuracy, the best head of each subcircuit measure, K-composition."""
        return {
            "loss": self.loss,
            "accuracy": self.accuracy,
            "previous_token": float(self.previous_token.max()),
            "induction_strength": float(self.induction_strength.max()),
            "copy": float(self.copy.max()),
            "k_composition": self.k_composition,
        }

    def to_dict(self) -> dict:
        return {
            "step": self.step,
            "loss": self.loss,
            "accuracy": self.accuracy,
            "k_composition": self.k_composition,
            **{name: [round(float(x), 5) for x in getattr(self, name)] for name in ("previous_token", "induction_strength", "copy")},
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Measures":
        arrays = {name: np.asarray(data[name], np.float32) for name in ("previous_token", "induction_strength", "copy")}
        scalars = {name: float(data[name]) for name in ("loss", "accuracy", "k_composition")}
        return cls(step=int(data["step"]), **scalars, **arrays)


def measure(model: Transformer, batch: TaskBatch, clamp: Clamp, step: int, evaluate=None) -> Measures:
    """Every progress measure of ``model`` on ``batch`` under ``clamp``.

    ``evaluate``: :func:`evaluate_fn` ``(clamp)``, made once and reused across checkpoints.
    """
    loss, correct, attention = (evaluate or evaluate_fn(clamp))(model, batch)
    accuracy = float(correct.sum() / np.maximum(np.asarray(batch.loss_mask).sum(), 1))
    return Measures(
        step=step,
        loss=float(loss),
        accuracy=accuracy,
        previous_token=np.asarray(attention["previous_token"]),
        induction_strength=np.asarray(attention["induction_strength"]),
        copy=np.asarray(attention["copy"], np.float32),
        k_composition=float(composition_scores(model, "k").ratio()[0, :, -1, :].max()),
    )


def evaluate_fn(clamp: Clamp):
    """A jitted ``(model, batch) -> (loss, correct [B, T], {measure name: f32[N]})`` for ``clamp``."""

    @reading_jit
    def evaluate(model: Transformer, batch: TaskBatch):
        loss, correct, captured = query_losses(model, batch, clamp, ("attn_pattern", "resid_pre", "resid_post"))
        measures = attention_measures(captured["attn_pattern"], batch)
        return loss, correct, {**measures, "copy": copy_scores(model, captured, batch)}

    return evaluate


def phase_change_step(steps: np.ndarray, losses: np.ndarray, below: float = np.inf, smooth: int = 3) -> int | None:
    """The step of steepest loss drop: the midpoint of the interval where the loss (moving mean over
    ``smooth`` checkpoints) falls fastest per step, among the intervals that end below ``below``.

    ``below`` is the loss of the best solution without induction (``context_baseline``); it keeps the
    early drop to that plateau from counting as the phase change. None when no interval qualifies.
    """
    steps, losses = np.asarray(steps, np.float64), np.asarray(losses, np.float64)
    if len(steps) < 3:
        return None
    width = max(1, min(smooth, len(losses) - 2))
    smoothed = np.convolve(losses, np.ones(width) / width, mode="valid")
    centres = np.convolve(steps, np.ones(width) / width, mode="valid")
    slopes = np.where(smoothed[1:] < below, np.diff(smoothed) / np.diff(centres), np.inf)
    steepest = int(np.argmin(slopes))
    if not slopes[steepest] < 0:
        return None
    return int(round((centres[steepest] + centres[steepest + 1]) / 2))
