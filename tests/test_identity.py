"""sweep.identity: a job writes only into the store it was launched for, which is the store with
its creation id AND its settings' fingerprint. Hand-made stores (a .zattrs file, no training):
the truth is which of the two differ, set here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweep.identity import StaleWrite, check_identity, fingerprint, identity
from tests.conftest import make_config

pytestmark = pytest.mark.unit


def _store(path: Path, run_id: str, fp: str) -> Path:
    path.mkdir()
    (path / ".zattrs").write_text(json.dumps({"run_id": run_id, "fingerprint": fp}))
    return path


@pytest.mark.parametrize(
    ("run_id", "fp", "refused"),
    [
        ("r1", "f1", False),  # the store the job was launched for
        ("r1", "f2", True),  # its run id, other settings (a hand-launched job)
        ("r2", "f1", True),  # same settings, another creation (an overwrite since)
        ("r2", "f2", True),
    ],
)
def test_a_job_writes_only_where_run_id_and_fingerprint_both_match(tmp_path, run_id, fp,
                                                                   refused):
    path = _store(tmp_path / "s", "r1", "f1")
    job = {"run_id": run_id, "fingerprint": fp}
    if refused:
        with pytest.raises(StaleWrite, match="writes nothing"):
            check_identity(path, job)
    else:
        check_identity(path, job)
    assert identity(path) == {"run_id": "r1", "fingerprint": "f1"}  # read, never changed


def test_a_store_that_is_gone_or_unreadable_refuses_every_job(tmp_path):
    with pytest.raises(StaleWrite):
        check_identity(tmp_path / "missing", {"run_id": "r1", "fingerprint": "f1"})
    path = _store(tmp_path / "s", "r1", "f1")
    (path / ".zattrs").write_text("{")
    with pytest.raises(StaleWrite):
        check_identity(path, {"run_id": "r1", "fingerprint": "f1"})


def test_every_setting_that_changes_training_changes_the_fingerprint():
    base = ["+grid=phase", "train.steps=20"]
    ref = fingerprint(make_config(base))
    for change in ("train.lr=0.01", "train.steps=21", "grid.seeds=3", "model.n_hidden=2",
                   "data.density=0.5", "train.weight_decay=0.0"):
        assert fingerprint(make_config([*base, change])) != ref, change
    # where the store lives and how the run is shown are not what it trained
    assert fingerprint(make_config([*base, "progress=false", "workers=1"])) == ref
