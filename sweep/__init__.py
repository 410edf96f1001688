"""Sweeps of toy models of superposition: grids in Hydra config, many models per tensor."""

__version__ = "0.1.0"
