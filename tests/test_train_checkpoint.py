"""A corrupt checkpoint is set aside (renamed, logged) and the block trains from step 0, to the
very numbers of a run that never had a checkpoint; it no longer fails every rerun the same way."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sweep.grid import GridPlan
from sweep.train import train_block
from tests.conftest import BASE, make_config

pytestmark = pytest.mark.hostile

IDENTITY = {"fingerprint": "f", "run_id": "r"}  # a job's store identity, saved in its stamp


def corrupt(path, how: str) -> None:
    """Damage a real checkpoint (saved after 20 of 40 steps) in one of several ways."""
    data = path.read_bytes()
    if how == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    elif how == "truncated":  # a copy cut short (a full disk, a half-synced file)
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "not-a-checkpoint":  # a readable file of another content
        torch.save([1, 2, 3], path)
    elif how == "field-missing":  # loads and matches the block, fails halfway through restoring
        state = torch.load(path, weights_only=True)
        del state["rng"]
        torch.save(state, path)


@pytest.mark.unit
@pytest.mark.parametrize(
    "how", ["garbage", "truncated", "empty", "not-a-checkpoint", "field-missing"]
)
@pytest.mark.parametrize("backend", ["fused", "autograd"])
def test_corrupt_checkpoint_is_set_aside_and_training_restarts(tmp_path, caplog, how, backend):
    cfg = make_config(
        [
            "+grid=phase",
            "train.steps=40",
            "grid.seeds=2",
            "train.compile=false",
            f"train.backend={backend}",
            "grid.axes.density=[0.1,1.0]",
            "grid.axes.relative_importance=[1.0,3.0]",
        ]
    )
    plan = GridPlan(cfg)
    job = plan.job(list(plan.blocks))  # the whole tiny grid as one job
    alone = train_block(job, progress=False, identity=IDENTITY)  # never checkpointed
    ckpt = tmp_path / "block.pt"
    assert train_block(job, checkpoint=ckpt, progress=False, stop_at=20, identity=IDENTITY) is None
    corrupt(ckpt, how)
    damaged = ckpt.read_bytes()

    with caplog.at_level("WARNING"):
        got = train_block(job, checkpoint=ckpt, progress=False, identity=IDENTITY)
    assert got is not None and got.resumed_from == 0
    for name in ("W", "b", "loss", "curve"):  # from step 0: bit for bit the run alone
        np.testing.assert_array_equal(getattr(got, name), getattr(alone, name), err_msg=name)
    aside = list(tmp_path.glob("block.pt.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == damaged  # kept, out of the way
    assert not ckpt.exists()
    assert f"checkpoint {ckpt} is unreadable" in caplog.text and aside[0].name in caplog.text


def test_checkpoint_of_another_run_or_shape_is_not_loaded(finished, tmp_path, caplog):
    from sweep.grid import GridPlan
    from sweep.train import train_block

    cfg = make_config(BASE)
    plan = GridPlan(cfg)
    job = plan.job(plan.blocks[:1])
    ckpt = tmp_path / "c.pt"
    one = type(job)(
        **{
            **job.__dict__,
            "seeds": job.seeds[:1],
            "density": job.density[:1],
            "importance": job.importance[:1],
        }
    )
    assert (
        train_block(one, checkpoint=ckpt, progress=False, stop_at=10, identity={"run_id": "a"})
        is None
    )
    fresh = train_block(job, progress=False)
    with caplog.at_level("WARNING"):
        got = train_block(job, checkpoint=ckpt, progress=False, identity={"run_id": "a"})
    assert got.resumed_from == 0 and "another run or block shape" in caplog.text
    np.testing.assert_array_equal(got.W, fresh.W)
    # same shape, other run: not loaded either
    assert (
        train_block(job, checkpoint=ckpt, progress=False, stop_at=10, identity={"run_id": "a"})
        is None
    )
    assert (
        train_block(job, checkpoint=ckpt, progress=False, identity={"run_id": "b"}).resumed_from
        == 0
    )
