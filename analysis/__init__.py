"""Weight-only circuit scores (OV, QK, composition) and forward-pass scores."""
