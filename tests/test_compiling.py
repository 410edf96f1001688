"""train.compile's rule (sweep/compiling.py): it follows the measured costs."""

from __future__ import annotations

import pytest

from sweep import compiling

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
