"""``circuits.report``: weight-only induction-circuit prediction, optionally validated by forward passes.

The :class:`CircuitReport` is plain data (numpy arrays and numbers) with a versioned JSON
schema; Markdown and self-contained HTML renderings live in :mod:`circuits.report.render`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import numpy as np

from circuits.analysis.ablation import heads_mask, sweep_losses
from circuits.analysis.agreement import (
    AblationEffect,
    HeadEffects,
    ablation_effect,
    heads_for_fraction,
    precision_at_k,
    single_head_effects,
    spearman,
    top_heads,
)
from circuits.analysis.attention import attention_scores, copying_scores
from circuits.analysis.induction import InductionEdge, predict_induction
from circuits.analysis.methods import METHODS
from circuits.analysis.repeated_tokens import repeated_random_tokens
from circuits.analysis.targets import induction_targets
from circuits.utils import ResultFiles, head_label, json_text, progress, rounded_list
from circuits.world_errors import release_freed_memory

SCHEMA_VERSION = 3
PREVIOUS_TOKEN_THRESHOLD = 0.5


@dataclasses.dataclass(frozen=True)
class Validation:
    """Forward-pass evidence. Head maps are f32[L, N]; losses in nats on the later repeats of ``data``.

    ``confirmed``: the top-k predicted heads whose measured prefix-matching score is at least
    ``confirm_threshold`` (the share of attention they put on the induction target).
    ``knockout_loss``: loss with the exact induction edges knocked out in the top-k predicted heads only.
    ``previous_token_sources``: how many of the top-k predicted heads have a predicted source head whose
    measured previous-token score is at least ``previous_token_threshold``.
    ``head_effects``: each head's single-head ablation effect, estimated for all (gradients) and exact for
    the 2k heads the estimate ranks highest.
    ``measured_top_ablated_loss``: loss with the k heads of highest measured prefix matching zero-ablated.
    """

    data: str
    prefix_matching: np.ndarray
    previous_token: np.ndarray
    duplicate_token: np.ndarray
    copying: np.ndarray
    spearman: float
    precision_at_k: float
    ablation: AblationEffect
    knockout_loss: float
    confirm_threshold: float
    confirmed: list[tuple[int, int]]
    previous_token_sources: int
    head_effects: HeadEffects
    measured_top_ablated_loss: float
    previous_token_threshold: float = PREVIOUS_TOKEN_THRESHOLD

    def measured_top(self, k: int) -> list[tuple[int, int, float]]:
        """The k heads with the highest measured prefix matching, as (layer, head, score)."""
        return [(layer, head, float(self.prefix_matching[layer, head])) for layer, head in top_heads(self.prefix_matching, k)]


@dataclasses.dataclass(frozen=True)
class CircuitReport(ResultFiles):
    """What the weights predict about induction circuits, and (with validation) what forward passes show.

    ``method`` / ``settings``: how the prediction was made (:class:`~circuits.analysis.induction.PredictorSettings`);
    ``source_heads`` int[L, N, 2]: each head's predicted previous-token head (layer, head).
    ``provenance``: where the weights come from (source, file, stored format and quantisation) and the
    dtype they were analysed in.
    """

    FILES = ("report.json", "report.md", "report.html")

    model: str
    provenance: dict[str, str]
    config: dict[str, Any]
    preprocessing: dict[str, Any]
    method: str
    settings: dict[str, Any]
    ov_copying: np.ndarray
    predicted_induction: np.ndarray
    source_heads: np.ndarray
    edges: list[InductionEdge]
    k_composition_baseline: dict[str, float]
    k: int
    validation: Validation | None = None
    schema_version: int = SCHEMA_VERSION

    def top_predicted(self) -> list[tuple[int, int, float]]:
        """The k heads with the highest predicted induction score, as (layer, head, score)."""
        order = np.argsort(-self.predicted_induction, axis=None)[: self.k]
        n_heads = self.predicted_induction.shape[1]
        return [(int(i) // n_heads, int(i) % n_heads, float(self.predicted_induction.ravel()[i])) for i in order]

    def all_predicted(self) -> list[tuple[int, int, float]]:
        """Every head, highest predicted induction score first, as (layer, head, score)."""
        order = np.argsort(-self.predicted_induction, axis=None, kind="stable")
        n_heads = self.predicted_induction.shape[1]
        return [(int(i) // n_heads, int(i) % n_heads, float(self.predicted_induction.ravel()[i])) for i in order]

    def source_of(self, layer: int, head: int) -> tuple[int, int]:
        """The predicted previous-token head (layer, head) of head (layer, head)."""
        prev_layer, prev_head = self.source_heads[layer, head]
        return int(prev_layer), int(prev_head)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (arrays as nested lists)."""
        return _to_json_ready(dataclasses.asdict(self))

    def __repr__(self) -> str:
        top = ", ".join(head_label(layer, head) for layer, head, _ in self.top_predicted())
        checked = (f"; {len(self.validation.confirmed)} of {self.k} confirmed by forward passes" if self.validation is not None
                   else "; weights only")
        return f"CircuitReport({self.model}: top {self.k} predicted {top}{checked})"

    def _repr_html_(self) -> str:
        """The report page itself, in a frame (its styles stay inside it)."""
        import html

        return f'<iframe srcdoc="{html.escape(self.to_html())}" style="width:100%;height:900px;border:1px solid #ddd"></iframe>'

    def to_json(self) -> str:
        return json_text(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CircuitReport":
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"report schema version {data.get('schema_version')} is not {SCHEMA_VERSION}; re-run circuits report")
        fields = dict(data)
        for name in ("ov_copying", "predicted_induction"):
            fields[name] = np.asarray(fields[name], np.float32)
        fields["source_heads"] = np.asarray(fields["source_heads"], np.int32)
        fields["edges"] = [InductionEdge(**edge) for edge in fields["edges"]]
        if fields.get("validation") is not None:
            v = dict(fields["validation"])
            for name in ("prefix_matching", "previous_token", "duplicate_token", "copying"):
                v[name] = np.asarray(v[name], np.float32)
            ablation = dict(v["ablation"])
            ablation["heads"] = [tuple(h) for h in ablation["heads"]]
            v["ablation"] = AblationEffect(**ablation)
            v["confirmed"] = [tuple(h) for h in v["confirmed"]]
            effects = v["head_effects"]
            v["head_effects"] = HeadEffects(np.asarray(effects["estimated"], np.float32), [tuple(e) for e in effects["exact"]])
            fields["validation"] = Validation(**v)
        return cls(**fields)

    @classmethod
    def from_json(cls, text: str) -> "CircuitReport":
        return cls.from_dict(json.loads(text))

    def to_markdown(self) -> str:
        from circuits.report.render import report_markdown

        return report_markdown(self)

    def to_html(self) -> str:
        from circuits.report.render import report_html

        return report_html(self)

    def files(self) -> dict[str, str | bytes]:
        """report.json, report.md and report.html."""
        return dict(zip(self.FILES, (self.to_json(), self.to_markdown(), self.to_html())))


