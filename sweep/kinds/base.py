"""What a model kind is: the pieces the engine needs, in one frozen record (no torch here)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def identity(x: Any) -> Any:
    return x


def no_check(shape: Any) -> str | None:
    return None


@dataclass(frozen=True)
class KindSpec:
    """One model kind.

    forward(W, b, x, W_out) -> x' with W: (inst, hidden, feat), b: (inst, feat),
    x: (inst, batch, feat), W_out: (inst, feat, hidden) or None; returns (inst, batch, feat).
    target(x) is what the model must output (x itself by default).
    fused: the kind name `sweep.fused`'s gradient functions (grads_gram / grads_bmm /
    grads_absval) take for this kind, or None when it trains on the autograd path only.
    check(shape) returns why a shape (a `sweep.grid.Shape`) cannot be trained, or None.
    """

    name: str
    label: str
    forward: Callable[..., Any]
    target: Callable[[Any], Any] = identity
    untied: bool = False  # has output weights W_out of its own (stored as variable W_out)
    signed: bool = False  # inputs U[-1, 1] instead of U[0, 1]
    fused: str | None = None
    check: Callable[[Any], str | None] = no_check
