"""``circuits icl``: induction-head ablation and knockout on in-context-learning tasks (Crosbie & Shutova 2024).

Heads are chosen by prefix matching on BOS + 50 random tokens x 4; every task is scored with
no ablation, with the top p% heads zero- or mean-ablated, with the same number of random heads
per layer ablated (several seeds), and with only the induction edges (exact or category)
knocked out in the top heads.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from circuits.analysis.ablation import heads_mask, mean_head_outputs
from circuits.analysis.agreement import heads_for_fraction, random_heads, top_heads
from circuits.analysis.attention import prefix_matching_scores
from circuits.analysis.repeated_tokens import repeated_random_tokens
from circuits.analysis.targets import category_targets, induction_targets
from circuits.icl.scoring import (
    accuracy,
    category_map,
    encode_prompts,
    label_log_likelihoods,
    pattern_matching_heads,
)
from circuits.icl.tasks import TASKS, few_shot_prompts
from circuits.models.interventions import Interventions
from circuits.plots import grouped_bars
from circuits.utils import ResultFiles, head_label, json_text, progress

SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ICLSettings:
    fractions: tuple[float, ...] = (0.01, 0.03)
    prompts_per_task: int = 48
    shots: int = 5
    random_seeds: tuple[int, ...] = (0, 1, 2)
    selection_seeds: tuple[int, ...] = (0, 1, 2)
    mean_ablation: bool = True


QUICK = ICLSettings(prompts_per_task=16, random_seeds=(0, 1), selection_seeds=(0,))


@dataclasses.dataclass(frozen=True)
class ICLResult(ResultFiles):
    """accuracy[task][condition]: one value per seed (random-head conditions) or a single value."""

    FILES = ("icl.json", "icl.md", "icl.png")

    model: str
    settings: dict
    heads: dict[str, list[tuple[int, int]]]
    accuracy: dict[str, dict[str, list[float]]]
    pattern_matching_heads: list[tuple[int, int, float]]

    def rows(self) -> list[tuple[str, str, float, float, float]]:
        """(task, condition, mean accuracy, drop vs no ablation, std over seeds)."""
        out = []
        for task, conditions in self.accuracy.items():
            clean = conditions["no ablation"][0]
            for condition, values in conditions.items():
                mean = float(np.mean(values))
                out.append((task, condition, mean, clean - mean, float(np.std(values))))
        return out

    def to_markdown(self) -> str:
        lines = [f"# In-context learning with induction heads removed: {self.model}", "",
                 "| task | condition | accuracy | drop vs no ablation | std over seeds |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {t} | {c} | {a:.3f} | {d:+.3f} | {s:.3f} |" for t, c, a, d, s in self.rows()]
        lines += ["", "Top heads: " + "; ".join(f"{k}: " + ", ".join(head_label(l, h) for l, h in v) for k, v in self.heads.items())]
        lines += ["", "Pattern-matching heads (Olsson et al.), share of attention from ':' to earlier same-template labels: "
                  + ", ".join(f"{head_label(l, h)} {s:.3f}" for l, h, s in self.pattern_matching_heads)]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, **dataclasses.asdict(self)}

    def __repr__(self) -> str:
        return f"ICLResult({self.model}: {len(self.accuracy)} tasks, conditions {', '.join(next(iter(self.accuracy.values()), {}))})"

    def _repr_html_(self) -> str:
        """The accuracy table and its grouped-bar figure."""
        import base64

        from markdown_it import MarkdownIt

        figure = base64.b64encode(grouped_bars(self.accuracy, "accuracy")).decode()
        return MarkdownIt("commonmark").enable("table").render(self.to_markdown()) + f'<img src="data:image/png;base64,{figure}"/>'

    def files(self) -> dict[str, str | bytes]:
        """icl.json, icl.md and icl.png (grouped bars: accuracy per task and condition, seeds' spread as error bars)."""
        return dict(zip(self.FILES, (json_text(self.to_dict()), self.to_markdown(), grouped_bars(self.accuracy, "accuracy"))))


def run_icl(model, tokenizer, name: str, settings: ICLSettings = ICLSettings(), show_progress: bool = True) -> ICLResult:
    """Run every task under every condition; ``model`` a loaded Transformer, ``tokenizer`` a ``tokenizers.Tokenizer``."""
    config = model.config
    if tokenizer.get_vocab_size() > config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.get_vocab_size()} tokens but the model's vocabulary has {config.vocab_size}; "
                         "fix: use the tokenizer that belongs to this model")
    bos = config.bos_token_id if config.bos_token_id is not None else 0
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False).ids  # noqa: E731
    scores = np.mean([prefix_matching_scores(model, repeated_random_tokens(config, 16, 50, repeats=4, seed=s)).scores
                      for s in settings.selection_seeds], axis=0)
    heads = {}
    for fraction in settings.fractions:
        heads[f"{fraction:.0%}"] = top_heads(scores, heads_for_fraction(config.n_layers, config.n_heads, fraction))
    none = Interventions.none(config)
    results: dict[str, dict[str, list[float]]] = {}
    for task in progress(list(TASKS.values()), "ICL tasks x conditions", enabled=show_progress, names=lambda task: task.name):
        prompts = few_shot_prompts(task, settings.prompts_per_task, settings.shots, seed=1)
        batch = encode_prompts(encode, prompts, task.labels, bos)
        zero_shot = encode_prompts(encode, few_shot_prompts(task, settings.prompts_per_task, 0, seed=1), task.labels, bos)
        def score(interventions=None, knock_out=None, edges=None, b=batch) -> float:
            return accuracy(label_log_likelihoods(model, b, interventions, knock_out=knock_out, edges=edges), b.answers)

        row = {"zero-shot": [score(b=zero_shot)], "no ablation": [score()]}
        categories = category_map(encode, config.vocab_size, task.categories) if task.categories else None
        means = mean_head_outputs(model, batch.tokens[:16]) if settings.mean_ablation else None
        for pct, chosen in heads.items():
            mask = heads_mask(config, chosen)
            row[f"top {pct} zero-ablated"] = [score(none.ablate(mask))]
            if means is not None:
                row[f"top {pct} mean-ablated"] = [score(none.ablate(mask, means))]
            row[f"random {pct} zero-ablated"] = [
                score(none.ablate(heads_mask(config, random_heads(config.n_layers, config.n_heads, len(chosen), seed, like=chosen))))
                for seed in settings.random_seeds
            ]
            row[f"top {pct} exact induction edges knocked out"] = [score(knock_out=mask, edges=induction_targets)]
            if categories is not None:
                fuzzy = lambda t: category_targets(t, categories)  # noqa: E731
                row[f"top {pct} category edges knocked out"] = [score(knock_out=mask, edges=fuzzy)]
        results[task.name] = row
    pattern_heads = pattern_matching_heads(model, encode, bos)
    return ICLResult(name, dataclasses.asdict(settings), heads, results, pattern_heads)
