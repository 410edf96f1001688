"""One source for each default and each threshold (issue 21, item 10).

- Every default of a setting is the schema's (sweep/config.py): the YAML files that compose the
  config (conf/config.yaml, conf/launcher/*.yaml) set no key of the schema. Grid files are
  experiments: they override settings on purpose, and are not walked.
- The numbers the engine and the analysis share (sweep/constants.py) are assigned there and
  nowhere else in sweep/ or analysis/, and no threshold-like module constant is defined twice.
- No code in the engine, the analysis, the API or the Hydra plugins binds a literal default to
  an `analysis:` setting (a parameter default, a dataclass field), nor a literal fallback to any
  schema key (`OmegaConf.select(cfg, "refine.levels", default=0)`): it names the constant.

The keys and names are found from the schema and the constants module, not from a list here,
so a new setting or threshold is covered at once.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sweep import config, constants

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
CODE = ("sweep", "analysis", "toysweep", "hydra_plugins")


def schema_keys(cls: type = config.SweepConfig, prefix: str = "") -> Iterator[str]:
    """Every dotted leaf key of the schema, e.g. 'train.steps'."""
    for f in dataclasses.fields(cls):
        sub = config._resolve(f)
        if sub is not None:
            yield from schema_keys(sub, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name


def yaml_keys(node: object, prefix: str = "") -> Iterator[str]:
    """Every dotted key a YAML mapping sets, leaves and sections alike."""
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}{k}"
            yield key
            yield from yaml_keys(v, key + ".")


def composing_files() -> list[Path]:
    return [ROOT / "conf" / "config.yaml", *sorted((ROOT / "conf" / "launcher").glob("*.yaml"))]


def modules(*tops: str) -> list[Path]:
    return [p for top in tops for p in sorted((ROOT / top).rglob("*.py"))]


def literal(node: ast.AST | None) -> bool:
    """A number, string or bool written out (None is "no value", not a default)."""
    if isinstance(node, ast.UnaryOp):
        node = node.operand
    return isinstance(node, ast.Constant) and node.value is not None


def module_assignments(path: Path) -> Iterator[tuple[str, int]]:
    """(name, line) of each module-level assignment, tuples unpacked."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        for t in targets:
            for e in t.elts if isinstance(t, ast.Tuple) else [t]:
                if isinstance(e, ast.Name):
                    yield e.id, node.lineno


def literal_defaults(
    path: Path, names: set[str], keys: set[str], root: Path = ROOT
) -> Iterator[str]:
    """Where a literal is bound as the default of a name in `names` (parameter, class field,
    also through a field helper `_f(0.5, ...)`) or as the fallback of a schema key string."""
    tree = ast.parse(path.read_text())
    where = path.relative_to(root)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            pos = a.posonlyargs + a.args
            pairs = [
                *zip(pos[len(pos) - len(a.defaults) :], a.defaults, strict=True),
                *zip(a.kwonlyargs, a.kw_defaults, strict=True),
            ]
            for arg, d in pairs:
                if arg.arg in names and literal(d):
                    yield f"{where}:{node.lineno} parameter {arg.arg}={ast.unparse(d)}"
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            v = node.value
            if isinstance(v, ast.Call) and v.args:  # a field helper: its first argument
                v = v.args[0]
            if node.target.id in names and literal(v):
                yield f"{where}:{node.lineno} field {node.target.id}={ast.unparse(v)}"
        elif isinstance(node, ast.Call):
            named = [a.value for a in node.args if isinstance(a, ast.Constant)]
            for kw in node.keywords:
                if kw.arg == "default" and literal(kw.value):
                    for key in set(named) & keys:
                        yield f"{where}:{node.lineno} fallback {key}={ast.unparse(kw.value)}"


def test_the_composing_yaml_sets_no_schema_key():
    keys = set(schema_keys())
    assert len(keys) > 40  # the walk found the schema
    twice = {
        f"{path.relative_to(ROOT)}: {k}"
        for path in composing_files()
        for k in yaml_keys(yaml.safe_load(path.read_text()))
        if k in keys
    }
    assert not twice, f"defaults set in the YAML as well as in sweep/config.py: {sorted(twice)}"


def test_the_yaml_walk_sees_a_default_set_twice(tmp_path):
    """The check above can fail: a YAML that sets train.steps is caught."""
    text = (ROOT / "conf" / "config.yaml").read_text() + "\ntrain:\n  steps: 10000\n"
    found = set(yaml_keys(yaml.safe_load(text))) & set(schema_keys())
    assert found == {"train.steps"}


def test_every_setting_has_its_default_in_the_schema():
    """The composed config holds no value the schema does not declare a default for: a key
    whose default was only in the YAML would be MISSING here."""
    from omegaconf import OmegaConf

    schema = OmegaConf.structured(config.SweepConfig)
    missing = [k for k in schema_keys() if OmegaConf.is_missing(schema, k)]
    assert not missing


def test_constants_are_assigned_only_in_the_constants_module():
    own = {n for n, _ in module_assignments(Path(constants.__file__)) if n.isupper()}
    assert {"NORM_THRESHOLD", "SUPERPOSITION_THRESHOLD", "TIE_TOL"} <= own  # found by the walk
    elsewhere = [
        f"{p.relative_to(ROOT)}:{line} {name}"
        for p in modules("sweep", "analysis")
        if p != Path(constants.__file__)
        for name, line in module_assignments(p)
        if name in own
    ]
    assert not elsewhere, f"defined again outside sweep/constants.py: {elsewhere}"


def test_each_threshold_name_is_defined_once():
    """A grep over sweep/ and analysis/: a module constant named like a threshold or a
    tolerance has one definition."""
    seen: dict[str, list[str]] = defaultdict(list)
    for p in modules("sweep", "analysis"):
        for name, line in module_assignments(p):
            if re.search(r"THRESHOLD|TOL\b|TOL_|ZERO_NORM|RANGE", name.lstrip("_")):
                seen[name.lstrip("_")].append(f"{p.relative_to(ROOT)}:{line}")
    assert "NORM_THRESHOLD" in seen
    twice = {k: v for k, v in seen.items() if len(v) > 1}
    assert not twice, f"thresholds defined more than once: {twice}"


def test_no_literal_default_for_an_analysis_setting_or_a_schema_key():
    analysis_names = {f.name for f in dataclasses.fields(config.AnalysisConfig)}
    keys = set(schema_keys())
    found = [
        hit
        for p in modules(*CODE)
        for hit in literal_defaults(p, analysis_names, keys)
        # the schema itself holds the literal defaults of the settings that have no constant
        if not (p == Path(config.__file__) and " field " in hit)
    ]
    assert not found, f"literal defaults outside sweep/constants.py: {found}"


def test_the_literal_scan_finds_a_copy(tmp_path):
    """The scan above can fail: a copied threshold, a literal fallback are both found."""
    src = tmp_path / "copy.py"
    src.write_text(
        "def classify(W, norm_threshold=0.5):\n    return W\n"
        "class S:\n    aggregate: str = 'drop_worst'\n"
        "x = OmegaConf.select(cfg, 'refine.levels', default=0)\n"
    )
    hits = list(
        literal_defaults(src, {"norm_threshold", "aggregate"}, {"refine.levels"}, root=tmp_path)
    )
    assert [h.split(" ", 1)[1] for h in hits] == [
        "parameter norm_threshold=0.5",
        "field aggregate='drop_worst'",
        "fallback refine.levels=0",
    ]
