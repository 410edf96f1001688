"""Model kinds, one module each, and the registry that names them.

A kind module defines `KIND`, a `KindSpec`: its forward pass, its target, whether it has untied
output weights or signed inputs, how the fused path trains it (a `Fused` record, or None for
autograd only), its validation and its label. To add a kind: write `sweep/kinds/<name>.py` and
add one line to `REGISTRY` below. Importing this package imports no torch (kind modules import
it inside their functions), so the config schema, validation and the analysis can read names
and labels cheaply.

Kinds can also come from other installed packages, through the entry point group
`toysweep.kinds` (name = "module:attribute" giving a KindSpec, or "module" holding `KIND`);
they are loaded when this package is imported, so the schema's choices list them at once.
"""

from __future__ import annotations

import importlib
import logging
import re
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType

from sweep.kinds.base import Fused, KindSpec

# name -> module holding its KindSpec. One line per kind.
REGISTRY = {
    "relu": "sweep.kinds.relu",
    "linear": "sweep.kinds.linear",
    "privileged": "sweep.kinds.privileged",
    "absval": "sweep.kinds.absval",
    "gelu": "sweep.kinds.gelu",
    "silu": "sweep.kinds.silu",
}

GROUP = "toysweep.kinds"
# A kind's name is a config value, a Hydra override and a store coordinate: keep it plain.
NAME = re.compile(r"[a-z][a-z0-9_]*")
log = logging.getLogger(__name__)


def _load(ep: EntryPoint, taken: dict[str, str]) -> KindSpec | str:
    """The KindSpec an entry point gives, or why it cannot be used (one line)."""
    if not NAME.fullmatch(ep.name):
        return f"its name is not lowercase letters, digits and _ ({NAME.pattern})"
    if ep.name in taken:
        return f"the name is taken by {taken[ep.name]}"
    try:
        obj = ep.load()
    except Exception as e:  # noqa: BLE001 - a user's module may raise anything; report it
        return f"it fails to import: {type(e).__name__}: {e}".replace("\n", " ")
    spec = getattr(obj, "KIND", None) if isinstance(obj, ModuleType) else obj
    if not isinstance(spec, KindSpec):
        return f"it gives a {type(spec).__name__}, not a sweep.kinds.KindSpec"
    if spec.name != ep.name:
        return f"its KindSpec is named {spec.name!r}, not {ep.name!r}"
    return spec


def discover() -> dict[str, KindSpec]:
    """The kinds installed packages register under `toysweep.kinds`, by name.

    An entry point that cannot be used (fails to import, gives no KindSpec, takes a built-in
    name) is left out with one logged line naming it and its distribution: a broken package
    must not break the built-in kinds, and the schema then refuses its name like any unknown
    kind.
    """
    found: dict[str, KindSpec] = {}
    taken = {name: "the built-in kind" for name in REGISTRY}
    for ep in entry_points(group=GROUP):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "an unknown distribution"
        got = _load(ep, taken)
        if isinstance(got, str):
            log.warning(
                "warning: model kind %r left out: entry point '%s = %s' (group %s) of %s: %s",
                ep.name,
                ep.name,
                ep.value,
                GROUP,
                dist,
                got,
            )
            continue
        found[ep.name], taken[ep.name] = got, f"entry point '{ep.value}' of {dist}"
    return found


EXTERNAL = discover()
KINDS = (*REGISTRY, *EXTERNAL)


@cache
def get(name: str) -> KindSpec:
    """The spec of a model kind (KeyError for an unknown one; the schema rejects those first)."""
    name = str(name)
    if name in EXTERNAL:
        return EXTERNAL[name]
    return importlib.import_module(REGISTRY[name]).KIND


def label(name: str) -> str:
    """The kind's label for figures, e.g. 'ReLU(WᵀWx + b)'."""
    return get(name).label


__all__ = ["EXTERNAL", "GROUP", "KINDS", "REGISTRY", "Fused", "KindSpec", "get", "label"]
