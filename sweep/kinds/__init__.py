"""Model kinds, one module each, and the registry that names them.

A kind module defines `KIND`, a `KindSpec`: its forward pass, its target, whether it has untied
output weights or signed inputs, which fused form (if any) trains it, its validation and its
label. To add a kind: write `sweep/kinds/<name>.py` and add one line to `REGISTRY` below.
Importing this package imports no torch (kind modules import it inside their functions), so
the config schema, validation and the analysis can read names and labels cheaply.
"""

from __future__ import annotations

import importlib
from functools import cache

from sweep.kinds.base import KindSpec

# name -> module holding its KindSpec. One line per kind.
REGISTRY = {
    "relu": "sweep.kinds.relu",
    "linear": "sweep.kinds.linear",
    "privileged": "sweep.kinds.privileged",
    "absval": "sweep.kinds.absval",
    "gelu": "sweep.kinds.gelu",
}
KINDS = tuple(REGISTRY)


@cache
def get(name: str) -> KindSpec:
    """The spec of a model kind (KeyError for an unknown one; the schema rejects those first)."""
    return importlib.import_module(REGISTRY[str(name)]).KIND


def label(name: str) -> str:
    """The kind's label for figures, e.g. 'ReLU(WᵀWx + b)'."""
    return get(name).label


__all__ = ["KINDS", "REGISTRY", "KindSpec", "get", "label"]
