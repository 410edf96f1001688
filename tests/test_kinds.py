"""Model kinds as a registry: every kind is one module and one line, the schema's choices follow
the registry, a kind added that way (gelu on autograd, silu on the fused path) trains exactly
like a model trained alone, and the fused path takes its maths from the kind's record."""

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
from sweep.fused import FusedTrainer, chunk_grads
from sweep.grid import GridPlan
from sweep.models import stream_seed
from sweep.train import make_trainer, train_block
from sweep.validate import ConfigError
from tests.conftest import ROOT, make_config


def test_registry_names_match_modules_and_schema():
    assert set(kinds.REGISTRY) == {"relu", "linear", "privileged", "absval", "gelu", "silu"}
    for name in kinds.REGISTRY:
        spec = kinds.get(name)
        assert spec.name == name and spec.label
        assert (ROOT / "sweep" / "kinds" / f"{name}.py").exists()
    assert [k.value for k in ModelKind] == list(kinds.KINDS)


def gelu(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * z * (1 + torch.erf(z / 2**0.5))  # GELU, exact form


def silu(z: torch.Tensor) -> torch.Tensor:
    return z / (1 + torch.exp(-z))  # SiLU(z) = z·σ(z)


def model_alone(
    seed: int,
    density: np.ndarray,
    importance: np.ndarray,
    m: int,
    steps: int,
    batch: int,
    act=gelu,
) -> np.ndarray:
    """One model x' = act(WᵀWx + b), no instance axis, written independently of sweep.models."""
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
        out = act(x @ W.T @ W + b)
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
        alone = model_alone(int(job.seeds[i]), job.density[i], job.importance[i], 2, 120, 64)
        np.testing.assert_allclose(res.W[i], alone, rtol=1e-9, atol=1e-10)
    # and it differs from ReLU on the same data (the kind is really used)
    relu = train_block(
        plan.job([block]).__class__(**{**job.__dict__, "kind": "relu"}), progress=False
    )
    assert np.abs(relu.W - res.W).max() > 1e-4


@pytest.mark.parametrize("n", [5, 4])  # 5 → 2 takes the bmm form, 4 → 2 the gram form
def test_silu_instance_of_fused_run_equals_model_trained_alone(n):
    """silu trains on the fused path (its elementwise piece in sweep/kinds/silu.py, the matrix
    forms in sweep.fused): every instance of one vectorised run equals its model alone."""
    cfg = make_config(
        [
            "+grid=silu",
            f"model.n_features={n}",
            "train.batch_size=64",
            "train.dtype=float64",
            "train.compile=false",
        ]
    )
    assert cfg.model.kind == "silu" and cfg.model.n_hidden == 2
    seeds = np.array([2, 9, 2, 9])
    density = np.repeat([[0.1], [0.1], [0.7], [0.7]], n, axis=1)  # (inst, feat)
    importance = np.tile(0.9 ** np.arange(n), (4, 1))  # (inst, feat)
    args = (seeds, density, importance, 2, cfg.train)
    trainer = make_trainer("silu", *args)
    assert isinstance(trainer, FusedTrainer) and trainer.gram == (n == 4)
    relu = make_trainer("relu", *args)
    for step in range(120):
        trainer.step(step)
        relu.step(step)
    for i in range(len(seeds)):
        alone = model_alone(int(seeds[i]), density[i], importance[i], 2, 120, 64, act=silu)
        np.testing.assert_allclose(trainer.W[i].numpy(), alone, rtol=1e-9, atol=1e-10)
    # and it differs from ReLU on the same data (the kind is really used)
    assert (relu.W - trainer.W).abs().max() > 1e-4


FUSED = [k for k in kinds.REGISTRY if kinds.get(k).fused is not None]


@pytest.mark.unit
@pytest.mark.parametrize("name", FUSED)
def test_fused_forms_equal_autograd_of_the_kind_forward(name):
    """Every form the fused path would take for a kind (gram, bmm, or the kind's own grads)
    gives the loss and gradients autograd finds through the kind's forward and target."""
    spec = kinds.get(name)
    assert spec.fused is not None
    g = torch.Generator().manual_seed(1)
    inst, n, m, batch = 3, 5, 3, 16

    def rand(*shape):
        return torch.randn(shape, generator=g, dtype=torch.float64)

    x = torch.rand((inst, batch, n), generator=g, dtype=torch.float64)  # (inst, batch, feat)
    x = torch.where(x < 0.5, 2 * x - 1 if spec.signed else x, 0)  # sparse, as in training
    imp = torch.rand((inst, 1, n), generator=g, dtype=torch.float64)
    params = [rand(inst, m, n), 0.3 * rand(inst, n)] + ([rand(inst, n, m)] if spec.untied else [])
    ref = [p.clone().requires_grad_(True) for p in params]
    out = spec.forward(ref[0], ref[1], x, ref[2] if spec.untied else None)
    loss = (imp * (spec.target(x) - out).square()).sum(-1).mean(-1)  # (inst,)
    loss.sum().backward()
    for gram in [False, True] if spec.fused.gram else [False]:
        got, *grads = chunk_grads(spec.fused, gram, x.transpose(1, 2), imp.transpose(1, 2), params)
        np.testing.assert_allclose(got.numpy(), loss.detach().numpy(), rtol=1e-12)
        for p, grad in zip(ref, grads, strict=True):
            assert p.grad is not None and grad.shape == p.shape
            np.testing.assert_allclose(grad.numpy(), p.grad.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.unit
def test_fused_path_names_no_kind():
    """sweep/fused.py takes everything kind-specific from the kind's record: no kind's name
    appears in it as a string (a branch on a name would need one)."""
    tree = ast.parse((ROOT / "sweep" / "fused.py").read_text())
    names = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    assert not names & set(kinds.REGISTRY), names & set(kinds.REGISTRY)


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


@pytest.mark.unit
@pytest.mark.parametrize("name", ["gelu", "silu"])
def test_new_kind_touched_only_its_files(name):
    """A kind added after the registry (gelu on autograd, silu on the fused path) lives in its
    module, one registry line and its grid file: no other engine file names it."""
    mentions = [
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "sweep").rglob("*.py")
        if name in p.read_text()
    ]
    assert sorted(mentions) == ["sweep/kinds/__init__.py", f"sweep/kinds/{name}.py"]
    registry = (ROOT / "sweep" / "kinds" / "__init__.py").read_text()
    assert sum(name in line for line in registry.splitlines()) == 1  # its registry line
    assert Path(ROOT / "conf" / "grid" / f"{name}.yaml").exists()
