"""Learning-rate schedules and the compiled path, checked against what training actually does.

The lr each backend really applies is read off the weights: with every importance 0 the
gradients vanish, AdamW's moments stay 0, and one step only decays the weights,
W ← W (1 − lr·wd); so lr_t = (1 − W_{t+1} / W_t) / wd, exactly, in float64.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from sweep import fused
from sweep.train import lr_lambda, make_trainer
from tests.conftest import make_config

STEPS, LR, WD = 12, 0.05, 0.5


def documented(step: int, steps: int, warmup: int, schedule: str) -> float:
    """conf/config.yaml: linear warm-up over `warmup` steps (reaching 1 on its last step),
    then constant / linear / cosine decay from 1 towards 0 at the end of training."""
    if step < warmup:
        return (step + 1) / warmup
    frac = (step - warmup) / (steps - warmup)
    return {"constant": 1.0, "linear": 1.0 - frac,
            "cosine": 0.5 * (1.0 + math.cos(math.pi * frac))}[schedule]


def tcfg(schedule: str, warmup: int, backend: str = "fused", compile: bool = False, **extra):
    over = [f"train.steps={STEPS}", f"train.lr={LR}", f"train.weight_decay={WD}",
            f"train.lr_schedule={schedule}", f"train.warmup_steps={warmup}",
            f"train.backend={backend}", f"train.compile={str(compile).lower()}",
            "train.dtype=float64", "train.batch_size=16",
            *[f"train.{k}={v}" for k, v in extra.items()]]
    return make_config(over).train


SCHEDULES = [(s, w) for s in ("constant", "linear", "cosine") for w in (0, 4)]


@pytest.mark.parametrize(("schedule", "warmup"), SCHEDULES)
@pytest.mark.unit
def test_lr_lambda_is_the_documented_sequence(schedule, warmup):
    f = lr_lambda(tcfg(schedule, warmup))
    got = [f(t) for t in range(STEPS)]
    want = [documented(t, STEPS, warmup, schedule) for t in range(STEPS)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
    if warmup:  # warm-up climbs 1/w, 2/w, ... and reaches the full lr on its last step
        assert got[0] == pytest.approx(1 / warmup) and got[warmup - 1] == 1.0


def applied_lrs(backend: str, schedule: str, warmup: int) -> np.ndarray:
    """The lr a backend applied at each step, from the weight decay alone (module doc)."""
    cfg = tcfg(schedule, warmup, backend)
    density = np.full((2, 2), 0.5)
    importance = np.zeros((2, 2))  # no gradient: only the decoupled weight decay acts
    trainer = make_trainer("relu", np.array([0, 1]), density, importance, 1, cfg)
    lrs = []
    for step in range(STEPS):
        before = trainer.W.detach().clone()
        trainer.step(step)
        ratio = (trainer.W.detach() / before).numpy()  # every entry: 1 - lr wd
        assert np.ptp(ratio) < 1e-12
        lrs.append((1 - ratio.mean()) / WD)
    return np.array(lrs)


@pytest.mark.parametrize("backend", ["fused", "autograd"])
@pytest.mark.parametrize(("schedule", "warmup"), SCHEDULES)
@pytest.mark.unit
def test_each_backend_applies_the_documented_lr(backend, schedule, warmup):
    want = [LR * documented(t, STEPS, warmup, schedule) for t in range(STEPS)]
    np.testing.assert_allclose(applied_lrs(backend, schedule, warmup), want, rtol=1e-9,
                               atol=1e-15)


@pytest.mark.unit
def test_adamw_first_steps_match_torch_with_gradients():
    """Bias correction and moments: fused AdamW on real gradients equals torch.optim.AdamW
    (the autograd backend) step by step, with warm-up and cosine decay."""
    over = {"schedule": "cosine", "warmup": 3}
    fused = make_trainer("relu", np.array([0, 1]), np.full((2, 2), 0.3),
                         np.array([[1.0, 0.7], [1.0, 2.0]]), 1,
                         tcfg(over["schedule"], over["warmup"], "fused"))
    ref = make_trainer("relu", np.array([0, 1]), np.full((2, 2), 0.3),
                       np.array([[1.0, 0.7], [1.0, 2.0]]), 1,
                       tcfg(over["schedule"], over["warmup"], "autograd"))
    for step in range(STEPS):
        fused.step(step)
        ref.step(step)
        np.testing.assert_allclose(fused.W.detach().numpy(), ref.W.detach().numpy(),
                                   rtol=1e-10, atol=1e-12, err_msg=f"W after step {step}")
        np.testing.assert_allclose(fused.b.detach().numpy(), ref.b.detach().numpy(),
                                   rtol=1e-10, atol=1e-12, err_msg=f"b after step {step}")


# ---------------------------------------------------------------- the compiled path


@pytest.mark.unit
def test_compiled_path_compiles_its_step(monkeypatch):
    """train.compile=true hands the training and evaluation steps to a package
    (sweep.packages.Packaged) and runs what it returns.

    The package is replaced by a recorder (a real build costs ~10 s here; the slow test below
    and tests/test_packages.py build for real), so this checks the wiring, not the compiler.
    """
    calls = []

    class Recording:
        def __init__(self, fn, kind, record, cache, per_instance, unit):
            self.fn = fn
            # any number of instances (cells of 2 seeds here), one package
            assert per_instance == fused.PER_INSTANCE and unit == 2

        def __call__(self, *args):
            calls.append(self.fn.__name__)
            return self.fn(*args)

    monkeypatch.setattr(fused, "Packaged", Recording)
    cfg = tcfg("constant", 0, "fused", compile=True)
    trainer = make_trainer("relu", np.array([0, 1]), np.full((2, 2), 0.3), np.ones((2, 2)), 1,
                           cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning on the way
        trainer.step(0)
        trainer.losses(trainer.sampler)
    assert "train_chunk" in calls and "eval_chunk" in calls, calls
    assert trainer.compiled


@pytest.mark.unit
def test_compile_failure_falls_back_with_a_warning(monkeypatch):
    """A compiler that fails is reported (a warning) and training goes on uncompiled, with the
    same numbers as the uncompiled path."""

    class Broken:
        def __init__(self, *args):
            pass

        def __call__(self, *args):
            raise RuntimeError("no compiler here")

    monkeypatch.setattr(fused, "Packaged", Broken)
    args = ("relu", np.array([0, 1]), np.full((2, 2), 0.3), np.ones((2, 2)), 1)
    trainer = make_trainer(*args, tcfg("constant", 0, "fused", compile=True))
    with pytest.warns(UserWarning, match="compiling the step failed.*training uncompiled"):
        trainer.step(0)
    assert not trainer.compiled
    eager = make_trainer(*args, tcfg("constant", 0, "fused", compile=False))
    eager.step(0)
    np.testing.assert_array_equal(trainer.W.numpy(), eager.W.numpy())


@pytest.mark.slow
def test_compiled_path_really_compiles(tmp_path):
    """A real compile: the step's package is built into train.compile_cache, and the numbers
    match eager."""
    if not _compiler():
        pytest.skip("no C++ compiler for torch.compile on this machine")
    args = ("relu", np.array([0, 1]), np.full((2, 2), 0.3), np.ones((2, 2)), 1)
    compiled = make_trainer(*args, tcfg("constant", 0, "fused", compile=True,
                                        compile_cache=tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        for step in range(3):
            compiled.step(step)
    assert compiled.compiled
    assert list(tmp_path.glob("aoti/train_chunk-*.pt2"))
    eager = make_trainer(*args, tcfg("constant", 0, "fused", compile=False))
    for step in range(3):
        eager.step(step)
    np.testing.assert_allclose(compiled.W.numpy(), eager.W.numpy(), rtol=1e-9)


def _compiler() -> bool:
    from sweep.compiling import compiler_available

    return compiler_available("cpu")
