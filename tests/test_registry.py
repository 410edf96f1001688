"""Model kinds as a registry: every kind is one module and one line, the schema's choices follow
the registry, and a kind added that way (gelu) trains exactly like a model trained alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sweep import kinds
from sweep.config import ModelKind
from sweep.grid import GridPlan
from sweep.models import stream_seed
from sweep.train import train_block
from sweep.validate import ConfigError
from tests.conftest import ROOT, make_config


def test_registry_names_match_modules_and_schema():
    assert set(kinds.KINDS) >= {"relu", "linear", "privileged", "absval", "gelu"}
    for name in kinds.KINDS:
        spec = kinds.get(name)
        assert spec.name == name and spec.label
        assert (ROOT / "sweep" / "kinds" / f"{name}.py").exists()
    assert [k.value for k in ModelKind] == list(kinds.KINDS)


def gelu_alone(
    seed: int, density: np.ndarray, importance: np.ndarray, m: int, steps: int, batch: int
) -> np.ndarray:
    """One GELU-output model, no instance axis, written independently of sweep.models."""
    n = len(density)
    g = torch.Generator().manual_seed(stream_seed(seed, "init", n, m))
    W = torch.randn((m, n), generator=g, dtype=torch.float64) * (2 / (n + m)) ** 0.5
    W.requires_grad_(True)
    b = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.AdamW([W, b], lr=1e-3, weight_decay=0.01)
    data = torch.Generator().manual_seed(stream_seed(seed, "data", n))
    p, imp = torch.tensor(density), torch.tensor(importance)
    for _ in range(steps):
        u = torch.rand((batch, n), generator=data, dtype=torch.float64)
        x = torch.where(u < p, u / p, 0.0)
        z = x @ W.T @ W + b
        out = 0.5 * z * (1 + torch.erf(z / 2**0.5))  # GELU, exact form
        loss = (imp * (x - out) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return W.detach().numpy()


@pytest.mark.parametrize("backend", ["fused", "autograd"])
def test_gelu_instance_equals_model_trained_alone(backend):
    # train.backend=fused: gelu has no fused form, so it must fall back to autograd itself.
    cfg = make_config(
        [
            "+grid=gelu",
            "train.steps=120",
            "train.batch_size=64",
            f"train.backend={backend}",
            "train.dtype=float64",
            "grid.seeds=[2,9]",
            "grid.axes.density=[0.1,0.7]",
        ]
    )
    plan = GridPlan(cfg)
    (block,) = plan.blocks
    job = plan.job([block])
    assert job.kind == "gelu" and job.n_features == 5 and job.n_hidden == 2
    res = train_block(job, progress=False)
    for i in range(len(job.seeds)):
        alone = gelu_alone(int(job.seeds[i]), job.density[i], job.importance[i], 2, 120, 64)
        np.testing.assert_allclose(res.W[i], alone, rtol=1e-9, atol=1e-10)
    # and it differs from ReLU on the same data (the kind is really used)
    relu = train_block(
        plan.job([block]).__class__(**{**job.__dict__, "kind": "relu"}), progress=False
    )
    assert np.abs(relu.W - res.W).max() > 1e-4


def test_kind_validation_comes_from_the_kind():
    cfg = make_config(
        [
            "+grid=absval",
            "model.n_features=4",
            "+grid.axes.correlation=[correlated]",
            "train.steps=10",
        ]
    )
    with pytest.raises(ConfigError, match="grid.axes.model|model.kind"):
        GridPlan(cfg)


def test_engine_never_imports_analysis_and_store_imports_no_torch():
    for path in (ROOT / "sweep").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n.split(".")[0] == "analysis" for n in names), path
    code = (
        "import sys; from sweep import layout, writes, grid, kinds, validate; "
        "kinds.get('gelu'); print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "False", out.stderr


def test_new_kind_touched_only_its_files():
    """The gelu kind lives in its module, one registry line and its grid file."""
    mentions = [
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "sweep").rglob("*.py")
        if "gelu" in p.read_text()
    ]
    assert sorted(mentions) == ["sweep/kinds/__init__.py", "sweep/kinds/gelu.py"]
    assert Path(ROOT / "conf" / "grid" / "gelu.yaml").exists()