def _to_json_ready(value):
    if isinstance(value, np.ndarray):
        return rounded_list(value)
    if isinstance(value, dict):
        return {key: _to_json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json_ready(item) for item in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def validate_prediction(model, predicted: np.ndarray, k: int, *, source_heads: np.ndarray, confirm_threshold: float = 0.3,
                        seeds=(0, 1, 2), show_progress: bool = True) -> Validation:
    """Measure every head on BOS + 50 random tokens x 2 (16 sequences per seed) and test the prediction:
    rank agreement, ablation of the top-k predicted heads vs k random heads, induction-edge knockout, and
    whether the predicted source heads (int[L, N, 2]) of the top-k heads are measured previous-token heads."""
    config = model.config
    data = repeated_random_tokens(config, 16, 50, seed=seeds[0])
    top_mask = heads_mask(config, top_heads(predicted, k))
    results: dict = {}
    steps = {
        "attention": ("attention scores", lambda: attention_scores(model, seeds=tuple(seeds))),
        "copying": ("copying scores", lambda: copying_scores(model, data)),
        "ablation": (f"top {k} predicted vs random heads ablated",
                     lambda: ablation_effect(model, data, predicted, k, seeds=tuple(seeds), show_progress=show_progress)),
        "knockout": ("induction edges knocked out", lambda: float(sweep_losses(
            model, data.tokens, data.later_repeats, knock_out=top_mask[None], edges=induction_targets(data.tokens),
            show_progress=show_progress)[0])),
        "measured top": (f"measured top {k} ablated", lambda: float(sweep_losses(model, data.tokens, data.later_repeats, ablate=heads_mask(
            config, top_heads(results["attention"]["prefix_matching"].scores, k))[None], show_progress=show_progress)[0])),
        "single heads": (f"single heads: all estimated, {2 * k} exact",
                         lambda: single_head_effects(model, data, 2 * k, show_progress=show_progress)),
    }
    for key, (_, run) in progress(list(steps.items()), "validating", enabled=show_progress, names=lambda step: step[1][0]):
        results[key] = run()
        release_freed_memory()
    scores = {name: s.scores for name, s in results["attention"].items()}
    prefix = scores["prefix_matching"]
    confirmed = [(layer, head) for layer, head in top_heads(predicted, k) if prefix[layer, head] >= confirm_threshold]
    sources = [tuple(source_heads[layer, head]) for layer, head in top_heads(predicted, k)]
    previous_token_sources = sum(1 for sl, sh in sources if sl >= 0 and scores["previous_token"][sl, sh] >= PREVIOUS_TOKEN_THRESHOLD)
    correlation = spearman(predicted, prefix)
    if not np.isfinite(correlation):
        print("warning: the Spearman correlation and precision@k are undefined (the measured or predicted scores are constant "
              "or not finite); the report says so and is written as usual", file=sys.stderr)
    return Validation(
        data=results["attention"]["prefix_matching"].source,
        prefix_matching=prefix,
        previous_token=scores["previous_token"],
        duplicate_token=scores["duplicate_token"],
        copying=results["copying"].scores,
        spearman=correlation,
        precision_at_k=precision_at_k(predicted, prefix, k),
        ablation=results["ablation"],
        knockout_loss=results["knockout"],
        confirm_threshold=confirm_threshold,
        confirmed=confirmed,
        previous_token_sources=previous_token_sources,
        head_effects=results["single heads"],
        measured_top_ablated_loss=results["measured top"],
    )


def report(
    model="smollm2-135m",
    *,
    validate: bool = True,
    k: int | None = None,
    mesh=None,
    dtype=None,
    fold_norms: bool = True,
    confirm_threshold: float = 0.3,
    method: str = METHODS[0],
    show_progress: bool = True,
) -> CircuitReport:
    """Build a :class:`CircuitReport` for ``model`` (a path, model name, or a loaded Transformer).

    The checkpoint is opened once. Without validation HF and GGUF checkpoints are streamed for the weight-only
    part; validation (on by default) loads the model once (onto ``mesh`` if given), and that model serves both
    the weight-only part and the forward passes (a GGUF file is dequantised once). ``k``: how many heads
    count as "top" (default: 3% of all heads); ``method``: the weight-only method (``prefix-share`` predicts the measured score
    itself, so the scatter plot is a calibration plot).
    """
    from circuits.convert.checkpoint import open_checkpoint
    from circuits.models.transformer import Transformer

    if isinstance(model, Transformer):
        name, loaded = model.description, model
        source, origin = model, {"source": name, "format": "a model in memory"}
    else:
        checkpoint = open_checkpoint(model)
        name, origin = checkpoint.source, checkpoint.provenance()
        if validate:
            _check_validation_fits(checkpoint.config, dtype if dtype is not None else checkpoint.dtype, mesh)
        streamed = checkpoint.kind in ("hf", "gguf") and not validate  # else the loaded model serves both parts
        loaded = None if streamed else checkpoint.load(dtype=dtype, mesh=mesh, show_progress=show_progress)
        source = loaded if loaded is not None else checkpoint.weights(show_progress=show_progress)
        del checkpoint  # a loaded model no longer needs the memory-mapped file
    config = source.config
    k = k or heads_for_fraction(config.n_layers, config.n_heads, 0.03)
    if not 0 < k <= config.n_layers * config.n_heads:
        raise ValueError(f"top k = {k} heads, but the model has {config.n_layers * config.n_heads}; fix: choose 1 to "
                         f"{config.n_layers * config.n_heads} (--top)")
    prediction = predict_induction(source, method=method, fold_norms=fold_norms, n_edges=max(20, k), show_progress=show_progress)
    del source
    release_freed_memory()
    validation = None
    if validate:
        validation = validate_prediction(loaded, prediction.predicted_induction.scores, k, source_heads=prediction.source_heads,
                                         confirm_threshold=confirm_threshold, show_progress=show_progress)
    analysed_in = str(loaded.dtype) if loaded is not None else f"{prediction.preprocessing.weights_dtype} (streamed)"
    return CircuitReport(
        model=name,
        provenance={**origin, "analysed_in": analysed_in},
        config=config.to_dict(),
        preprocessing=dataclasses.asdict(prediction.preprocessing),
        method=prediction.method,
        settings=dataclasses.asdict(prediction.settings),
        ov_copying=prediction.ov_copying.scores,
        predicted_induction=prediction.predicted_induction.scores,
        source_heads=prediction.source_heads,
        edges=prediction.edges,
        k_composition_baseline={"mean": prediction.k_composition.baseline_mean, "std": prediction.k_composition.baseline_std},
        k=k,
        validation=validation,
    )


def _check_validation_fits(config, dtype, mesh) -> None:
    """Refuse up front a validation run that cannot fit (mesh that does not divide the KV heads, too little memory)."""
    from circuits.models.sharding import check_mesh_fits
    from circuits.report.resources import dtype_bytes, validation_memory_bytes
    from circuits.world_errors import check_fits

    if mesh is not None:
        check_mesh_fits(mesh, config.n_kv_heads)
    devices = 1 if mesh is None else mesh.devices.size
    check_fits(
        validation_memory_bytes(config, dtype_bytes(dtype), 16, 101) // devices,
        "--validate (the forward passes)",
        "run without --validate (the weight-only analysis streams the weights), load with --dtype bfloat16, "
        "spread the model over a --mesh, or raise the memory limit",
    )
