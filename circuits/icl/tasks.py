"""In-context-learning tasks generated in code (Crosbie & Shutova 2024; Olsson et al. 2022).

Every task maps a short sequence to one of 2 or 4 semantically unrelated labels (Foo, Bar,
Baz, Qux), so only the in-context examples can tell the model which label goes with what.
Prompts are ``{sequence}:{label}`` lines separated by blank lines, ``shots`` examples and
then the query ``{sequence}:``; labels are scored by log-likelihood.
"""

from __future__ import annotations

import dataclasses
import string
from typing import Callable

import numpy as np

LABELS = ("Foo", "Bar", "Baz", "Qux")

CATEGORIES: dict[str, tuple[str, ...]] = {
    "fruit": ("apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "pear", "plum", "orange"),
    "animal": ("dog", "cat", "horse", "rabbit", "tiger", "lion", "sheep", "mouse", "wolf", "bear"),
    "furniture": ("chair", "table", "sofa", "bed", "desk", "shelf", "stool", "cabinet", "bench", "dresser"),
    "profession": ("teacher", "doctor", "lawyer", "farmer", "nurse", "pilot", "baker", "chef", "judge", "driver"),
    "color": ("red", "blue", "green", "yellow", "purple", "black", "white", "brown", "pink", "gray"),
    "vehicle": ("car", "bus", "truck", "train", "bicycle", "boat", "plane", "taxi", "tractor", "van"),
    "month": ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October"),
    "instrument": ("piano", "guitar", "violin", "drum", "flute", "trumpet", "harp", "cello", "banjo", "organ"),
    "country": ("France", "Japan", "Brazil", "Egypt", "Canada", "India", "Spain", "Kenya", "Norway", "Peru"),
}

SENTIMENT = {
    0: ("I loved this film", "what a wonderful day", "the food was delicious", "a truly great book", "she was very kind",
        "this is excellent work", "the view was beautiful", "we had so much fun", "a brilliant performance",
        "the staff were friendly", "I am very happy", "an amazing experience"),
    1: ("I hated this film", "what a terrible day", "the food was disgusting", "a truly awful book", "she was very rude",
        "this is sloppy work", "the view was ugly", "we were so bored", "a dreadful performance",
        "the staff were hostile", "I am very sad", "a horrible experience"),
}
"""A small sentiment-style set: class 0 positive, class 1 negative (labelled Foo / Bar, unrelated words)."""

Example = Callable[[np.random.Generator, int], str]
"""(rng, class index) -> the sequence text of one example of that class."""


@dataclasses.dataclass(frozen=True)
class Task:
    """A labelled sequence family: ``n_classes`` classes, each shown with label ``LABELS[class]``."""

    name: str
    kind: str  # "abstract", "category" or "sentiment"
    n_classes: int
    example: Example
    categories: tuple[str, ...] = ()  # word categories whose tokens the category knockout groups

    @property
    def labels(self) -> tuple[str, ...]:
        return LABELS[: self.n_classes]


def _letters(rng: np.random.Generator, n: int) -> list[str]:
    return list(rng.choice(list(string.ascii_uppercase), size=n, replace=False))


def _pattern_task(name: str, patterns: tuple[str, str]) -> Task:
    """Letter sequences following ``patterns[c]`` (e.g. "ABAB"), random distinct letters per example."""

    def example(rng, c):
        pattern = patterns[c]
        letters = dict(zip(sorted(set(pattern)), _letters(rng, len(set(pattern)))))
        return " ".join(letters[symbol] for symbol in pattern)

    return Task(name, "abstract", 2, example)


def _category_task(name: str, pairs: tuple[tuple[str, str], ...]) -> Task:
    """Two-word sequences: a word of ``pairs[c][0]`` then one of ``pairs[c][1]``."""

    def example(rng, c):
        first, second = pairs[c]
        return f"{rng.choice(CATEGORIES[first])} {rng.choice(CATEGORIES[second])}"

    return Task(name, "category", len(pairs), example, tuple(sorted({cat for pair in pairs for cat in pair})))


def _sentiment_example(rng, c):
    return str(rng.choice(SENTIMENT[c]))


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        _pattern_task("repetition ABAB", ("ABAB", "AABB")),
        _pattern_task("recursion ABBB", ("ABBB", "AAAB")),
        _pattern_task("centre-embedding ABCBA", ("ABCBA", "ABCAB")),
        _category_task("fruit+animal vs furniture+profession", (("fruit", "animal"), ("furniture", "profession"))),
        _category_task(
            "4-way categories",
            (("fruit", "animal"), ("furniture", "profession"), ("color", "vehicle"), ("instrument", "country")),
        ),
        Task("sentiment (unrelated labels)", "sentiment", 2, _sentiment_example),
    )
}


@dataclasses.dataclass(frozen=True)
class Prompt:
    """A few-shot prompt ending in ``":"`` and the index of its correct label."""

    text: str
    answer: int


def few_shot_prompts(task: Task, n_prompts: int, shots: int = 5, seed: int = 0) -> list[Prompt]:
    """``n_prompts`` prompts of ``shots`` labelled examples then a query, classes balanced over queries."""
    rng = np.random.default_rng(seed)
    prompts = []
    for i in range(n_prompts):
        answer = i % task.n_classes
        classes = [c % task.n_classes for c in range(shots)]
        rng.shuffle(classes)
        lines = [f"{task.example(rng, c)}:{task.labels[c]}" for c in classes]
        lines.append(f"{task.example(rng, answer)}:")
        prompts.append(Prompt("\n\n".join(lines), answer))
    return prompts


OLSSON_TEMPLATES = (("month", "animal"), ("month", "fruit"), ("color", "animal"), ("color", "fruit"))
"""Olsson et al.'s pattern-matching task: the label of a line depends on (month|color) x (animal|fruit)."""


def pattern_matching_lines(n_lines: int, seed: int = 0) -> list[tuple[str, int]]:
    """[(line text up to and including ":", template index)]: each line is ``"{word} {word}:"`` and is
    followed in the prompt by the template's label (Foo, Bar, Baz or Qux)."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n_lines):
        template = int(rng.integers(len(OLSSON_TEMPLATES)))
        first, second = OLSSON_TEMPLATES[template]
        lines.append((f"{rng.choice(CATEGORIES[first])} {rng.choice(CATEGORIES[second])}:", template))
    return lines
