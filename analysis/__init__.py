"""Pure-compute analysis of toy models of superposition: weight metrics and analytic theory."""
