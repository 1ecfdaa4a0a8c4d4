"""BART-family networks."""
