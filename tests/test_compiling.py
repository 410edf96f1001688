"""train.compile's rule (sweep/compiling.py): it follows the measured costs, and the driver's
guess before any job starts (should its workers import Dynamo ahead?) is what the jobs'
trainers then decide, for grids that compile and grids that do not."""

from __future__ import annotations

import pytest

from sweep import compiling
from sweep.grid import GridPlan
from sweep.train import make_trainer
from tests.conftest import make_config

pytestmark = pytest.mark.unit


def test_compile_rule_follows_measured_costs():
    per_model = 2 * 1024 * 10_000  # one 2→1 model, 10,000 steps
    assert compiling.should_compile(True, "cpu", 0)
    assert not compiling.should_compile(False, "cpu", 1e15)
    if not compiling.compiler_available("cpu"):
        pytest.skip("no C++ compiler")
    # Cold: the 845-model grid that used to train eager (the cliff) now compiles.
    assert compiling.should_compile("auto", "cpu", 845 * per_model)
    assert not compiling.should_compile("auto", "cpu", 10 * per_model)  # ~15 s < a 50 s compile
    # The threshold is where the saved time equals the compile cost.
    edge = compiling.COMPILE_COLD_S / (1 / compiling.EAGER_RATE - 1 / compiling.COMPILED_RATE)
    assert compiling.should_compile("auto", "cpu", edge * 1.01)
    assert not compiling.should_compile("auto", "cpu", edge * 0.99)


def _trainers_compile(plan: GridPlan) -> bool:
    """Whether any job's trainer compiles: one job per shape, as the sweep builds them."""
    decided = []
    for shape in plan.shapes:
        job = plan.job([next(b for b in plan.blocks if b.shape == shape)])
        t = make_trainer(job.kind, job.seeds, job.density, job.importance, job.n_hidden,
                         job.train, job.correlation, job.set_size, job.shape_instances)
        decided.append(getattr(t, "compiled", False) or getattr(t, "eval_compiled", False))
    return any(decided)


@pytest.mark.parametrize(
    ("overrides", "compiles"),
    [
        (["+grid=phase"], True),  # the default grid: 1,125 models × 10,000 steps
        (["+grid=phase", "train.steps=40"], False),
        (["+grid=phase", "train.steps=40", "train.compile=true"], True),
        (["+grid=phase", "train.compile=false"], False),
        # two shapes (2→1 relu and linear), each of too little work to pay for a compile
        (["+grid=phase", "+grid.axes.model=[relu,linear]", "grid.seeds=2",
          "grid.axes.density=[0.05,0.3,1.0]", "grid.axes.relative_importance=[0.5,2.0]",
          "train.steps=400"], False),
        (["+grid=phase3", "train.steps=3000"], True),
        (["+grid=capacity", "train.steps=200"], False),
    ],
)
def test_the_drivers_guess_is_what_the_jobs_decide(overrides, compiles):
    if not compiling.compiler_available("cpu"):
        pytest.skip("no C++ compiler")
    plan = GridPlan(make_config(overrides))
    assert compiling.plan_compiles(plan) == _trainers_compile(plan) == compiles
