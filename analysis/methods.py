"""The weight-only prediction methods by name, declared once for the predictor, the CLI and the docs
(light: importing this loads no JAX)."""

METHOD_HELP = {
    "kcomp-token-zgain": "RoPE-averaged K-composition x token-level prefix-matching z-score x its logit gain, on MLP stand-ins",
    "kcomp-token-z": "the same without the gain",
    "token-zgain-rms": "z-score x logit gain in nats at the reading head's real input, without K-composition",
    "ov-kcomp-eigen": "the earlier OV-copying-weighted score, for comparison",
}
METHODS = tuple(METHOD_HELP)
"""Every method's name; the first is the default."""

SCORE_UNITS = {
    "kcomp-token-zgain": "a relative score (K-composition in multiples of its random baseline x z-score x logit gain in nats)",
    "kcomp-token-z": "a relative score (K-composition in multiples of its random baseline x z-score)",
    "token-zgain-rms": "z-score x logit gain in nats at the reading head's input",
    "ov-kcomp-eigen": "a relative score (OV copying x K-composition in multiples of its random baseline)",
}
"""What each method's predicted-induction number is, for every table and figure that shows one."""
