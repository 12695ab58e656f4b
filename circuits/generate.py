"""Greedy decoding with the jitted forward (one compiled program for the whole continuation)."""

from __future__ import annotations

import numpy as np

from circuits.models.transformer import Transformer


def greedy_continuation(model: Transformer, prompt: list[int], max_new_tokens: int, stop: int | None = None) -> list[int]:
    """Token ids that greedy decoding appends to ``prompt`` (at most ``max_new_tokens``, ending at ``stop``).

    Every step runs the full causal forward on a fixed-length buffer, so the program
    compiles once; positions after the current one are padding that causal attention
    never reads. No KV cache: meant for short checks, not serving.
    """
    buffer = np.zeros((1, len(prompt) + max_new_tokens), dtype=np.int32)
    buffer[0, : len(prompt)] = prompt
    new: list[int] = []
    for position in range(len(prompt), buffer.shape[1]):
        logits = model(buffer)
        token = int(np.argmax(np.asarray(logits[0, position - 1])))
        buffer[0, position] = token
        new.append(token)
        if token == stop:
            break
    return new
