"""Clamps (Singh et al. 2024): subcircuits held fixed throughout training, as intervention data.

A :class:`Clamp` names what to fix; :meth:`Clamp.interventions` turns it into an
:class:`Interventions` pytree for one :class:`TaskBatch`, inside the jitted training step.
"Layer 1" and "layer 2" of the paper are the first and last layers here.

- ``previous-token``: every first-layer head attends to the previous position (position 0 to itself).
- ``induction``: every last-layer head attends, from each loss position, to the key a perfect
  induction head would pick (the label after the matching exemplar; the token after the
  earlier occurrence).
- ``copy``: every last-layer head's output is replaced by an ideal copy of the tokens it
  attends to, written straight into the logits (``copy_gain`` nats when all attend to one key).
- ``ablate:L1H0,L1H5``: zero-ablate those heads.

Clamps combine with ``+``: ``previous-token+copy``.
"""

from __future__ import annotations

import dataclasses
import re

import jax.numpy as jnp
import numpy as np

from circuits.analysis.targets import previous_token_targets
from circuits.formation.defaults import CLAMP_NAMES
from circuits.formation.tasks import TaskBatch
from circuits.models.config import ModelConfig
from circuits.models.interventions import Interventions
from circuits.utils import head_label

_HEAD = re.compile(r"^L(\d+)H(\d+)$")


class ClampError(ValueError):
    """A clamp spec that cannot be parsed or does not fit the model."""


@dataclasses.dataclass(frozen=True)
class Clamp:
    """What to hold fixed during training (all False / empty: the unclamped run)."""

    previous_token: bool = False
    induction: bool = False
    copy: bool = False
    ablated: tuple[tuple[int, int], ...] = ()
    copy_gain: float = 10.0

    @property
    def name(self) -> str:
        parts = [n for n, on in zip(CLAMP_NAMES, (self.previous_token, self.induction, self.copy)) if on]
        if self.ablated:
            parts.append("ablate:" + ",".join(head_label(layer, head) for layer, head in self.ablated))
        return "+".join(parts) or "none"

    @classmethod
    def parse(cls, spec: str) -> "Clamp":
        """``none``, ``previous-token``, ``induction``, ``copy``, ``ablate:L1H0,L1H3``, or several joined by ``+``."""
        fields: dict = {}
        for part in spec.strip().split("+"):
            if part == "none":
                continue
            if part in CLAMP_NAMES:
                fields[part.replace("-", "_")] = True
            elif part.startswith("ablate:"):
                heads = []
                for head in part[len("ablate:"):].split(","):
                    match = _HEAD.match(head.strip())
                    if not match:
                        raise ClampError(f"bad head {head!r} in clamp {spec!r}; write heads as L<layer>H<head>, e.g. ablate:L1H0,L1H3")
                    heads.append((int(match[1]), int(match[2])))
                fields["ablated"] = tuple(heads)
            else:
                raise ClampError(f"unknown clamp {part!r} in {spec!r}; known: none, {', '.join(CLAMP_NAMES)}, ablate:L<l>H<h>,...")
        return cls(**fields)

    def check(self, config: ModelConfig) -> None:
        """Raise :class:`ClampError` if an ablated head does not exist or layer 1 and layer 2 coincide."""
        bad = [head_label(l, h) for l, h in self.ablated if not (0 <= l < config.n_layers and 0 <= h < config.n_heads)]
        if bad:
            raise ClampError(f"clamp {self.name}: no head {', '.join(bad)} in a model with {config.n_layers} layers x {config.n_heads} heads")
        if config.n_layers < 2 and self.previous_token and (self.induction or self.copy):
            raise ClampError(f"clamp {self.name} needs at least 2 layers (first-layer and last-layer clamps)")

    def interventions(self, config: ModelConfig, batch: TaskBatch) -> Interventions | None:
        """The :class:`Interventions` for this clamp on ``batch`` (None for the unclamped run); traceable."""
        if self.name == "none":
            return None
        interventions = Interventions.none(config)
        shape = (config.n_layers, config.n_kv_heads, config.q_per_kv)
        first, last = np.zeros(shape, bool), np.zeros(shape, bool)
        first[0], last[-1] = True, True
        if self.ablated:
            heads = np.zeros((config.n_layers, config.n_heads), bool)
            heads[tuple(np.array(self.ablated).T)] = True
            interventions = interventions.ablate(jnp.asarray(heads.reshape(shape)))
        if self.previous_token or self.induction:
            batch_size, seq_len = batch.tokens.shape
            previous = previous_token_targets(batch.tokens).at[:, 0, 0].set(True)  # position 0 on itself
            patterns = jnp.zeros((config.n_layers, batch_size, seq_len, seq_len), jnp.float32)
            heads = np.zeros(shape, bool)
            if self.previous_token:
                patterns = patterns.at[0].set(previous.astype(jnp.float32))
                heads |= first
            if self.induction:
                patterns = patterns.at[-1].set(batch.induction_pattern())
                heads |= last
            interventions = interventions.clamp_pattern(patterns, jnp.asarray(heads))
        if self.copy:
            interventions = interventions.ideal_copy(batch.copy_tokens, jnp.asarray(last), self.copy_gain)
        return interventions
