"""The lock (requirements.lock) still satisfies pyproject.toml: every requirement, the dev
extra's included, is pinned there at a version its range admits, with a hash. A range widened
or a dependency added without refreshing the lock fails here (README: refresh command)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def pins(text: str) -> dict[str, tuple[Version, bool]]:
    """name -> (pinned version, has a hash) from a pip-compile lock."""
    out: dict[str, tuple[Version, bool]] = {}
    entries = re.split(r"\n(?=[A-Za-z0-9])", text)
    for entry in entries:
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", entry)
        if m:
            out[canonicalize_name(m[1])] = (Version(m[2]), "--hash=sha256:" in entry)
    return out


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    return [Requirement(r) for r in [*project["dependencies"], *extras.get("dev", [])]]


def unsatisfied(reqs: list[Requirement], locked: dict[str, tuple[Version, bool]]) -> list[str]:
    bad = []
    for req in reqs:
        name = canonicalize_name(req.name)
        if name not in locked:
            bad.append(f"{req} is not in the lock")
            continue
        version, hashed = locked[name]
        if not req.specifier.contains(version, prereleases=True):
            bad.append(f"{req}: the lock pins {version}")
        if not hashed:
            bad.append(f"{req}: no hash in the lock")
    return bad


def test_lock_satisfies_pyproject():
    locked = pins((ROOT / "requirements.lock").read_text())
    assert len(locked) > 50  # the whole resolved tree, not only the direct requirements
    assert unsatisfied(requirements(), locked) == []


def test_the_check_fails_on_a_stale_lock():
    """The check itself can fail: a range the lock misses, a dependency it lacks, no hash."""
    locked = {"numpy": (Version("1.25.0"), True), "scipy": (Version("1.11.0"), False)}
    reqs = [Requirement("numpy>=1.26"), Requirement("scipy>=1.11"), Requirement("zarr>=3")]
    bad = unsatisfied(reqs, locked)
    assert any("numpy" in b and "1.25.0" in b for b in bad)
    assert any("scipy" in b and "hash" in b for b in bad)
    assert any("zarr" in b and "not in the lock" in b for b in bad)
