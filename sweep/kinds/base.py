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
class Fused:
    """How `sweep.fused` trains a kind with hand-written gradients instead of autograd.

    All tensors are feature-major, x: (inst, feat, batch); functions import torch inside.
    A tied kind, x' = act(Wᵀ hidden(Wx) + b) with target x, gives its elementwise pieces and
    `sweep.fused` writes the matrix products around them once for every such kind:
      output(z, x) -> (r, g): the residual r = act(z) − x and g = r · act'(z) (so that
        dL/dz = 2 · importance · g / batch), both (inst, feat, batch);
      hidden(h) -> (h', back), optional: the hidden activation h' of h = Wx and back(dh'),
        which maps dL/dh' to dL/dh. Without it the gram form (through WᵀW) applies too.
    Any other kind gives its whole step instead:
      grads(x, imp, W, b[, W_out]) -> (loss (inst,), dL/dW, dL/db[, dL/dW_out]), with imp:
        (inst, feat, 1) and each gradient shaped as its parameter.
    """

    output: Callable[..., tuple[Any, Any]] | None = None
    hidden: Callable[[Any], tuple[Any, Callable[[Any], Any]]] | None = None
    grads: Callable[..., tuple[Any, ...]] | None = None

    def __post_init__(self) -> None:
        if (self.output is None) == (self.grads is None):
            raise TypeError("Fused takes either output (and hidden) or grads")
        if self.grads is not None and self.hidden is not None:
            raise TypeError("Fused: hidden belongs to the output form, not to grads")

    @property
    def gram(self) -> bool:
        """Whether the gram form can train it: a tied kind without a hidden activation."""
        return self.output is not None and self.hidden is None


@dataclass(frozen=True)
class KindSpec:
    """One model kind.

    forward(W, b, x, W_out) -> x' with W: (inst, hidden, feat), b: (inst, feat),
    x: (inst, batch, feat), W_out: (inst, feat, hidden) or None; returns (inst, batch, feat).
    target(x) is what the model must output (x itself by default).
    fused: how `sweep.fused` trains it (a `Fused`), or None for the autograd path only.
    check(shape) returns why a shape (a `sweep.grid.Shape`) cannot be trained, or None.
    """

    name: str
    label: str
    forward: Callable[..., Any]
    target: Callable[[Any], Any] = identity
    untied: bool = False  # has output weights W_out of its own (stored as variable W_out)
    signed: bool = False  # inputs U[-1, 1] instead of U[0, 1]
    fused: Fused | None = None
    check: Callable[[Any], str | None] = no_check
