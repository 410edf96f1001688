"""sweep/validate.py and `sweep.__main__.preflight`: bad settings, the unknown figure, SLURM
without sbatch and store paths no file system holds are refused in one line and exit 2,
before anything is created; the finished store they name is byte-identical afterwards.
(Hostile cases of issue 10, beside the module they attack.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sweep.__main__ import preflight
from tests.conftest import BASE, refused, tree_hash

pytestmark = pytest.mark.hostile

# (override(s), what the one line must contain). Each is tried against the finished store.
SCHEMA = [  # types and choices, from the OmegaConf schema
    ("model.kind=sigmoid", "model.kind='sigmoid'"),
    ("model.kind=RELU", "model.kind='RELU'"),
    ("model.kind=1", "model.kind=1"),
    ("model.n_features=two", "model.n_features='two'"),
    ("model.n_features=2.5", "model.n_features=2.5"),
    ("model.n_hidden=[1]", "model.n_hidden"),
    ("model.n_hidden=null", "model.n_hidden"),
    ("data.density=dense", "data.density='dense'"),
    ("data.correlation=maybe", "data.correlation='maybe'"),
    ("data.set_size=2.5", "data.set_size=2.5"),
    ("data.importance.schedule=cubic", "data.importance.schedule='cubic'"),
    ("data.importance.ratio=[0.5]", "data.importance.ratio"),
    ("data.relative_importance_features=[a]", "data.relative_importance_features"),
    ("data.relative_importance_features=1", "data.relative_importance_features"),
    ("data.density_features=[0.5]", "data.density_features"),
    ("train.steps=ten", "train.steps='ten'"),
    ("train.steps=1e3", "train.steps"),
    ("train.batch_size=true", "train.batch_size"),
    ("train.lr=fast", "train.lr='fast'"),
    ("train.lr_schedule=step", "train.lr_schedule='step'"),
    ("train.dtype=float16", "train.dtype='float16'"),
    ("train.dtype=bfloat16", "train.dtype"),
    ("train.backend=cuda", "train.backend='cuda'"),
    ("train.threads=auto", "train.threads"),
    ("train.checkpoint_seconds=soon", "train.checkpoint_seconds"),
    ("chunk.memory_mb=lots", "chunk.memory_mb='lots'"),
    ("chunk.max_instances=1.5", "chunk.max_instances=1.5"),
    ("store.mode=append", "store.mode='append'"),
    ("store.verify=true", "store.verify"),  # gone in format 2: every run checks every record
    ("retries=x", "retries='x'"),
    ("progress=loud", "progress='loud'"),
    ("analysis.run=perhaps", "analysis.run='perhaps'"),
    ("analysis.aggregate=bogus", "analysis.aggregate='bogus'"),
    ("analysis.aggregate=mean", "analysis.aggregate='mean'"),
    ("analysis.norm_threshold=half", "analysis.norm_threshold='half'"),
    ("analysis.figures=3", "analysis.figures=3"),
]
RANGES = [  # ranges declared in the schema, and extreme values
    ("model.n_features=0", "model.n_features=0"),
    ("model.n_hidden=-1", "model.n_hidden=-1"),
    ("model.n_features=10000000000", "model.n_features"),
    ("data.density=0", "data.density=0"),
    ("data.density=1.5", "data.density=1.5"),
    ("data.density=nan", "data.density=nan"),
    ("data.density=-inf", "data.density=-inf"),
    ("data.importance.value=-1", "data.importance.value=-1"),
    ("data.importance.value=inf", "data.importance.value=inf"),
    ("data.importance.ratio=nan", "data.importance.ratio=nan"),
    ("train.steps=0", "train.steps=0"),
    ("train.steps=-5", "train.steps=-5"),
    ("train.steps=100000000000000", "train.steps"),
    ("train.batch_size=0", "train.batch_size=0"),
    ("train.lr=0", "train.lr=0"),
    ("train.lr=-1e-3", "train.lr=-0.001"),
    ("train.lr=inf", "train.lr=inf"),
    ("train.lr=nan", "train.lr=nan"),
    ("train.weight_decay=-0.1", "train.weight_decay=-0.1"),
    ("train.curve_points=0", "train.curve_points=0"),
    ("train.checkpoint_seconds=0", "train.checkpoint_seconds=0"),
    ("train.threads=-1", "train.threads=-1"),
    ("train.threads=100000", "train.threads"),
    ("chunk.memory_mb=0", "chunk.memory_mb=0"),
    ("chunk.memory_mb=-5", "chunk.memory_mb"),
    ("chunk.memory_mb=0.001", "chunk.memory_mb=0.001"),
    ("chunk.max_instances=0", "chunk.max_instances=0"),
    ("retries=-1", "retries=-1"),
    ("retries=1000000000", "retries"),
    ("analysis.norm_threshold=0", "analysis.norm_threshold=0"),
    ("analysis.norm_threshold=-1", "analysis.norm_threshold=-1"),
    ("analysis.superposition_threshold=10", "analysis.superposition_threshold=10"),
    ("analysis.superposition_threshold=nan", "analysis.superposition_threshold"),
]
RULES = [  # settings that tie several keys together
    ("train.warmup_steps=20", "train.warmup_steps=20"),
    ("train.warmup_steps=-1", "train.warmup_steps=-1"),
    ("data.relative_importance_features=[1,1]", "no duplicates"),
    ("data.relative_importance_features=[5]", "data.relative_importance_features=[5]"),
    # -1 is the last feature (issue 23's dimension grid); -3 lies before the first at n = 2
    ("data.relative_importance_features=[-3]", "data.relative_importance_features=[-3]"),
    ("data.relative_importance_features=[1,-1]", "no duplicates"),
    ("data.density_features=[0,0]", "no duplicates"),
    ("data.density_features=[2]", "data.density_features=[2]"),
    ("data.importance.schedule=exponential data.importance.start=0", "data.importance.start"),
    ("data.correlation=correlated data.set_size=3", "data.set_size=3"),
    ("model.kind=absval data.correlation=correlated", "model.kind='absval'"),
    ("+grid.axes.model=[relu,absval] +grid.axes.correlation=[correlated]", "grid.axes.model"),
    ("train.device=tpu", "train.device='tpu'"),
    ("train.device=cuda:x", "train.device"),
    ("train.device=cuda", "train.device='cuda'"),
    ("train.device=cuda:3", "train.device"),
    ("train.compile=sometimes", "train.compile"),
    ("grid.seeds=0", "grid.seeds=0"),
    ("grid.seeds=-3", "grid.seeds=-3"),
    ("grid.seeds=[1,1]", "grid.seeds=[1, 1]"),
    ("grid.seeds=[]", "grid.seeds=[]"),
    ("grid.seeds=[-1]", "grid.seeds=[-1]"),
    ("grid.seeds=[a]", "grid.seeds"),
    ("grid.seeds=2.5", "grid.seeds=2.5"),
    ("analysis.figures=[a,a]", "analysis.figures"),
]
AXES = [
    ("grid.axes.density=[0.5,1.5]", "grid.axes.density=1.5"),
    ("grid.axes.density=[]", "grid.axes.density='[]'"),
    ("grid.axes.density=[1,1.0]", "distinct values"),
    ("grid.axes.density=[0.5,0.50]", "distinct values"),
    ("grid.axes.density=[a,b]", "grid.axes.density='a'"),
    ("grid.axes.density=[log,0,1,3]", "start, stop > 0"),
    ("grid.axes.density=[log,0.1,1,0]", "grid.axes.density"),
    ("grid.axes.density=[log,0.1,1,2.5]", "grid.axes.density"),
    ("grid.axes.density=[lin,0.1,1]", "grid.axes.density"),
    ("grid.axes.density=[nan]", "grid.axes.density"),
    ("grid.axes.density=0.5", "grid.axes.density"),
    ("grid.axes.relative_importance=[-1.0,2.0]", "grid.axes.relative_importance=-1.0"),
    ("grid.axes.relative_importance=[inf]", "grid.axes.relative_importance=inf"),
    ("+grid.axes.n_hidden=[0,1]", "grid.axes.n_hidden=0"),
    ("+grid.axes.n_hidden=[1.5]", "grid.axes.n_hidden=1.5"),
    ("+grid.axes.n_features=[2,2]", "distinct values"),
    ("+grid.axes.temperature=[1,2]", "grid.axes='temperature'"),
    ("+grid.axes.model=[relu,softmax]", "grid.axes.model='softmax'"),
    ("+grid.axes.correlation=[sometimes]", "grid.axes.correlation='sometimes'"),
]
SIZES = [  # size guards: refused before any memory is taken
    ("grid.seeds=1000000000", "grid.seeds=1000000000"),
    ("grid.axes.density=[log,0.001,1,1000000000]", "at most"),
    ("train.batch_size=50000000", "train.batch_size=50000000"),
    ("model.n_features=1000000 model.n_hidden=1000000", "train.batch_size"),
    (
        "grid.axes.density=[log,0.001,1,5000] grid.axes.relative_importance=[log,0.1,10,5000]",
        "models in one store",
    ),
]
GRAMMAR = [  # Hydra's override grammar
    ("train.steps=[1,2", "cannot parse"),
    ("train.steps=", "train.steps"),
    ("no_such_key=1", "no_such_key"),
    ("train.no_such=1", "no_such"),
    ("launcher=pbs", "launcher/pbs"),
    ("train.steps=${nope}", "nope"),
    ("~model", "model"),
    ("train=5", "train"),
    ("=5", "no key"),
    ("train.steps=1,2", "train.steps"),
    ("train.steps={a:1}", "train.steps"),
    ("name=${name}", "name"),
    ("train.steps=${train.lr}", "train.steps"),
    ("hydra.mode=SOMETIMES", "hydra.mode"),
]
CASES = SCHEMA + RANGES + RULES + AXES + SIZES + GRAMMAR


@pytest.mark.parametrize(("override", "expected"), CASES, ids=[c[0] for c in CASES])
def test_hostile_setting_one_line_store_untouched(finished, override, expected, capsys):
    before = tree_hash(finished)
    line = refused([*BASE, *override.split(), f"store.path={finished}"], capsys)
    assert expected in line, line
    assert tree_hash(finished) == before


def test_unknown_figure_is_refused_by_the_analysis_callback(finished, capsys):
    from analysis.callback import AnalysisCallback

    cfg = preflight([*BASE, "analysis.figures=[no_such_figure]", f"store.path={finished}"])
    with pytest.raises(SystemExit) as exc:
        AnalysisCallback().on_multirun_start(cfg)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and "no_such_figure" in line


def test_slurm_without_sbatch_refused(finished, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, sacct on PATH
    before = tree_hash(finished)
    line = refused([*BASE, "launcher=slurm", f"store.path={finished}"], capsys)
    assert "launcher='slurm'" in line and "sbatch" in line
    assert tree_hash(finished) == before



@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/", "expected a folder below a directory other than the file system's root /"),
        ("/toysweep-run", "expected a folder below a directory other than"),
        ("''", "store.path='' is not allowed: expected a path to a folder"),
        ("' '", "expected a path to a folder"),
        (f"/tmp/{'x' * 240}", "a name of 240 bytes in it, expected at most 233"),
        (f"/tmp/{'y' * 300}/s", "a name of 300 bytes in it, expected at most 255"),
    ],
)
def test_store_path_at_the_root_empty_or_too_long_refused(given, expected, tmp_path, capsys):
    """No store (and so none of its lock files) in the file system's root, unnamed, or with a
    name its file system cannot hold; checked before anything is created, in the root, in the
    working folder or in /tmp."""
    root = sorted(p.name for p in Path("/").iterdir())
    tmp = sorted(p.name for p in Path("/tmp").iterdir() if "xxxx" in p.name or "yyyy" in p.name)
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        line = refused([*BASE, f"store.path={given}"], capsys)
    finally:
        os.chdir(cwd)
    assert expected in line, line
    assert sorted(p.name for p in Path("/").iterdir()) == root
    assert list(tmp_path.iterdir()) == []
    assert tmp == sorted(
        p.name for p in Path("/tmp").iterdir() if "xxxx" in p.name or "yyyy" in p.name
    )
