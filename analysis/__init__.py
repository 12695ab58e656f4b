"""Weight-only circuit scores (OV, QK, composition, predicted induction circuits) and forward-pass scores.

The names a notebook reaches for first, imported lazily (``circuits.analysis.predict_induction``):

- weight-only: ``predict_induction``, ``ov_copying_scores``, ``composition_scores``, ``composition_tensors``,
  ``rope_average``;
- forward passes: ``attention_scores``, ``prefix_matching_scores``, ``previous_token_scores``,
  ``duplicate_token_scores``, ``copying_scores``, ``repeated_random_tokens``, ``induction_targets``;
- interventions: ``sweep_losses``, ``estimate_sweep_losses``, ``one_head_each``, ``heads_mask``,
  ``mean_head_outputs``, ``ablation_effect``, ``single_head_effects``;
- agreement: ``top_heads``, ``precision_at_k``, ``spearman``.
"""

from circuits.lazy import lazy_face

_PUBLIC = {
    "METHODS": "methods",
    "predict_induction": "induction",
    "InductionPrediction": "induction",
    "ov_copying_scores": "ov",
    "composition_scores": "composition",
    "composition_tensors": "composition",
    "rope_average": "rope",
    "attention_scores": "attention",
    "prefix_matching_scores": "attention",
    "previous_token_scores": "attention",
    "duplicate_token_scores": "attention",
    "copying_scores": "attention",
    "repeated_random_tokens": "repeated_tokens",
    "induction_targets": "targets",
    "sweep_losses": "ablation",
    "estimate_sweep_losses": "ablation",
    "one_head_each": "ablation",
    "heads_mask": "ablation",
    "mean_head_outputs": "ablation",
    "ablation_effect": "agreement",
    "single_head_effects": "agreement",
    "top_heads": "agreement",
    "precision_at_k": "agreement",
    "spearman": "agreement",
    "HeadScores": "results",
}

__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_face(__name__, _PUBLIC)
