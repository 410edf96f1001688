"""Analysis settings: the `analysis:` section of a store's config, overridden by the caller's.

A store records the settings it was swept with (`config_yaml`); `python -m analysis --aggregate
...`, `analyse(store, settings=...)` and the end-of-sweep callback pass their own, which win.
Every check gives one line in the team's form: `analysis.<key>=<value> is not allowed: expected
...`, so the CLI and the Hydra callback can print it as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

# The defaults, the allowed range and the rules are the engine's (sweep.constants, which the
# sweep's schema declares too): one definition each, so the two cannot drift apart.
from sweep.constants import (
    AGGREGATE_RULES,
    DEFAULT_AGGREGATE,
    NORM_THRESHOLD,
    SUPERPOSITION_THRESHOLD,
    THRESHOLD_RANGE,
)

RULES = AGGREGATE_RULES
KEYS = ("norm_threshold", "superposition_threshold", "aggregate", "figures")


class SettingsError(ValueError):
    """A bad analysis setting; str() is the one-line message (without `error: `)."""


def not_allowed(key: str, value: Any, expected: str) -> SettingsError:
    return SettingsError(f"analysis.{key}={value} is not allowed: expected {expected}")


@dataclass(frozen=True)
class Settings:
    """How seeds are pooled and phases read, and which figure families are drawn.

    `figures` None means "what the store's grid names" (or the generic panels, analysis.registry);
    the names are checked against the registry by analysis.registry.check_figures.
    """

    norm_threshold: float = NORM_THRESHOLD
    superposition_threshold: float = SUPERPOSITION_THRESHOLD
    aggregate: str = DEFAULT_AGGREGATE
    figures: tuple[str, ...] | None = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> Settings:
        """From a whole config (its `analysis:` section); defaults where a key is absent."""
        section = (cfg or {}).get("analysis") or {}
        return cls().updated(section)

    def updated(self, overrides: Mapping[str, Any] | None) -> Settings:
        """These settings with the non-None values of overrides (unknown keys ignored: the
        section also holds `run`), checked."""
        given = {k: v for k, v in (overrides or {}).items() if k in KEYS and v is not None}
        if "figures" in given:
            given["figures"] = figure_names(given["figures"])
        out = replace(self, **given)
        out.check()
        return out

    def check(self) -> None:
        lo, hi = THRESHOLD_RANGE
        for key in ("norm_threshold", "superposition_threshold"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo < v < hi:
                raise not_allowed(key, v, f"a number in ({lo:g}, {hi:g})")
        if self.aggregate not in RULES:
            raise not_allowed("aggregate", self.aggregate, f"one of {', '.join(RULES)}")

    def rule_settings(self) -> dict[str, Any]:
        """The settings that change the analysis dataset (recorded in its attrs)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "figures"}


def figure_names(value: Any) -> tuple[str, ...]:
    """A list of names, or one comma-separated string (the CLI's `--figures a,b`)."""
    if isinstance(value, str):
        items: Iterable[Any] = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, Iterable):
        items = list(value)
    else:
        raise not_allowed("figures", value, "a list of figure names")
    names = tuple(str(v) for v in items)
    if not all(isinstance(v, str) for v in items):
        raise not_allowed("figures", list(items), "a list of figure names")
    return names
