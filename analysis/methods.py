"""The weight-only prediction methods by name, declared once for the predictor, the CLI and the docs
(light: importing this loads no JAX)."""

METHOD_HELP = {
    "prefix-share": "the prefix-matching attention share itself, predicted on the measurement's own context (BOS + 50 random "
                    "tokens x 2) from stand-ins with mean-field attention; its sources add their gains weighted by their "
                    "predicted previous-token shares, and earlier induction heads the gain of the token they copy into the "
                    "query",
    "kcomp-token-zgain": "RoPE-averaged K-composition x token-level prefix-matching z-score x its logit gain, on MLP stand-ins",
    "kcomp-token-z": "the same without the gain",
    "token-zgain-rms": "z-score x logit gain in nats at the reading head's real input, without K-composition",
    "ov-kcomp-eigen": "the earlier OV-copying-weighted score, for comparison",
}
METHODS = tuple(METHOD_HELP)
"""Every method's name; the first is the default."""

SHARE_METHODS = ("prefix-share",)
"""Methods whose score is a predicted attention share on the measured scale (0 to 1); their stand-ins receive each
layer's mean-field attention output."""

PAIR_MODES = ("all", "bounded")
"""``all``: every (earlier head, later head) pair's terms; ``bounded`` (``prefix-share`` only): only the pairs that can be
among the top edges or a top head's source, the others NaN (:mod:`~circuits.analysis.pair_bounds`)."""

SCORE_UNITS = {
    "prefix-share": "a predicted attention share (0 to 1), on the same scale as the measured prefix-matching score",
    "kcomp-token-zgain": "a relative score (K-composition in multiples of its random baseline x z-score x logit gain in nats)",
    "kcomp-token-z": "a relative score (K-composition in multiples of its random baseline x z-score)",
    "token-zgain-rms": "z-score x logit gain in nats at the reading head's input",
    "ov-kcomp-eigen": "a relative score (OV copying x K-composition in multiples of its random baseline)",
}
"""What each method's predicted-induction number is, for every table and figure that shows one."""

SCORE_AXES = {method: "predicted attention share" if method in SHARE_METHODS else "relative score" for method in METHODS}
"""A short name for each method's scale, for axis labels; a share lives on the measured scale (0 to 1)."""
