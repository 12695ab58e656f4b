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
