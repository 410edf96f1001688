"""From config to SLURM: conf/launcher/slurm.yaml plus command-line overrides reach submitit's
executor as the right parameters, and those become the right #SBATCH lines. No cluster needed:
the executor Hydra's submitit launcher builds is replaced by a recorder."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate

from tests.conftest import CONF

pytestmark = pytest.mark.unit

# One override per launcher setting, each with a value unlike its default.
OVERRIDES = {
    "partition": "gpu-long",
    "timeout_min": 45,
    "mem_gb": 3,
    "cpus_per_task": 5,
    "gpus_per_node": 1,
    "array_parallelism": 7,
    "account": "proj42",
    "qos": "high",
    "max_num_timeout": 6,
    "signal_delay_s": 75,
}


class RecordingExecutor:
    """Stands in for submitit.AutoExecutor: keeps what the launcher passes, submits nothing."""

    made: list[RecordingExecutor] = []

    def __init__(self, folder: str, cluster: str, **kwargs) -> None:
        self.folder, self.cluster, self.init_kwargs = folder, cluster, kwargs
        self.params: dict = {}
        self.calls: list[tuple] = []
        RecordingExecutor.made.append(self)

    def update_parameters(self, **kwargs) -> None:
        self.params.update(kwargs)

    def map_array(self, fn, *args) -> list:
        self.calls = list(zip(*args, strict=True))
        return [_DoneJob() for _ in self.calls]


class _DoneJob:
    def results(self) -> list:
        ret = JobReturn()
        ret.status = JobStatus.COMPLETED
        ret.return_value = None
        return [ret]


@pytest.fixture
def launched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RecordingExecutor:
    """Compose launcher=slurm with OVERRIDES and launch two jobs through the real launcher."""
    import submitit

    monkeypatch.setattr(submitit, "AutoExecutor", RecordingExecutor)
    RecordingExecutor.made = []
    overrides = ["+grid=phase", "launcher=slurm", f"store.path={tmp_path / 'store'}",
                 "hydra.job.name=toysweep"]
    overrides += [f"hydra.launcher.{k}={v}" for k, v in OVERRIDES.items()]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    launcher = instantiate(cfg.hydra.launcher)  # as Hydra's Plugins.instantiate_launcher does
    launcher.setup(hydra_context=None, task_function=lambda c: None, config=cfg)
    returns = launcher.launch([["block=a"], ["block=b"]], initial_job_idx=0)
    assert [r.status for r in returns] == [JobStatus.COMPLETED] * 2
    assert len(RecordingExecutor.made) == 1, "one executor, one job array per launch"
    return RecordingExecutor.made[0]


def test_config_maps_to_executor_parameters(launched: RecordingExecutor, tmp_path: Path) -> None:
    ex = launched
    assert ex.cluster == "slurm"
    assert ex.folder == f"{tmp_path / 'store'}/.jobs/slurm/%j"  # logs: <store>/.jobs/slurm/<id>
    assert ex.init_kwargs == {"slurm_max_num_timeout": OVERRIDES["max_num_timeout"]}
    p = ex.params
    # Settings every submitit executor knows keep their names; SLURM-only ones get slurm_.
    for key in ("timeout_min", "mem_gb", "cpus_per_task", "gpus_per_node"):
        assert p[key] == OVERRIDES[key], key
    for key in ("partition", "array_parallelism", "account", "qos", "signal_delay_s"):
        assert p[f"slurm_{key}"] == OVERRIDES[key], key
    assert "slurm_max_num_timeout" not in p and "submitit_folder" not in p
    assert p["name"] == "toysweep" and p["nodes"] == 1 and p["tasks_per_node"] == 1
    assert [c[0] for c in ex.calls] == [["block=a"], ["block=b"]]  # one array task per block


def test_executor_parameters_become_sbatch_lines(launched: RecordingExecutor,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The recorded parameters, given to submitit's real SLURM executor, make these lines."""
    from submitit.auto.auto import AutoExecutor  # the real class (submitit.AutoExecutor is patched)
    from submitit.slurm.slurm import SlurmExecutor

    # SlurmExecutor refuses to start where `srun` is not on PATH (its affinity() probe); only
    # the submission text is made here, nothing runs, so this test needs no cluster.
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))

    executor = AutoExecutor(folder=launched.folder, cluster="slurm", **launched.init_kwargs)
    executor.update_parameters(**launched.params)
    slurm = executor._executor
    assert slurm.max_num_timeout == OVERRIDES["max_num_timeout"]
    slurm.parameters["map_count"] = 10  # what map_array sets for a ten-task array
    text = slurm._make_submission_file_text("python -m submitit.core._submit", "uid")
    expected = ["--partition=gpu-long", "--time=45", "--mem=3GB", "--cpus-per-task=5",
                "--gpus-per-node=1", "--array=0-9%7", "--account=proj42", "--qos=high",
                "--signal=USR2@75"]
    lines = set(text.splitlines())
    for flag in expected:
        assert f"#SBATCH {flag}" in lines, f"{flag} missing from:\n{text}"


def test_the_sweeper_reports_stale_and_failed_jobs() -> None:
    """A job that wrote nothing because the store was not its run (a stale job) is reported
    as such, not as "no failure reported (its job may have died)"; a failed job by its error."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from hydra_plugins.toysweep.toysweep_sweeper import ToySweeper

    def ret(status: JobStatus, value: object) -> JobReturn:
        r = JobReturn()
        r.status, r._return_value, r.hydra_cfg = status, value, OmegaConf.create({})
        return r

    returns = [
        ret(JobStatus.COMPLETED, {"block": "a", "models": 4}),
        ret(JobStatus.COMPLETED, {"block": "b", "models": 0, "stale": True}),
        ret(JobStatus.FAILED, RuntimeError("boom")),
    ]
    sweeper = ToySweeper.__new__(ToySweeper)
    sweeper.launcher = SimpleNamespace(launch=lambda batch, initial_job_idx: returns)
    said = sweeper._launch(["a", "b", "c"], [[], [], []], 0, None)
    assert sorted(said) == ["b", "c"]
    assert said["b"].startswith("stale job, nothing written")
    assert said["c"].startswith("RuntimeError: boom")
