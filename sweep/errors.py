"""The engine's one-line error for a bad setting, in a module of its own: the config checks
(`sweep.validate`) and the small helpers they use (`sweep.blocks`) both raise it, and neither
may import the other for it (an import cycle)."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A bad config value; str() is the one-line message shown to the user."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: expected {allowed}")
